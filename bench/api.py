"""`make bench-api`: the read path of the REST API (jobs/api.py) under load: requests per second
and p50/p99 latency of a profile read at a stated concurrency, against the same reads made
straight from PostgreSQL through a pool of the same size in the same invocation (the baseline:
what the database alone gives, so the figure is a ratio that a busy machine shifts less).

A database of its own gets the profiles the job's per-user pipeline makes of generated users;
the server runs as `make serve` does (one uvicorn process) in a process of its own; the load is
`--concurrency` requests in flight from one asyncio client for `--seconds`, after a warm-up,
each for a user drawn at random. Results: `bench/results/api-<run>.json`, with the commit and
the configuration. Client, server and database share the machine's cores."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import yaml
from psycopg_pool import ConnectionPool

from bench.in_memory import InMemoryPipeline
from bench.run import run_record
from conf import settings as settings_module
from conf import stack
from conf.settings import Settings
from jobs.control import scoring_settings
from jobs.progress import Progress
from models.generator import EventGenerator
from udfs import outputs
from udfs.events import SourceRef
from udfs.pseudonyms import configured_subject

RESULTS = Path(__file__).with_name("results")
DATABASE = "behavior_bench_api"
KEY = "bench-key-0123456789abcdef"


def bench_config(config: Settings) -> Settings:
    p = config.postgres.parts
    dsn = f"postgresql://{p['user']}@{p['host']}:{p['port']}/{DATABASE}"
    return config.model_copy(update={"postgres": config.postgres.model_copy(update={"dsn": dsn})})


def fill_profiles(config: Settings, users: int, days: float, seed: int) -> list[str]:
    """A fresh database with the latest profile of each generated user, as the job writes it;
    returns the ids of the users with one."""
    admin = config.postgres.conninfo(config.postgres.admin_database)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    stack.ensure_database(config)
    stack.apply_migrations(config)
    history = EventGenerator(config.generator, users=users, days=days, seed=seed).generate()
    scoring = scoring_settings(config)
    pipeline = InMemoryPipeline(config, 1, scoring, control=[])
    latest: dict[str, tuple] = {}
    with Progress("[bench api] profiling", len(history.events), "events") as progress:
        for offset, event in enumerate(history.events):
            raw = json.dumps(event).encode()
            out = pipeline.process(raw, SourceRef("events", 0, offset), event["user_id"])
            for emitted in out:
                if emitted.output is outputs.PROFILES and not emitted.delete:
                    latest[emitted.values[0]] = emitted.values
            progress.update()
    columns = ", ".join(outputs.PROFILES.names)
    with (
        psycopg.connect(config.postgres.conninfo()) as conn,
        conn.cursor().copy(f"COPY user_profiles ({columns}) FROM STDIN") as copy,
    ):
        for values in latest.values():
            copy.write_row(values)
    # Users whose consent refuses analytics have no profile: only those with one are read.
    subject = configured_subject(config.privacy)
    return sorted(u.user_id for u in history.users if subject(u.user_id) in latest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(config: Settings, folder: Path) -> tuple[subprocess.Popen, str]:
    """The API in a process of its own, as `make serve` runs it; returns it and its address."""
    port = free_port()
    served = config.model_copy(update={"api": config.api.model_copy(update={"port": port})})
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(served.model_dump(mode="json")))
    env = {**os.environ, "BEHAVIOR_CONFIG": str(config_file), "BEHAVIOR_API_KEYS": KEY}
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.api"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"[bench api] the server did not start; its output: {log.name}")
        time.sleep(0.2)


def summary(latencies_s: list[float], seconds: float, errors: int) -> dict:
    ordered = sorted(latencies_s)
    quantiles = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "requests": len(ordered),
        "errors": errors,
        "per_second": round(len(ordered) / seconds, 1),
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
    }


async def load(base: str, users: list[str], concurrency: int, seconds: float, warmup: float):
    """`concurrency` readers of random users' profiles: latencies after the warm-up."""
    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        started = time.perf_counter()
        measured_from, end = started + warmup, started + warmup + seconds

        async def reader() -> None:
            nonlocal errors
            while (now := time.perf_counter()) < end:
                response = await client.get(f"/v1/users/{rng.choice(users)}/profile")
                done = time.perf_counter()
                if now >= measured_from:
                    if response.status_code == 200:
                        latencies.append(done - now)
                    else:
                        errors += 1

        await asyncio.gather(*(reader() for _ in range(concurrency)))
    return summary(latencies, seconds, errors)


def baseline(config: Settings, subjects: list[str], concurrency: int, seconds: float, warmup):
    """The same reads straight from PostgreSQL: `concurrency` threads on a pool as large as
    the server's."""
    pool = ConnectionPool(
        config.postgres.conninfo(), min_size=config.api.pool_max, max_size=config.api.pool_max
    )
    pool.wait()
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    started = time.perf_counter()
    measured_from, end = started + warmup, started + warmup + seconds

    def reader(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        mine, missing = [], 0
        while (now := time.perf_counter()) < end:
            with pool.connection() as conn:
                row = conn.execute(
                    "SELECT * FROM user_profiles WHERE user_id = %s", (rng.choice(subjects),)
                ).fetchone()
            done = time.perf_counter()
            if now >= measured_from:
                if row is None:
                    missing += 1
                else:
                    mine.append(done - now)
        with lock:
            latencies.extend(mine)
            errors += missing

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()
    return summary(latencies, seconds, errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args(argv)
    config = bench_config(settings_module.load_or_exit())
    users = fill_profiles(config, args.users, args.days, seed=11)
    subject = configured_subject(config.privacy)
    subjects = [subject(u) for u in users]
    run = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    record = run_record(run, args, config)
    print(f"[bench api] {len(users):,} users; {args.concurrency} in flight for {args.seconds:g} s")
    with tempfile.TemporaryDirectory() as folder:
        process, base = serve(config, Path(folder))
        try:
            api = asyncio.run(load(base, users, args.concurrency, args.seconds, args.warmup))
        finally:
            process.terminate()
            process.wait(30)
    direct = baseline(config, subjects, args.concurrency, args.seconds, args.warmup)
    record["api"], record["postgres_direct"] = api, direct
    record["ratio"] = {
        "per_second": round(api["per_second"] / direct["per_second"], 3),
        "p50": round(api["p50_ms"] / direct["p50_ms"], 2),
        "p99": round(api["p99_ms"] / direct["p99_ms"], 2),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"api-{run}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    for name, r in (("API (HTTP, uvicorn)", api), ("PostgreSQL direct", direct)):
        print(
            f"  {name:<22}{r['per_second']:>9,.0f} req/s   p50 {r['p50_ms']:>7.2f} ms"
            f"   p99 {r['p99_ms']:>7.2f} ms   errors {r['errors']}"
        )
    print(f"  API / direct: {record['ratio']}  written: {path}")
    return 0 if api["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
