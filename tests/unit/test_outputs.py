"""The output declarations: Kafka values are strict JSON with the JSON columns spliced in, and
deletions key the user's rows."""

import json

import pytest

from udfs import outputs


def test_output_values_are_strict_json_with_raw_fields_spliced():
    record = outputs.SCORES.record(
        "u1", 1, "e1", 3, 1, 2, "c2", 2, float("nan"), 0.25, None, "purchase", '[{"x":1}]'
    )
    value = json.loads(record.value, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert value["abandonment"] is None  # NaN has no JSON form; PostgreSQL's jsonb refuses it
    assert value["ranked"] == [{"x": 1}] and value["drift"] == 0.25 and value["user_id"] == "u1"
    assert list(value) == outputs.SCORES.names


def test_a_postgres_only_output_has_no_kafka_value():
    record = outputs.SESSIONS.record(*range(len(outputs.SESSIONS.names)))
    assert record.value is None and not record.delete


def test_a_deletion_keys_the_users_rows_and_carries_nothing_else():
    [profile, scores, leads] = outputs.user_deletions("u1")
    for deletion, output in zip(
        (profile, scores, leads), (outputs.PROFILES, outputs.SCORES, outputs.LEADS), strict=True
    ):
        assert deletion.output is output and deletion.delete and deletion.value is None
        assert deletion.values[0] == "u1" and set(deletion.values[1:]) == {None}
    with pytest.raises(ValueError, match="user_id"):
        outputs.Output("x", [("id", "text")], topic="x", table=None, deletable=True)
