"""The benchmark's second peer: the same per-user pipeline (bench.in_memory) as a Quix Streams
application, the Python stream processor a user would most likely pick instead of PyFlink. It
runs in its own environment (`.venv-bench`, bench/requirements-peer.txt): Quix Streams needs
versions the project does not use. At-least-once, state in the process, as the baseline.

The embedded broker does not return topic configs, and Quix Streams reads `retention.ms` from
them, so the topics are declared with their config here."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from quixstreams import Application, message_context
from quixstreams.models.serializers import Serializer
from quixstreams.models.topics import TopicConfig

from bench.in_memory import InMemoryPipeline, kafka_records
from conf import settings as settings_module
from udfs.events import SourceRef


class ValueOfPair(Serializer):
    """Writes the value of a (key, value) pair the processing step produced."""

    def __call__(self, value, ctx) -> bytes:
        return value[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quix_peer", description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--idle-stop-s", type=float, default=15.0)
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    pipeline = InMemoryPipeline(config, partitions=args.partitions)
    app = Application(
        broker_address=config.kafka.bootstrap_servers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        auto_create_topics=False,
        use_changelog_topics=False,
        state_dir=str(Path(config.local.state_dir) / "bench" / "quix-state"),
    )
    kept = {"retention.ms": "-1", "retention.bytes": "-1"}
    source = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer="bytes",
        config=TopicConfig(args.partitions, 1, kept),
    )
    output = app.topic(
        args.output,
        key_serializer="bytes",
        value_serializer=ValueOfPair(),
        config=TopicConfig(args.partitions, 1, kept),
    )

    def process(raw: bytes, key: str, timestamp: int, headers) -> list[tuple[bytes, bytes]]:
        ctx = message_context()
        source = SourceRef(args.topic, ctx.partition, ctx.offset)
        return kafka_records(pipeline.process(raw, source, key))

    sdf = app.dataframe(source).apply(process, expand=True, metadata=True)
    # Outputs carry their input's timestamp by default; the benchmark reads processing time
    # from output timestamps, as the other contenders' producers set them.
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: time.time_ns() // 1_000_000)
    sdf.to_topic(output, key=lambda pair: pair[0])
    app.run(timeout=args.idle_stop_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
