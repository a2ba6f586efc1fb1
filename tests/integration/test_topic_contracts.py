"""Every record the stream run's jobs wrote to every output topic meets the topic's published
contract (udfs/schemas/topics/): its key and value validate, and tombstones appear only on
topics whose contract has them."""

import json

import pytest

from conf.settings import OUTPUT_TOPICS
from udfs import contracts

# The stream run has no incident, so it raises no alert (test_incident_alerts checks those),
# and erases nobody (test_privacy checks the erasures).
MAY_BE_EMPTY = {"alerts", "erasures"}


@pytest.mark.parametrize("topic", OUTPUT_TOPICS)
def test_every_record_of_the_topic_meets_its_contract(stream_topics, topic, figures):
    records = stream_topics[topic]
    assert records or topic in MAY_BE_EMPTY, f"the run wrote nothing to {topic}"
    key_valid, value_valid = contracts.validators(topic)
    tombstones = contracts.latest(topic)["tombstones"]
    for record in records:
        key_valid(record.key.decode())
        if record.value is None:
            assert tombstones, f"a tombstone on {topic}, whose contract has none"
            continue
        value_valid(json.loads(record.value))
    figures(f"{topic}: {len(records)} records valid")
