"""Experiment statistics against values worked out by hand and by simulation."""

import math
import random

import numpy as np
import pytest

from models.experiment_stats import (
    Arm,
    always_valid_p,
    balance,
    compare,
    mean_effect,
    ratio_effect,
    sample_ratio,
)


def test_lift_and_z_test_by_hand():
    c = compare(Arm(1000, 100), Arm(1000, 130))
    assert c.absolute_lift == pytest.approx(0.03)
    se = math.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
    assert c.absolute_ci == pytest.approx((0.03 - 1.959964 * se, 0.03 + 1.959964 * se), rel=1e-5)
    pooled = 0.115
    z = 0.03 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert c.z == pytest.approx(z) and c.p_value == pytest.approx(0.0355, abs=5e-4)
    assert c.relative_lift == pytest.approx(0.3)
    low, high = c.relative_ci
    assert low < 0.3 < high and low > 0  # significant at 95 %


def test_the_interval_covers_the_true_lift_about_95_percent_of_the_time():
    rng = random.Random(5)
    covered = 0
    for _ in range(400):
        a = sum(rng.random() < 0.10 for _ in range(2000))
        b = sum(rng.random() < 0.12 for _ in range(2000))
        low, high = compare(Arm(2000, a), Arm(2000, b)).absolute_ci
        covered += low <= 0.02 <= high
    assert 0.92 <= covered / 400 <= 0.98


def test_the_always_valid_p_value_is_more_cautious_than_the_fixed_one():
    c = compare(Arm(1000, 100), Arm(1000, 130))
    assert c.p_value < 0.05 < c.always_valid_p <= 1
    strong = compare(Arm(20000, 2000), Arm(20000, 2600))
    assert strong.always_valid_p < 1e-6
    assert always_valid_p(0.0, 0.0) == 1.0


def test_peeking_with_the_always_valid_p_value_keeps_false_alarms_rare():
    # No true effect; look after every 200 users per arm, up to 10,000, stop at p < 0.05.
    rng = random.Random(11)
    alarms_fixed = alarms_valid = 0
    for _ in range(100):
        nc = nt = cc = ct = 0
        fixed = valid = False
        for _ in range(50):
            cc += sum(rng.random() < 0.1 for _ in range(200))
            ct += sum(rng.random() < 0.1 for _ in range(200))
            nc += 200
            nt += 200
            c = compare(Arm(nc, cc), Arm(nt, ct))
            fixed |= c.p_value < 0.05
            valid |= c.always_valid_p < 0.05
        alarms_fixed += fixed
        alarms_valid += valid
    print(f"\n  false alarms with peeking: fixed {alarms_fixed}%, always-valid {alarms_valid}%")
    assert alarms_valid <= 5 < alarms_fixed


def test_sample_ratio_mismatch_is_flagged_on_a_skewed_split_only():
    assert sample_ratio([5000, 5000, 5000], [1, 1, 1]).mismatch is False
    assert sample_ratio([5030, 4970], [1, 1]).mismatch is False
    skewed = sample_ratio([5400, 4600], [1, 1])
    assert skewed.checked and skewed.mismatch and skewed.p_value < 1e-10
    assert sample_ratio([9000, 3000], [3, 1]).mismatch is False  # weights honoured
    small = sample_ratio([6, 2], [1, 1])  # an arm expects 4 < 5: not checked
    assert (small.checked, small.mismatch) == (False, False)


def test_cuped_keeps_the_estimate_unbiased_and_its_interval_covers_about_95_percent():
    rng = np.random.default_rng(11)
    covered = {"unadjusted": 0, "cuped": 0}
    widths = {"unadjusted": [], "cuped": []}
    for _ in range(300):
        x = rng.poisson(2.0, 800).astype(float)
        y = x + rng.normal(0, 1.5, 800)
        y[400:] += 0.3  # true effect
        m = mean_effect(y[:400], y[400:], x[:400], x[400:])
        for name, e in (("unadjusted", m.unadjusted), ("cuped", m.adjusted)):
            covered[name] += e.ci[0] <= 0.3 <= e.ci[1]
            widths[name].append(e.ci[1] - e.ci[0])
    assert 0.92 <= covered["cuped"] / 300 <= 0.98
    assert 0.92 <= covered["unadjusted"] / 300 <= 0.98
    # var(y) = 2 + 2.25 and the covariate explains 2 of it: the interval is sqrt(2.25/4.25) wide.
    ratio = np.mean(widths["cuped"]) / np.mean(widths["unadjusted"])
    assert ratio == pytest.approx(math.sqrt(2.25 / 4.25), rel=0.03)


def test_without_a_covariate_the_adjusted_effect_is_the_unadjusted_one():
    m = mean_effect([0, 1, 0, 1, 1], [1, 1, 0, 1, 1])
    assert m.adjusted == m.unadjusted and m.variance_reduction == 0
    assert m.unadjusted.estimate == pytest.approx(0.8 - 0.6)
    constant = mean_effect([0, 1, 0, 1], [1, 1, 0, 1], [3, 3, 3, 3], [3, 3, 3, 3])
    assert constant.adjusted == constant.unadjusted


def test_ratio_metric_by_the_delta_method_matches_a_bootstrap_over_users():
    rng = np.random.default_rng(3)
    sessions = [rng.integers(1, 9, 600) for _ in range(2)]
    converted = [rng.binomial(s, p) for s, p in zip(sessions, (0.10, 0.13), strict=True)]
    control, treated, effect = ratio_effect(
        (converted[0], sessions[0]), (converted[1], sessions[1])
    )
    assert control == pytest.approx(converted[0].sum() / sessions[0].sum())
    assert effect.estimate == pytest.approx(treated - control)
    draws = []
    for _ in range(2000):
        picks = [rng.integers(0, 600, 600) for _ in range(2)]
        r = [converted[i][p].sum() / sessions[i][p].sum() for i, p in enumerate(picks)]
        draws.append(r[1] - r[0])
    assert effect.std_error == pytest.approx(float(np.std(draws)), rel=0.1)


def test_a_ratio_that_ignores_the_clustering_of_sessions_would_be_too_narrow():
    # Users differ a lot in how their sessions convert: sessions of one user are correlated.
    rng = np.random.default_rng(8)
    arms = []
    for _ in range(2):
        sessions = rng.integers(1, 20, 400)
        propensity = rng.beta(0.5, 4, 400)
        arms.append((rng.binomial(sessions, propensity), sessions))
    _, _, effect = ratio_effect(*arms)
    naive = math.sqrt(sum(c.sum() / s.sum() * (1 - c.sum() / s.sum()) / s.sum() for c, s in arms))
    assert effect.std_error > 1.5 * naive


def test_balance_flags_a_covariate_that_differs_between_arms():
    rng = np.random.default_rng(2)
    same = balance(rng.poisson(2, 1000), rng.poisson(2, 1000))
    assert not same.imbalanced and abs(same.standardized_difference) < 0.1
    skewed = balance(rng.poisson(2, 1000), rng.poisson(2.5, 1000))
    assert skewed.imbalanced and skewed.standardized_difference > 0.2
