"""The benchmark's baseline: a plain kafka-python loop doing the profile job's work (the same
per-user pipeline, bench.in_memory: state in dicts) from the input topic to an output topic
(every record the job writes to Kafka, on one topic), committing its offsets after each batch.
At-least-once, one process, no checkpoints: what a user would write by hand instead of a Flink
job."""

from __future__ import annotations

import argparse

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from bench.in_memory import InMemoryPipeline, kafka_records
from conf import settings as settings_module
from jobs.runtime import parse_offsets
from udfs.events import SourceRef


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--start-offsets", required=True)
    parser.add_argument("--stop-offsets", required=True)
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    start, stop = parse_offsets(args.start_offsets), parse_offsets(args.stop_offsets)
    pipeline = InMemoryPipeline(config, partitions=len(start))
    bootstrap = config.kafka.bootstrap_servers
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        max_poll_records=2000,
        fetch_max_bytes=16 * 2**20,
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    partitions = {p: TopicPartition(args.topic, p) for p in start if stop[p] > start[p]}
    consumer.assign(list(partitions.values()))
    for p, tp in partitions.items():
        consumer.seek(tp, start[p])
    position = dict(start)
    while any(position[p] < stop[p] for p in partitions):
        batches = consumer.poll(timeout_ms=500)
        for tp, records in batches.items():
            for record in records:
                if record.offset >= stop[tp.partition]:
                    break
                source = SourceRef(tp.topic, tp.partition, record.offset)
                out = pipeline.process(record.value, source, record.key.decode())
                for key, value in kafka_records(out):
                    producer.send(args.output, key=key, value=value)
                position[tp.partition] = record.offset + 1
        if batches:
            producer.flush()  # outputs are written before their input counts as done
            consumer.commit(
                {tp: OffsetAndMetadata(position[p], None, -1) for p, tp in partitions.items()}
            )
    producer.close()
    consumer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
