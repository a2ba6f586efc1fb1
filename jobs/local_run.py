"""`make run`: generate a fresh batch of events, run the ingest job over exactly that batch in
the local Flink MiniCluster, and print what happened (generated, valid, dead-lettered, rows)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable

import psycopg
from kafka import KafkaConsumer, TopicPartition

from conf import settings as settings_module
from conf.settings import Settings
from jobs import ingest
from jobs.generate import generate
from jobs.publish import PublishReport
from udfs.events import DeadLetter


def read_dead_letters(
    config: Settings,
    source_topic: str,
    contains: Callable[[int, int], bool],
    timeout_s: float = 8.0,
) -> dict[str, DeadLetter]:
    """Committed dead letters whose source lies in `contains(partition, offset)`, by id.

    Reads the whole dead-letter topic: end offsets are not trusted (see README). A repeated id is
    the same record again (the local broker shows records of aborted transactions), so it is kept
    once.
    """
    topic = config.kafka.topics.events_dlq
    consumer = KafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    consumer.assign([TopicPartition(topic.name, p) for p in range(topic.partitions)])
    found: dict[str, DeadLetter] = {}
    for message in consumer:
        letter = DeadLetter.from_json(message.value)
        if message.key != letter.dead_letter_id.encode():
            raise ValueError(
                f"dead letter keyed {message.key!r} carries id {letter.dead_letter_id}"
            )
        source = letter.source
        if source.topic == source_topic and contains(source.partition, source.offset):
            found[letter.dead_letter_id] = letter
    consumer.close()
    return found


def archived_rows(config: Settings, batch: PublishReport, event_ids: list[str]) -> int:
    """Rows of this batch: its event ids, read from its offsets. Offsets alone are not enough:
    the local broker keeps data in memory, so after a restart offsets start again at 0."""
    with psycopg.connect(config.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT source_topic, source_partition, source_offset FROM events"
            " WHERE event_id = ANY(%s)",
            (event_ids,),
        ).fetchall()
    return sum(1 for topic, p, o in rows if topic == batch.topic and batch.contains(p, o))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.local_run", description=__doc__)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    summary = generate(config, users=args.users, days=args.days, seed=args.seed)
    batch = summary.publish
    start, stop = batch.bounds()
    print(
        f"[run] ingest job over {batch.sent:,} records of {batch.topic} "
        f"(parallelism {config.flink.parallelism}, {config.flink.execution_mode} mode)",
        file=sys.stderr,
        flush=True,
    )
    began = time.monotonic()
    ingest.run(config, start, stop)
    seconds = time.monotonic() - began
    rows = archived_rows(config, batch, summary.event_ids)
    letters = read_dead_letters(config, batch.topic, batch.contains)
    by_reason = Counter(letter.reason.value for letter in letters.values())
    print()
    print("ingest run summary")
    print(
        f"  events generated     {summary.valid + summary.invalid:>9,}  "
        f"({summary.users:,} users, {summary.sessions:,} sessions, run {summary.run_id})"
    )
    print(f"  valid                {summary.valid:>9,}")
    print(f"  malformed mixed in   {summary.invalid:>9,}")
    print(f"  rows written (PG)    {rows:>9,}  table events")
    print(f"  dead-lettered        {len(letters):>9,}  topic {config.kafka.topics.events_dlq.name}")
    for reason, count in sorted(by_reason.items()):
        print(f"      {reason:<28}{count:>7,}")
    print(f"  job time             {seconds:>8.1f}s")
    ok = rows == summary.valid and len(letters) == summary.invalid
    print(f"  accounted for        {'all records' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
