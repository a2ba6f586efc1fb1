"""The decision step and attribution inside the profile job's keyed function, over in-memory
state and timers: an action decided on a profile update, its outcome from a purchase or the
end of its window (a timer), cooldowns kept in state, nothing awaiting after a purge."""

from conf.settings import Actions
from jobs.control import POLICY as POLICY_KIND
from jobs.control import ControlRecord, ScoringSettings, policy_content
from tests.unit.profile_events import HOUR, MINUTE, T0, page, purchase
from tests.unit.test_profile_job import CONFIG, Harness, counters, revocation

WINDOW = 6 * HOUR
POLICY = """
actions:
  - {name: nudge, score: intent, threshold: 0.0, priority: 1, cooldown_ms: 3600000,
     cap_per_day: 5, payload: {kind: tip, category: "${top_category}"}}
"""


def policy_record(tmp_path, text: str, sequence: int) -> ControlRecord:
    """The control record `make control` publishes for this policy file."""
    actions = tmp_path / "actions.yaml"
    actions.write_text(text)
    content = policy_content(actions, tmp_path / "no-experiments.yaml")
    return ControlRecord(POLICY_KIND, sequence, content)


def harness(tmp_path):
    scoring = ScoringSettings(
        CONFIG.models,
        CONFIG.leads,
        registry_dir=None,
        actions=Actions(attribution_window_ms=WINDOW),
    )
    return Harness(scoring=scoring, in_force=[policy_record(tmp_path, POLICY, 1)])


def test_a_purchase_in_the_window_converts_the_decision(tmp_path):
    h = harness(tmp_path)
    h.send(page(T0))
    [decision] = h.scored["actions"]
    assert (decision.action, decision.delivered, decision.experiment) == ("nudge", True, None)
    assert h.user().schedule.outcome_due == T0 + WINDOW  # the window's end will be seen
    h.send(page(T0 + 10 * MINUTE))  # inside the cooldown: no second decision
    assert len(h.scored["actions"]) == 1
    h.send(purchase(T0 + 20 * MINUTE, total=80.0))
    [outcome] = h.scored["outcomes"]
    assert (outcome.decision_id, outcome.converted, outcome.revenue) == (
        decision.decision_id,
        True,
        80.0,
    )


def test_the_end_of_the_window_is_a_non_conversion_fired_by_the_timer(tmp_path):
    h = harness(tmp_path)
    h.send(page(T0))
    h.advance(T0 + WINDOW)
    [outcome] = h.scored["outcomes"]
    assert (outcome.converted, outcome.outcome_ts) == (False, T0 + WINDOW)
    h.send(purchase(T0 + WINDOW + MINUTE, session="s2"))  # too late for it
    assert len(h.scored["outcomes"]) == 1


def test_a_purge_drops_what_awaits_an_outcome_and_counts_it(tmp_path):
    h = harness(tmp_path)
    h.send(page(T0))
    h.send(revocation(T0 + MINUTE))
    assert counters(h)["outcomes_dropped_on_purge"] == 1
    assert h.holds_only_consent()
    h.advance(T0 + 2 * WINDOW)
    assert h.scored["outcomes"] == []


def test_a_policy_published_while_it_runs_takes_effect_and_is_kept_for_a_restore(tmp_path):
    h = harness(tmp_path)
    h.send(page(T0))
    assert len(h.scored["actions"]) == 1
    stricter = policy_record(tmp_path, POLICY.replace("threshold: 0.0", "threshold: 1.0"), 2)
    h.control(stricter)
    h.send(page(T0 + 2 * HOUR))  # past the cooldown, but nothing is over the new threshold
    assert len(h.scored["actions"]) == 1
    assert h.ctx.broadcast == {"policy": stricter.encode()}
    # Restarted from a snapshot taken now: the stricter policy, though submitted with the first.
    restored = harness_restored(tmp_path, h.ctx.broadcast)
    restored.send(page(T0 + 4 * HOUR))
    assert restored.scored["actions"] == []


def harness_restored(tmp_path, broadcast: dict):
    h = harness(tmp_path)
    h.ctx.broadcast.update(broadcast)
    return h


def test_an_older_or_repeated_policy_record_changes_nothing(tmp_path):
    h = harness(tmp_path)
    h.control(policy_record(tmp_path, POLICY.replace("threshold: 0.0", "threshold: 1.0"), 1))
    h.send(page(T0))
    assert [a.action for a in h.scored["actions"]] == ["nudge"]
    assert h.ctx.broadcast == {}


def test_an_invalid_control_record_leaves_the_current_policy_in_use(tmp_path):
    h = harness(tmp_path)
    h.control(ControlRecord(POLICY_KIND, 2, {"actions": [{"name": "x", "score": "mood"}]}))
    h.function.process_broadcast_element("not json at all {", h.ctx)
    h.send(page(T0))
    assert [a.action for a in h.scored["actions"]] == ["nudge"]
    assert h.ctx.broadcast == {}
