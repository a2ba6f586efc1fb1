"""The topics' published JSON Schemas are what the output declarations say, and a change that
would break a consumer of a published version is refused."""

import copy
import json
import shutil

import fastjsonschema
import pytest

from udfs import contracts, outputs
from udfs.events import DeadLetter, Reason, SourceRef


def actions_with(columns=None, optional=()) -> dict:
    """The actions topic's contract for a changed declaration of the actions output."""
    changed = outputs.Output(
        "actions",
        columns if columns is not None else outputs.ACTIONS.columns,
        topic="actions",
        table="actions",
        optional=tuple(outputs.ACTIONS.optional | set(optional)),
        shapes=outputs.ACTIONS.shapes,
        names_user=outputs.ACTIONS.names_user,
        notes=outputs.ACTIONS.notes,
    )
    return {**contracts.current()["actions"], "value": contracts.value_schema(changed)}


PUBLISHED_ACTIONS = contracts.content(contracts.latest("actions"))


def test_every_output_topic_has_a_published_contract_equal_to_its_declaration():
    state = contracts.status()
    assert set(state) == {*contracts.topic_outputs(), "events_dlq"}
    assert {topic: problems for topic, (_, problems) in state.items()} == dict.fromkeys(state)


def test_adding_a_field_is_compatible():
    added = actions_with([*outputs.ACTIONS.columns, ("channel", "text")])
    assert contracts.contract_breaks(PUBLISHED_ACTIONS, added) == []


def test_removing_a_field_breaks_consumers():
    removed = actions_with([c for c in outputs.ACTIONS.columns if c[0] != "threshold"])
    assert contracts.contract_breaks(PUBLISHED_ACTIONS, removed) == ["threshold: removed"]


def test_renaming_a_field_breaks_consumers():
    renamed = actions_with(
        [("cutoff", t) if n == "threshold" else (n, t) for n, t in outputs.ACTIONS.columns]
    )
    assert contracts.contract_breaks(PUBLISHED_ACTIONS, renamed) == ["threshold: removed"]


def test_changing_a_type_breaks_consumers():
    retyped = actions_with(
        [(n, "text") if n == "score" else (n, t) for n, t in outputs.ACTIONS.columns]
    )
    assert contracts.contract_breaks(PUBLISHED_ACTIONS, retyped) == ["score: may now be ['string']"]


def test_a_field_that_may_become_null_breaks_consumers():
    nullable = actions_with(optional=("score",))
    assert contracts.contract_breaks(PUBLISHED_ACTIONS, nullable) == ["score: may now be ['null']"]


def test_a_changed_record_id_breaks_consumers():
    changed = {**PUBLISHED_ACTIONS, "record_id": ["user_id", "ts"]}
    assert contracts.contract_breaks(PUBLISHED_ACTIONS, changed) == [
        "record_id: ['decision_id'] became ['user_id', 'ts']"
    ]


def test_a_nested_field_removed_from_a_json_column_breaks_consumers():
    scores = contracts.content(contracts.published("scores", 1))
    changed = copy.deepcopy(scores)
    del changed["value"]["properties"]["ranked"]["items"]["properties"]["p"]
    assert contracts.contract_breaks(scores, changed) == ["ranked[].p: removed"]


def test_publishing_refuses_a_breaking_change_and_writes_a_compatible_one(tmp_path, monkeypatch):
    for topic in contracts.current():
        shutil.copytree(contracts.contracts_dir() / topic, tmp_path / topic)
    latest = contracts.published_versions("actions")[-1]
    monkeypatch.setattr(contracts, "contracts_dir", lambda: tmp_path)
    current = contracts.current()
    breaking = copy.deepcopy(current)
    del breaking["actions"]["value"]["properties"]["threshold"]
    monkeypatch.setattr(contracts, "current", lambda: breaking)
    with pytest.raises(ValueError, match=f"actions: v{latest}: threshold: removed"):
        contracts.publish()
    assert not (tmp_path / "actions" / f"v{latest + 1}.json").exists()

    compatible = copy.deepcopy(current)
    compatible["actions"]["value"]["properties"]["channel"] = {"type": "string"}
    monkeypatch.setattr(contracts, "current", lambda: compatible)
    assert contracts.publish() == [f"actions v{latest + 1}"]
    written = json.loads((tmp_path / "actions" / f"v{latest + 1}.json").read_text())
    assert written["version"] == latest + 1 and "channel" in written["value"]["properties"]


def test_a_dead_letter_validates_against_its_contract_field_for_field():
    letter = DeadLetter(Reason.SCHEMA_VIOLATION, "ts: must be integer", b"{}", SourceRef("e", 1, 9))
    value = json.loads(letter.to_json())
    key_valid, value_valid = contracts.validators("events_dlq")
    value_valid(value)
    key_valid(letter.dead_letter_id)
    assert set(value) == set(contracts.DEAD_LETTER_VALUE["properties"])


def test_a_record_with_a_wrong_type_fails_validation():
    _, value_valid = contracts.validators("cohort_moves")
    move = outputs.COHORT_MOVES.record("m1", "u1", 5, None, 2, None, "loyal", "first", 3)
    value_valid(json.loads(move.value))
    with pytest.raises(fastjsonschema.JsonSchemaValueException, match="to_cohort"):
        value_valid({**json.loads(move.value), "to_cohort": "2"})
