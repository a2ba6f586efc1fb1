"""The decision step and attribution inside the profile job's keyed function, over in-memory
state and timers: an action decided on a profile update, its outcome from a purchase or the
end of its window (a timer), cooldowns kept in state, nothing awaiting after a purge."""

from conf.settings import Actions
from jobs.live_models import ScoringSettings
from tests.unit.profile_events import HOUR, MINUTE, T0, page, purchase
from tests.unit.test_profile_job import CONFIG, Harness, counters, revocation

WINDOW = 6 * HOUR
POLICY = """
actions:
  - {name: nudge, score: intent, threshold: 0.0, priority: 1, cooldown_ms: 3600000,
     cap_per_day: 5, payload: {kind: tip, category: "${top_category}"}}
"""


def harness(tmp_path):
    actions = tmp_path / "actions.yaml"
    actions.write_text(POLICY)
    scoring = ScoringSettings(
        CONFIG.models,
        CONFIG.leads,
        registry_dir=None,
        conninfo=None,
        actions=Actions(attribution_window_ms=WINDOW),
        policy_files=(str(actions), str(tmp_path / "no-experiments.yaml")),
    )
    return Harness(scoring=scoring)


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
    assert h.state_is_empty()
    h.advance(T0 + 2 * WINDOW)
    assert h.scored["outcomes"] == []


def test_a_changed_policy_file_takes_effect_in_the_running_function(tmp_path):
    h = harness(tmp_path)
    h.send(page(T0))
    assert len(h.scored["actions"]) == 1
    (tmp_path / "actions.yaml").write_text(POLICY.replace("threshold: 0.0", "threshold: 1.0"))
    h.function.live.refresh(force=True)  # what the reload interval does while the job runs
    h.send(page(T0 + 2 * HOUR))  # past the cooldown, but nothing is over the new threshold
    assert len(h.scored["actions"]) == 1


def test_a_broken_policy_file_leaves_the_current_policy_in_use(tmp_path):
    h = harness(tmp_path)
    (tmp_path / "actions.yaml").write_text("actions:\n  - {name: x, score: mood}\n")
    h.function.live.refresh(force=True)
    h.send(page(T0))
    assert [a.action for a in h.scored["actions"]] == ["nudge"]
