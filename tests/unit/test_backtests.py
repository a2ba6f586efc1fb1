"""A backtest's report from its decisions: per action and variant, users, decisions, scores and
days; two candidates side by side: overlap of targeted users, timing and volume per day."""

import pytest

from models.backtests import Decision, compare, summarize
from udfs.timeunits import DAY_MS, HOUR_MS

T0 = 1_780_000_000_000 // DAY_MS * DAY_MS  # a UTC midnight


def d(user, hours, action="discount_offer", variant=None, score=0.8, delivered=True):
    return Decision(
        user, T0 + int(hours * HOUR_MS), action, variant, "abandonment", score, delivered
    )


def test_the_summary_counts_users_decisions_scores_and_days_per_action_and_variant():
    decisions = [
        d("a", 1, variant="control", delivered=False, score=0.7),
        d("a", 30, variant="control", delivered=False, score=0.9),
        d("b", 2, variant="discount_10", score=0.8),
        d("c", 3, action="help_tip", score=0.6),
    ]
    summary = summarize(decisions)
    assert summary["decisions"] == 4 and summary["users"] == 3
    control = next(a for a in summary["by_action"] if a["variant"] == "control")
    assert control["users"] == 1 and control["decisions"] == 2 and control["delivered"] == 0
    assert control["scores"]["median"] == pytest.approx(0.8)
    assert list(control["per_day"].values()) == [1, 1]
    assert sum(summary["per_day"].values()) == 4 and len(summary["per_day"]) == 2


def test_two_candidates_compare_by_overlap_timing_and_volume():
    a = [d("u1", 1), d("u2", 5), d("u3", 7), d("u4", 30, action="help_tip")]
    b = [d("u1", 3), d("u2", 5), d("u5", 26)]
    c = compare(a, b)
    offer = c["by_action"]["discount_offer"]
    assert (offer["users_a"], offer["users_b"], offer["both"]) == (3, 3, 2)
    assert (offer["only_a"], offer["only_b"]) == (1, 1)
    assert offer["jaccard"] == pytest.approx(2 / 4)
    assert offer["median_hours_b_later"] == pytest.approx(1.0)  # +2 h and 0 h
    assert offer["same_time"] == 1
    assert c["by_action"]["help_tip"]["users_b"] == 0 and c["by_action"]["help_tip"]["jaccard"] == 0
    day0, day1 = sorted(c["per_day"])
    assert c["per_day"][day0] == {"a": 3, "b": 2} and c["per_day"][day1] == {"a": 1, "b": 1}
