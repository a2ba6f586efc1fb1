"""`make bench`: the profile job (profile + scoring + decisions, Kafka in, Kafka and PostgreSQL
out) against a plain-Python baseline and a Quix Streams peer on the same workload in the same
run, with the cost of the per-event logic alone as the ceiling.

Every contender reads the same input topic from the start in a process of its own; its
throughput is how fast its consumer group commits through the input, from its first commit to
the end (start-up excluded), its memory the peak resident size of its process tree. Flink's
checkpoints (duration, size, state per user) come from its log. Latency is measured on a second,
paced run of the job at half its measured rate: from an event's arrival at the broker to the
score record it causes (Kafka timestamps of both). Results: `bench/results/<run>.json` and
`.png`. Every JSON has the same schema (RESULT_SCHEMA): the commit it ran (and whether the
working tree had changes), the machine, the command-line arguments, the full configuration,
then the figures. The folder is ignored by git: keep only the runs the docs quote."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pyflink
import yaml
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from bench.in_memory import InMemoryPipeline
from bench.measure import Run, checkpoints, run_measured, task_managers
from bench.workload import WORKLOADS, publish_workload, read_workload, workload_file
from conf import settings as settings_module
from conf import stack
from conf.settings import OUTPUT_TOPICS, Settings, redact_secrets
from jobs import runtime
from jobs.publish import iter_topic
from udfs.events import SourceRef

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
BENCH_DATABASE = "behavior_bench"
RESULT_SCHEMA = 1
COLOURS = ["#999999", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def bench_settings(config: Settings, tag: str) -> Settings:
    """Topics and groups of this run's own, and the benchmark's database."""
    p = config.postgres.parts
    dsn = f"postgresql://{p['user']}@{p['host']}:{p['port']}/{BENCH_DATABASE}"
    postgres = config.postgres.model_copy(update={"dsn": dsn})
    own = config.with_own_topics(f"bench-{tag}", ("events", *OUTPUT_TOPICS))
    return own.model_copy(update={"postgres": postgres})


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_record(tag: str, args: argparse.Namespace, config: Settings) -> dict:
    """What a result says about how it was made, before any figure: schema, commit, machine,
    arguments and the whole configuration (secrets redacted)."""
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "schema": RESULT_SCHEMA,
        "run": tag,
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(status) if status is not None else None,
        "machine": machine(),
        "args": vars(args),
        "config": json.loads(redact_secrets(json.dumps(config.model_dump(mode="json")))),
    }


def fresh_database(config: Settings) -> None:
    admin = config.postgres.conninfo(config.postgres.admin_database)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
    stack.ensure_database(config)
    stack.apply_migrations(config)


def ceiling(config: Settings, records: list[tuple[str, bytes]]) -> dict:
    """The per-user pipeline alone, one core, no Kafka, no Flink."""
    pipeline = InMemoryPipeline(config)
    started = time.perf_counter()
    outputs = 0
    for offset, (key, raw) in enumerate(records):
        outputs += len(pipeline.process(raw, SourceRef("ceiling", 0, offset), key))
    seconds = time.perf_counter() - started
    return {
        "events": len(records),
        "seconds": round(seconds, 2),
        "events_per_s": round(len(records) / seconds),
        "outputs": outputs,
    }


def offset_args(start, stop) -> list[str]:
    """The profile job's command-line bounds: from `start`, to `stop` unless it is None."""
    args = ["--start-offsets", runtime.format_offsets(start)]
    if stop is not None:
        args += ["--stop-offsets", runtime.format_offsets(stop)]
    return args


def flink_command(start, stop) -> list[str]:
    return [sys.executable, "-m", "jobs.profile", *offset_args(start, stop)]


def cluster_settings(config: Settings, slots: int, work_dir: Path) -> Settings:
    """The job on a standalone cluster of one task manager with `slots` slots, at parallelism
    `slots`, with output topics, consumer group and cluster files of its own."""
    own = config.with_own_topics(f"cluster{slots}")
    flink = own.flink.model_copy(update={"parallelism": slots, "task_slots": slots})
    local = own.local.model_copy(update={"state_dir": str(work_dir / f"cluster-{slots}")})
    return own.model_copy(update={"flink": flink, "local": local})


