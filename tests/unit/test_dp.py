"""Differential privacy for released aggregates (udfs/dp.py): the noise OpenDP adds has the scale
the configured epsilon and sensitivity call for, and the budget refuses what would exceed it."""

import math
import statistics
from datetime import UTC, datetime

import pytest

from udfs.dp import Budget, BudgetExceeded, Counts, laplace, noisy, period_start

DRAWS = 20_000


def discrete_laplace_mean_abs(scale: float) -> float:
    """E|X| of the discrete Laplace distribution P(x) ~ exp(-|x| / scale) on the integers."""
    a = math.exp(-1 / scale)
    return 2 * a / (1 - a * a)


def epsilon_from_draws(draws: list[int], true: int, sensitivity: int) -> float:
    """The epsilon the draws' spread implies: the scale whose E|X| is their mean absolute
    error (found by bisection), then sensitivity / scale."""
    observed = statistics.fmean(abs(d - true) for d in draws)
    lo, hi = 1e-3, 1e3
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if discrete_laplace_mean_abs(mid) < observed else (lo, mid)
    return sensitivity / lo


@pytest.mark.parametrize("epsilon, sensitivity", [(0.5, 1), (2.0, 1), (1.5, 3)])
def test_the_noises_empirical_scale_matches_the_configured_epsilon(epsilon, sensitivity):
    true = 1_000
    counts = Counts("many", [f"b{i}" for i in range(DRAWS)], [true] * DRAWS, sensitivity)
    draws = noisy(counts, epsilon)
    assert abs(statistics.fmean(draws) - true) < 0.1 * sensitivity / epsilon  # unbiased
    assert epsilon_from_draws(draws, true, sensitivity) == pytest.approx(epsilon, rel=0.05)
    assert len(set(draws)) > 5, "noise was added"


def test_opendp_checks_the_measurement_spends_no_more_than_epsilon():
    measurement = laplace(sensitivity=3, epsilon=0.75)
    assert measurement.map(3) == pytest.approx(0.75)
    assert measurement.map(6) == pytest.approx(1.5)  # twice the change: twice the loss
    with pytest.raises(ValueError, match="positive"):
        laplace(1, 0.0)


def test_a_release_that_would_exceed_the_budget_is_refused():
    budget = Budget(total=2.0, period="day")
    spent = 0.0
    for _ in range(4):
        budget.check(spent, 0.5)
        spent += 0.5
    with pytest.raises(BudgetExceeded, match="2 per day: 2 spent, 0 left"):
        budget.check(spent, 0.5)
    with pytest.raises(BudgetExceeded):
        Budget(total=1.0, period="day").check(0.0, 1.2)


def test_the_budget_period_starts_at_the_utc_day_week_or_month():
    now = datetime(2026, 12, 17, 15, 30, tzinfo=UTC)  # a Thursday
    assert period_start(now, "day") == datetime(2026, 12, 17, tzinfo=UTC)
    assert period_start(now, "week") == datetime(2026, 12, 14, tzinfo=UTC)
    assert period_start(now, "month") == datetime(2026, 12, 1, tzinfo=UTC)


def test_counts_need_a_count_per_bin_and_a_sensitivity():
    with pytest.raises(ValueError, match="one count per bin"):
        Counts("x", ["a", "b"], [1], 1)
    with pytest.raises(ValueError, match="sensitivity"):
        Counts("x", ["a"], [1], 0)
