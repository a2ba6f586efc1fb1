"""`make replay` against the real broker: events in time order, unmapped rows dead-lettered."""

import json
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from jobs.replay import replay
from tests.integration.conftest import dead_letters

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "retail_clickstream_sample.csv"
MAPPING = ROOT / "conf" / "mappings" / "retail_clickstream.yaml"


def test_replay_publishes_mapped_events_and_dead_letters_the_rest(local_stack):
    replayed = replay(local_stack, SAMPLE, MAPPING)
    published = replayed.published
    assert (published.sent, replayed.dead) == (7, 2)
    consumer = KafkaConsumer(
        bootstrap_servers=local_stack.kafka.bootstrap_servers,
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    partitions = [TopicPartition(published.topic, p) for p in published.end_offsets]
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, published.start_offsets[tp.partition])
    got = []
    for message in consumer:
        if published.contains(message.partition, message.offset):
            got.append(json.loads(message.value))
        if len(got) == published.sent:
            break
    consumer.close()
    assert len(got) == 7
    by_user = {}
    for event in got:
        by_user.setdefault(event["user_id"], []).append(event["ts"])
    assert all(ts == sorted(ts) for ts in by_user.values())
    letters = dead_letters(local_stack, SAMPLE.name, lambda p, o: o in (8, 9))
    assert {letter.reason.value for letter in letters} == {"unmapped_event", "schema_violation"}