def cluster_contender(config: Settings, config_file: Path, start, stop) -> tuple:
    """(command, environment, consumer group, output topic): `make submit` of the profile job."""
    env = {**os.environ, "BEHAVIOR_CONFIG": str(config_file), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "conf.stack", "submit", "profile", *offset_args(start, stop)]
    group = f"{config.kafka.consumer_group}-profile"
    return command, env, group, config.kafka.topics.scores.name


def flink_log() -> Path:
    logs = sorted(
        (Path(pyflink.__file__).parent / "log").glob("flink-*-python-*.log"), key=os.path.getmtime
    )
    return logs[-1]


def contenders(config: Settings, config_file: Path, start, stop, skip: set[str]) -> dict:
    """name -> (command, environment, consumer group, output topic) of each contender."""
    env = {**os.environ, "BEHAVIOR_CONFIG": str(config_file), "PYTHONPATH": str(ROOT)}
    topic = config.kafka.topics.events
    group = config.kafka.consumer_group
    scores = config.kafka.topics.scores.name
    peer_args = ["--topic", topic.name]
    found = {
        "flink": (flink_command(start, stop), env, f"{group}-profile", scores),
        "baseline": (
            [
                sys.executable,
                "-m",
                "bench.baseline",
                *peer_args,
                "--output",
                f"{scores}-baseline",
                "--group",
                f"{group}-baseline",
                "--start-offsets",
                runtime.format_offsets(start),
                "--stop-offsets",
                runtime.format_offsets(stop),
            ],
            env,
            f"{group}-baseline",
            f"{scores}-baseline",
        ),
        "quix": (
            [
                str(PEER_PYTHON),
                "-m",
                "bench.quix_peer",
                *peer_args,
                "--group",
                f"{group}-quix",
                "--partitions",
                str(topic.partitions),
                "--output",
                f"{scores}-quix",
            ],
            env,
            f"{group}-quix",
            f"{scores}-quix",
        ),
    }
    if "quix" not in skip and not PEER_PYTHON.exists():
        raise SystemExit(f"{PEER_PYTHON} is missing: `make bench` creates it")
    return {name: c for name, c in found.items() if name not in skip}


