"""The benchmark's fixed workload: generated events for a number of users, cut to a number of
events, in emission order, kept as JSON lines under `.local/bench/` so runs with the same
parameters reuse it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from conf.settings import Settings
from jobs.publish import Publisher, PublishReport
from models.generator import EventGenerator

# The generator's users produce about this many events per user and day.
EVENTS_PER_USER_DAY = 12.0


def workload_file(config: Settings, users: int, events: int, seed: int) -> Path:
    path = Path(config.local.state_dir) / "bench" / f"workload-{users}u-{events}e-{seed}.jsonl"
    if path.exists():
        return path
    days = max(events / users / EVENTS_PER_USER_DAY * 1.2, 0.05)
    print(
        f"[bench] generating {events:,} events for {users:,} users ({days:.2f} days)",
        file=sys.stderr,
    )
    started = time.monotonic()
    history = EventGenerator(config.generator, users=users, days=days, seed=seed).generate()
    if len(history.events) < events:
        raise SystemExit(
            f"the generator gave {len(history.events):,} events, fewer than {events:,}:"
            " ask for more users"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("w") as out:
        for event in history.events[:events]:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    partial.rename(path)
    print(
        f"[bench] workload written in {time.monotonic() - started:.0f} s: {path}", file=sys.stderr
    )
    return path


def read_workload(path: Path) -> list[tuple[str, bytes]]:
    """(user key, raw record) in emission order."""
    records = []
    with path.open("rb") as f:
        for line in f:
            raw = line.rstrip(b"\n")
            records.append((json.loads(raw)["user_id"], raw))
    return records


def publish_workload(
    config: Settings, records: list[tuple[str, bytes]], topic: str, partitions: int, rate=0.0
) -> PublishReport:
    publisher = Publisher(
        config.kafka.bootstrap_servers,
        topic,
        partitions,
        rate=rate,
        progress_every=250_000,
        label="bench publish",
    )
    for key, raw in records:
        publisher.send(key, raw)
    return publisher.close()
