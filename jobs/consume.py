"""An example consumer of an output topic (`make consume TOPIC=actions`): reads committed records
only, checks each against the topic's published contract (udfs/contracts.py), and prints one
line per record; a record that breaks the contract is reported, never silently skipped.

It is written the way docs/consumers.md asks a downstream consumer to be: `read_committed`;
offsets committed only after records are handled (so a restart may hand some records again);
and handling that is idempotent by the record's id, so a record seen twice acts once. Replace
`handle` with what your service does."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import OrderedDict

import fastjsonschema
from kafka import KafkaConsumer

from conf import settings as settings_module
from conf.settings import OUTPUT_TOPICS
from udfs import contracts


class Handler:
    """Prints each valid record once; remembers the last `memory` ids to drop repeats."""

    def __init__(self, topic: str, out=sys.stdout, memory: int = 100_000):
        self.topic, self.out, self.memory = topic, out, memory
        self.key_valid, self.value_valid = contracts.validators(topic)
        self.record_id = contracts.latest(topic)["record_id"]
        self.seen: OrderedDict[tuple, None] = OrderedDict()
        self.handled = self.repeated = self.invalid = self.tombstones = 0

    def __call__(self, key: bytes | None, value: bytes | None) -> None:
        user = key.decode() if key is not None else None
        if value is None:
            self.tombstones += 1
            print(f"deleted  {user} (erased: drop what you keep of this user)", file=self.out)
            return
        try:
            record = json.loads(value)
            self.key_valid(user)
            self.value_valid(record)
        except (ValueError, fastjsonschema.JsonSchemaException) as exc:
            self.invalid += 1
            print(f"INVALID  key={user!r}: {exc}", file=self.out)
            return
        record_id = tuple(record[f] for f in self.record_id)
        if record_id in self.seen:
            self.repeated += 1
            return
        self.seen[record_id] = None
        if len(self.seen) > self.memory:
            self.seen.popitem(last=False)
        self.handled += 1
        self.handle(record)

    def handle(self, record: dict) -> None:
        print(json.dumps(record, separators=(",", ":")), file=self.out, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.consume", description=__doc__)
    parser.add_argument("--topic", required=True, choices=sorted(OUTPUT_TOPICS))
    parser.add_argument("--group", default="example-consumer", help="consumer group")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the earliest offset (new group)"
    )
    parser.add_argument(
        "--idle-exit-s", type=float, default=0, help="stop after this long without a record"
    )
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    topic = getattr(config.kafka.topics, args.topic).name
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=config.kafka.bootstrap_servers,
        group_id=args.group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
    )
    handler = Handler(args.topic)
    print(f"reading committed records of {topic} (Ctrl-C stops)", file=sys.stderr)
    try:
        idle_since = None  # counted from when partitions are assigned: joining a group takes time
        while (
            args.idle_exit_s == 0
            or idle_since is None
            or time.monotonic() - idle_since < args.idle_exit_s
        ):
            batches = consumer.poll(timeout_ms=1000)
            if consumer.assignment() and (batches or idle_since is None):
                idle_since = time.monotonic()
            for records in batches.values():
                for record in records:
                    handler(record.key, record.value)
            if batches:
                consumer.commit()  # after handling: a crash before this hands the records again
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        print(
            f"{handler.handled} handled, {handler.repeated} repeats dropped, "
            f"{handler.tombstones} tombstones, {handler.invalid} invalid",
            file=sys.stderr,
        )
    return 1 if handler.invalid else 0


if __name__ == "__main__":
    sys.exit(main())