def latency_run(config: Settings, config_file: Path, records, rate: float, work_dir: Path) -> dict:
    """The job running unbounded while events arrive at `rate`; arrival-to-score latency."""
    paced = config.with_own_topics("paced", ("events", *OUTPUT_TOPICS))
    topic = paced.kafka.topics.events
    stack.ensure_topics(paced)
    paced_file = work_dir / "paced.yaml"
    paced_file.write_text(yaml.safe_dump(paced.model_dump(mode="json")))
    env = {**os.environ, "BEHAVIOR_CONFIG": str(paced_file), "PYTHONPATH": str(ROOT)}
    start = {p: 0 for p in range(topic.partitions)}
    with (work_dir / "flink-paced.log").open("w") as log:
        job = subprocess.Popen(
            flink_command(start, None), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        time.sleep(25)  # the job's start-up, before the first event arrives
        say(f"latency: publishing {len(records):,} events at {rate:,.0f}/s")
        batch = publish_workload(paced, records, topic.name, topic.partitions, rate=rate)
        deadline = time.monotonic() + 300
        while (
            runtime.stop_offsets_ahead(paced, "profile", batch.end_offsets)
            and time.monotonic() < deadline
        ):
            time.sleep(1)
    finally:
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(timeout=180)
        except subprocess.TimeoutExpired:
            job.kill()
    arrived = {json.loads(r.value)["event_id"]: r.timestamp for r in read_all(paced, topic.name)}
    scores = paced.kafka.topics.scores
    scored: dict[str, int] = {}  # event id -> its first score record's timestamp
    for r in read_all(paced, scores.name):
        event_id = (json.loads(r.value) if r.value else {}).get("event_id")
        if event_id in arrived:
            scored[event_id] = min(scored.get(event_id, r.timestamp), r.timestamp)
    latencies = [ts - arrived[event_id] for event_id, ts in scored.items()]
    if not latencies:
        return {"events": len(records), "rate": round(rate), "matched": 0}
    q = statistics.quantiles(latencies, n=100)
    return {
        "events": len(records),
        "rate": round(rate),
        "matched": len(latencies),
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "max_ms": max(latencies),
    }


def read_all(config: Settings, topic: str):
    """Every record of a topic, aborted ones included: the embedded broker shows them anyway,
    and holds committed ones back from read_committed readers while a job runs."""
    return iter_topic(config.kafka.bootstrap_servers, topic, "read_uncommitted", idle_timeout_s=8)


def plot(result: dict, runs: dict[str, Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, progress) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["ceiling", *runs]
    rates = [result["ceiling"]["events_per_s"], *(r.sustained_rate() for r in runs.values())]
    bars.bar(names, rates, color=COLOURS[: len(names)])
    for i, rate in enumerate(rates):
        bars.text(i, rate, f"{rate:,.0f}", ha="center", va="bottom")
    bars.set_ylabel("events/s (sustained)")
    w = result["workload"]
    bars.set_title(
        f"{w['events']:,} events, {w['users']:,} users, {result['machine']['cores']} cores"
    )
    for name, run in runs.items():
        progress.plot([s.t for s in run.samples], [s.consumed for s in run.samples], label=name)
    progress.set_xlabel("seconds since start")
    progress.set_ylabel("input events committed")
    progress.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--ceiling-events", type=int, default=200_000, help="events for the ceiling (in memory)"
    )
    parser.add_argument(
        "--latency-events", type=int, default=200_000, help="events of the paced run; 0: none"
    )
    parser.add_argument(
        "--skip", default="", help="comma list of contenders to leave out: flink,baseline,quix"
    )
    parser.add_argument(
        "--cluster-slots",
        default="1,2",
        help="slot counts of the scaling runs on a standalone cluster (process mode); '': none",
    )
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per contender")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma list of workloads, each run in full: default (returning users), new-users"
        " (most users with 1-3 events); the scaling run is on the first",
    )
    args = parser.parse_args(argv)
    kinds = [k for k in args.workloads.split(",") if k]
    if unknown := set(kinds) - set(WORKLOADS):
        raise SystemExit(f"unknown workloads {sorted(unknown)}: choose from {WORKLOADS}")
    base = settings_module.load_or_exit()
    stack.up(base)
    started = time.strftime("%Y%m%d-%H%M%S")
    for i, kind in enumerate(kinds):
        run_workload(base, args, kind, f"{started}-{kind}", scaling=i == 0)
    return 0


