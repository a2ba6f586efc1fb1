"""Control records (jobs/control.py): what reads back from the topic, and which record a
subtask uses whatever order they reach it in."""

import pytest

from jobs.control import (
    MODIFIERS,
    POLICY,
    ControlRecord,
    LiveModels,
    ScoringSettings,
    plain,
    policy_content,
)
from tests.unit.test_profile_job import CONFIG

SCORING = ScoringSettings(CONFIG.models, CONFIG.leads, registry_dir=None, actions=CONFIG.actions)


def modifiers(sequence: int, *rows) -> ControlRecord:
    return ControlRecord(MODIFIERS, sequence, plain(rows))


def test_a_record_reads_back_as_it_was_published():
    record = ControlRecord(POLICY, 3, policy_content(*default_policy_files()))
    assert ControlRecord.decode(record.encode()) == record


def default_policy_files():
    return CONFIG.actions.actions_file, CONFIG.actions.experiments_file


@pytest.mark.parametrize(
    "text, why",
    [
        ('{"kind": "rules", "sequence": 1, "content": {}}', "not a control record"),
        ('{"kind": "policy", "content": {}}', "without a sequence"),
        ('{"kind": "policy", "sequence": 0, "content": {}}', "without a sequence"),
        ('["policy", 1]', "not a control record"),
    ],
)
def test_anything_but_a_record_of_a_known_kind_is_refused(text, why):
    with pytest.raises(ValueError, match=why):
        ControlRecord.decode(text)


def test_the_highest_sequence_wins_whatever_the_order_records_arrive_in():
    first = modifiers(1, (1, "researchers", "always", 10.0, 0.0))
    second = modifiers(2, (1, "researchers", "always", 25.0, 0.0), (2, "bargain", "always", 0, 5))
    in_order = LiveModels(SCORING, [first, second])
    reordered = LiveModels(SCORING, [second, first])
    assert in_order.modifiers == reordered.modifiers
    assert [m.intent_pct for m in reordered.modifiers] == [25.0, 0]
    assert reordered.sequences == {MODIFIERS: 2}


def test_a_policy_that_does_not_validate_is_not_used_and_a_later_valid_one_is():
    valid = ControlRecord(POLICY, 1, policy_content(*default_policy_files()))
    live = LiveModels(SCORING, [valid])
    assert not live.apply(ControlRecord(POLICY, 2, {"actions": [{"name": "x", "score": "mood"}]}))
    assert live.policy is not None and live.sequences[POLICY] == 1
    assert live.apply(ControlRecord(POLICY, 3, valid.content))


def test_content_published_and_read_back_compares_equal_to_the_sources():
    rows = [(1, "researchers", "always", 10.0, 0.0)]  # as psycopg returns them
    published = ControlRecord(MODIFIERS, 1, plain(rows))
    assert ControlRecord.decode(published.encode()).content == plain(rows)
