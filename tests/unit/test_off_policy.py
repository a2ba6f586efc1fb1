"""Off-policy estimates of a candidate targeting policy from logged experiment decisions: on
simulated logs whose true conversion probabilities are known, the intervals cover the
candidate's true value (and do so about 95% of the time), the doubly robust estimate is the
tighter one, and candidates the logs cannot speak for are reported as unsupported."""

import numpy as np
import pytest

from conf.policy import Candidate, load_candidate
from conf.settings import ConfigError
from models.off_policy import LoggedUnit, evaluate

ARMS = {"control": 1 / 3, "discount_10": 1 / 3, "discount_15": 1 / 3}
TRIGGER = ("abandonment", 0.7)  # the logged policy decided only from this score


def p_convert(scores: dict, arm: str) -> float:
    """The simulation's truth: a base rate from the purchase score, and an uplift that grows with
    abandonment (more for the larger discount)."""
    base = 0.1 + 0.2 * scores["purchase"]
    strength = (scores["abandonment"] - 0.7) / 0.3
    uplift = {"control": 0.0, "discount_10": 0.1 * strength, "discount_15": 0.05 + 0.15 * strength}
    return base + uplift[arm]


def simulated_logs(n: int, seed: int) -> list[LoggedUnit]:
    rng = np.random.default_rng(seed)
    units = []
    for i in range(n):
        scores = {"abandonment": rng.uniform(0.7, 1.0), "purchase": rng.uniform(0, 1)}
        arm = rng.choice(list(ARMS))
        converted = rng.random() < p_convert(scores, arm)
        units.append(LoggedUnit(f"u{i}", scores, arm, converted, TRIGGER))
    return units


def candidate(name, *rules, otherwise="control") -> Candidate:
    """rules: (arm, {score: (min, max)})."""
    return Candidate.model_validate(
        {
            "name": name,
            "experiment": "abandonment_offer",
            "rules": [
                {"arm": arm, "when": {s: {"min": lo, "max": hi} for s, (lo, hi) in when.items()}}
                for arm, when in rules
            ],
            "otherwise": otherwise,
        }
    )


HIGH_ABANDONMENT_15 = candidate(
    "high_abandonment_15", ("discount_15", {"abandonment": (0.85, None)})
)


def true_value(candidate: Candidate, units: list[LoggedUnit]) -> float:
    return float(np.mean([p_convert(u.scores, candidate.arm_for(u.scores)) for u in units]))


def test_the_estimates_cover_the_candidates_true_value_and_doubly_robust_is_tighter():
    units = simulated_logs(3000, seed=1)
    result = evaluate(HIGH_ABANDONMENT_15, units, ARMS, "control")
    truth = true_value(HIGH_ABANDONMENT_15, units)
    assert result.supported and result.reasons == ()
    for estimate in (result.ipw, result.doubly_robust):
        assert estimate.ci[0] <= truth <= estimate.ci[1]
    assert result.doubly_robust.std_error < result.ipw.std_error
    everyone_control = float(np.mean([p_convert(u.scores, "control") for u in units]))
    lift = result.lift_over_control
    assert lift.ci[0] <= truth - everyone_control <= lift.ci[1] and lift.ci[0] > 0
    assert result.arms_picked["discount_15"] == pytest.approx(1500, rel=0.1)


def test_the_doubly_robust_interval_covers_the_true_value_about_95_percent_of_the_time():
    covered, runs = 0, 80
    for seed in range(runs):
        units = simulated_logs(1200, seed=100 + seed)
        dr = evaluate(HIGH_ABANDONMENT_15, units, ARMS, "control").doubly_robust
        covered += dr.ci[0] <= true_value(HIGH_ABANDONMENT_15, units) <= dr.ci[1]
    assert 0.88 <= covered / runs <= 1.0


def test_an_arm_the_experiment_never_assigned_is_unsupported():
    units = simulated_logs(600, seed=2)
    bigger = candidate("discount_20", ("discount_20", {}))
    result = evaluate(bigger, units, ARMS, "control")
    assert not result.supported and result.doubly_robust is None
    assert "arm 'discount_20' was never assigned in the logs" in result.reasons


def test_targeting_below_the_logged_trigger_is_unsupported():
    units = simulated_logs(600, seed=3)
    wider = candidate("wider", ("discount_10", {"abandonment": (0.5, None)}))
    result = evaluate(wider, units, ARMS, "control")
    assert not result.supported
    assert any("decided only from 0.7" in r for r in result.reasons)


def test_an_arm_chosen_where_too_few_logged_units_match_is_unsupported():
    units = simulated_logs(600, seed=4)
    narrow = candidate("narrow", ("discount_15", {"abandonment": (0.99, None)}))
    result = evaluate(narrow, units, ARMS, "control")
    assert not result.supported and result.matched["discount_15"] < 30
    assert any("only" in r and "discount_15" in r for r in result.reasons)


def test_a_candidate_file_with_an_unknown_score_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: c\nexperiment: abandonment_offer\notherwise: control\n"
        "rules:\n  - arm: discount_10\n    when: {abandonmnet: {min: 0.8}}\n"
    )
    with pytest.raises(ConfigError, match="unknown scores \\['abandonmnet'\\]"):
        load_candidate(path)


def test_arms_that_fired_at_different_thresholds_are_unsupported():
    units = simulated_logs(600, seed=5)
    units[0] = LoggedUnit("u0", units[0].scores, "discount_15", False, ("abandonment", 0.8))
    result = evaluate(HIGH_ABANDONMENT_15, units, ARMS, "control")
    assert not result.supported and "different thresholds" in result.reasons[0]