def run_workload(base: Settings, args, kind: str, tag: str, scaling: bool) -> None:
    """Every contender over one workload; results in bench/results/<tag>.json and .png."""
    skip = {s for s in args.skip.split(",") if s}
    config = bench_settings(base, tag)
    work_dir = Path(base.local.state_dir).resolve() / "bench" / tag
    work_dir.mkdir(parents=True, exist_ok=True)
    config_file = work_dir / "settings.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    fresh_database(config)
    stack.ensure_topics(config)
    scores = config.kafka.topics.scores
    peer_outputs = [f"{scores.name}-{peer}" for peer in ("baseline", "quix")]
    admin = KafkaAdminClient(bootstrap_servers=config.kafka.bootstrap_servers)
    admin.create_topics([NewTopic(name, scores.partitions, 1) for name in peer_outputs])
    admin.close()

    say(f"workload {kind}")
    records = read_workload(workload_file(base, args.users, args.events, args.seed, kind))
    say(
        f"ceiling: the per-event logic alone over {min(args.ceiling_events, len(records)):,} events"
    )
    result = run_record(tag, args, config)
    if result["uncommitted_changes"]:
        say("the working tree has uncommitted changes: this run's commit does not reproduce it")
    result |= {
        "workload": {
            "kind": kind,
            "users": len({key for key, _ in records}),
            "events": len(records),
            "seed": args.seed,
        },
        "ceiling": ceiling(config, records[: args.ceiling_events]),
        "contenders": {},
        "ratios": {},
        "latency": None,
    }
    say(f"ceiling: {result['ceiling']['events_per_s']:,} events/s")
    topic = config.kafka.topics.events
    batch = publish_workload(config, records, topic.name, topic.partitions)
    start, stop = batch.bounds()

    def measure(name, command, env, group, output, memory_of=None) -> Run:
        """One contender over the published workload, its log in the run's folder."""
        return run_measured(
            name,
            command,
            env,
            config.kafka.bootstrap_servers,
            group,
            start,
            topic.name,
            output,
            len(records),
            args.timeout_s,
            work_dir / f"{name}.log",
            memory_of,
        )

    runs: dict[str, Run] = {}
    for name, (command, env, group, output) in contenders(
        config, config_file, start, stop, skip
    ).items():
        say(f"{name}: running over {len(records):,} events")
        run = measure(name, command, env, group, output)
        runs[name] = run
        result["contenders"][name] = run.summary()
        if name == "flink":
            cp = checkpoints(flink_log())
            users = result["workload"]["users"]
            cp["state_bytes_per_user"] = round(cp.get("size_bytes_max", 0) / users)
            result["contenders"][name]["checkpoints"] = cp
        peak_mb = run.peak_rss_bytes / 2**20
        say(f"{name}: {run.sustained_rate():,.0f} events/s, peak {peak_mb:,.0f} MB")

    slot_counts = [int(n) for n in args.cluster_slots.split(",") if n] if scaling else []
    if slot_counts and stack.cluster_answers(base):
        say("scaling runs skipped: a Flink cluster already runs here (`make cluster-down` first)")
        slot_counts = []
    for slots in slot_counts:
        name = f"cluster-{slots}"
        scaled = cluster_settings(config, slots, work_dir)
        scaled_file = work_dir / f"{name}.yaml"
        scaled_file.write_text(yaml.safe_dump(scaled.model_dump(mode="json")))
        stack.ensure_topics(scaled)
        say(f"{name}: {stack.cluster_up(scaled)}")
        try:
            command, env, group, output = cluster_contender(scaled, scaled_file, start, stop)
            say(f"{name}: running over {len(records):,} events at parallelism {slots}")
            run = measure(name, command, env, group, output, memory_of=task_managers)
        finally:
            stack.cluster_down(scaled)
        runs[name] = run
        result["contenders"][name] = run.summary() | {"slots": slots}
        peak_mb = run.peak_rss_bytes / 2**20
        say(f"{name}: {run.sustained_rate():,.0f} events/s, task manager peak {peak_mb:,.0f} MB")

    baseline = runs.get("baseline")
    ratios = {}
    for name, run in runs.items():
        if baseline is not None and name != "baseline":
            ratios[f"{name}/baseline"] = round(run.sustained_rate() / baseline.sustained_rate(), 2)
        ratios[f"{name}/ceiling"] = round(
            run.sustained_rate() / result["ceiling"]["events_per_s"], 2
        )
    if len(slot_counts) > 1:
        first, last = (f"cluster-{n}" for n in (slot_counts[0], slot_counts[-1]))
        ratios[f"{last}/{first}"] = round(
            runs[last].sustained_rate() / runs[first].sustained_rate(), 2
        )
    result["ratios"] = ratios
    if "flink" in runs and args.latency_events:
        rate = runs["flink"].sustained_rate() / 2
        result["latency"] = latency_run(
            config, config_file, records[: args.latency_events], rate, work_dir
        )
        say(f"latency at {rate:,.0f} events/s: {result['latency']}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{tag}.json"
    json_path.write_text(json.dumps(result, indent=2))
    plot(result, runs, RESULTS / f"{tag}.png")
    for name, value in ratios.items():
        say(f"{name}: {value}")
    say(f"results: {json_path} and {json_path.with_suffix('.png')}")


if __name__ == "__main__":
    raise SystemExit(main())
