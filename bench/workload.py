"""The benchmark's fixed workloads, kept as JSON lines under `.local/bench/` so runs with the same
parameters reuse them:

- `default`: generated events for a number of users, cut to a number of events, in emission
  order (returning users with many sessions);
- `new-users`: as a real shop's purchase log looks, mostly users seen once or twice: each
  generated user keeps only their first 1 to 3 behavioural events (60% one, 25% two, 10%
  three) or, one in twenty, their first 20 (and their consent updates)."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from conf.settings import Settings
from jobs.publish import Publisher, PublishReport
from models.generator import EventGenerator

# The generator's users produce about this many events per user and day.
EVENTS_PER_USER_DAY = 12.0


WORKLOADS = ("default", "new-users")
# new-users: how many first events a user keeps, and how often.
KEPT_EVENTS = ((1, 0.60), (2, 0.25), (3, 0.10), (20, 0.05))


def workload_file(
    config: Settings, users: int, events: int, seed: int, kind: str = "default"
) -> Path:
    name = f"workload-{users}u-{events}e-{seed}.jsonl"
    if kind != "default":
        name = f"workload-{kind}-{users}u-{events}e-{seed}.jsonl"
    path = Path(config.local.state_dir) / "bench" / name
    if path.exists():
        return path
    if kind == "new-users":
        # Kept events average about 2.1 per user (if they have that many): enough users.
        mean_kept = sum(n * share for n, share in KEPT_EVENTS)
        users = max(users, int(events / mean_kept * 2))  # some users have fewer events
    days = max(events / users / EVENTS_PER_USER_DAY * 1.2, 0.05)
    if kind == "new-users":
        days = max(days, 1.0)  # a day at least, so that most users have 20 events to keep
    print(
        f"[bench] generating {events:,} events for {users:,} users ({days:.2f} days)",
        file=sys.stderr,
    )
    started = time.monotonic()
    history = EventGenerator(config.generator, users=users, days=days, seed=seed).generate()
    if kind == "new-users":
        history.events = first_events_only(history.events, seed)
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


def first_events_only(events: list[dict], seed: int) -> list[dict]:
    """Each user's first few behavioural events (KEPT_EVENTS), drawn with `seed`, and their
    consent updates, in the original order."""
    rng = random.Random(seed)
    counts, shares = zip(*KEPT_EVENTS, strict=True)
    keep: dict[str, int] = {}
    kept = []
    for event in events:
        user = event["user_id"]
        if user not in keep:
            keep[user] = rng.choices(counts, shares)[0]
        if event["type"] == "consent_update":
            kept.append(event)  # not behaviour: a user's consent comes with their events
        elif keep[user] > 0:
            keep[user] -= 1
            kept.append(event)
    return kept


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
        label="bench publish",
        total=len(records),
    )
    for key, raw in records:
        publisher.send(key, raw)
    return publisher.close()
