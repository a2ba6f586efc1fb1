"""`make bench-train`: time and peak memory of `make train` reading the event archive, for
archives of growing size, to show that training memory is bounded by what it keeps (samples,
user vectors), not by the size of the history.

For each size: a database of its own gets an archive of that many generated events (inserted
with COPY, in chunks of generated users, so the loader stays small too); then `python -m
models.train --source archive` runs in a process of its own with its models in a temporary
folder. Its wall time and the peak resident memory of its process tree (training fits models in
worker processes) are sampled. Results: `bench/results/train-<run>.json`, with the commit and
the configuration."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

from bench.measure import tree_rss
from bench.run import run_record
from conf import settings as settings_module
from conf import stack
from conf.settings import Settings
from models.generator import EventGenerator
from udfs.events import Event, EventParser, SourceRef

RESULTS = Path(__file__).with_name("results")
CHUNK_USERS = 150


def archive_config(config: Settings, events: int) -> Settings:
    p = config.postgres.parts
    dsn = f"postgresql://{p['user']}@{p['host']}:{p['port']}/behavior_bench_train_{events}"
    return config.model_copy(update={"postgres": config.postgres.model_copy(update={"dsn": dsn})})


def archived_count(config: Settings) -> int | None:
    try:
        with psycopg.connect(config.postgres.conninfo()) as conn:
            return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    except psycopg.OperationalError:
        return None  # no such database yet


def fill_archive(config: Settings, events: int, days: float, seed: int) -> dict:
    """Generated events into the archive of a fresh database until it holds `events`."""
    admin = config.postgres.conninfo(config.postgres.admin_database)
    with psycopg.connect(admin, autocommit=True) as conn:
        name = config.postgres.parts["dbname"]
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    stack.ensure_database(config)
    stack.apply_migrations(config)
    g = config.generator
    end = g.start_ts_ms + int(days * 86_400_000)
    parser = EventParser(
        config.events.max_bytes,
        config.events.min_ts_ms,
        config.events.max_future_skew_ms,
        now_ms=lambda: end,
    )
    generator = g.model_copy(update={"invalid_rate": 0.0, "late_rate": 0.0})
    written, users, chunk = 0, 0, 0
    with psycopg.connect(config.postgres.conninfo()) as conn:
        while written < events:
            history = EventGenerator(generator, CHUNK_USERS, days, seed + chunk).generate()
            with conn.cursor().copy(
                "COPY events (event_id, user_id, session_id, type, ts_ms, schema_version,"
                " properties, source_topic, source_partition, source_offset) FROM STDIN"
            ) as copy:
                for document in history.events:
                    document = {
                        **document,
                        "event_id": f"c{chunk}-{document['event_id']}",
                        "user_id": f"c{chunk}-{document['user_id']}",
                    }
                    parsed = parser.parse(json.dumps(document).encode(), SourceRef("bench", 0, 0))
                    if not isinstance(parsed, Event):
                        continue
                    copy.write_row(
                        (
                            parsed.event_id,
                            parsed.user_id,
                            parsed.session_id,
                            parsed.type.value,
                            parsed.ts,
                            parsed.schema_version,
                            json.dumps(parsed.properties()),
                            "bench",
                            0,
                            written,
                        )
                    )
                    written += 1
                    if written == events:
                        break
            conn.commit()
            users += CHUNK_USERS
            chunk += 1
            print(f"[bench-train] archive: {written:,} of {events:,} events", file=sys.stderr)
        conn.execute("ANALYZE events")
    return {"events": written, "users": users, "days": days}


def measure_training(config: Settings, log: Path, max_samples: int) -> dict:
    """`make train` from the archive in its own process; wall time and peak tree memory."""
    folder = tempfile.mkdtemp(prefix="bench-train-")
    env = {**os.environ, "POSTGRES_DSN": config.postgres.dsn}
    command = [
        *(sys.executable, "-m", "models.train", "--source", "archive", "--no-postgres"),
        *("--directory", folder, "--outcomes", "/nonexistent"),
        *("--max-samples", str(max_samples)),
    ]
    began = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    watched, peak, stop = psutil.Process(process.pid), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            try:
                peak[0] = max(peak[0], tree_rss(watched))
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    stop.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"training failed ({code}): see {log}")
    report = json.loads(next(Path(folder, "reports").glob("v*/report.json")).read_text())
    return {
        "seconds": round(time.monotonic() - began, 1),
        "peak_tree_rss_mb": round(peak[0] / 2**20, 1),
        "peak_main_rss_mb": report["training"]["peak_memory_mb"],
        "samples_seen": report["training"]["samples_seen"],
        "samples_kept": report["training"]["samples"],
        "users": report["training"]["users"],
        "roc_auc": {t: e.get("model", {}).get("roc_auc") for t, e in report["propensity"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__)
    parser.add_argument("--events", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--days", type=float, default=42.0)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument(
        "--max-samples", type=int, help="samples training keeps (default: models.max_samples)"
    )
    parser.add_argument(
        "--reuse-archive", action="store_true", help="keep an archive of that size already made"
    )
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    max_samples = args.max_samples or config.models.max_samples
    stack.up(config)
    run = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    sizes = []
    for events in args.events:
        own = archive_config(config, events)
        if args.reuse_archive and archived_count(own) == events:
            archive = {"events": events, "reused": True}
        else:
            archive = fill_archive(own, events, args.days, args.seed)
        print(f"[bench-train] training on {events:,} archived events", file=sys.stderr)
        log = RESULTS / f"train-{run}-{events}.log"
        result = measure_training(own, log, max_samples)
        sizes.append({"archive": archive, **result})
        print(f"[bench-train] {events:,} events: {json.dumps(result)}", file=sys.stderr)
    output = {**run_record(run, args, config), "schema": "bench-train/1", "sizes": sizes}
    path = RESULTS / f"train-{run}.json"
    path.write_text(json.dumps(output, indent=2))
    print(f"[bench-train] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
