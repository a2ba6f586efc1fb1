"""The lead-quality report (models/lead_quality.py) on generated lead outcomes whose truth is
known: each user's chance to buy is a hidden propensity, the unmodified score sees it through
noise, and the cohort modifiers add part of what the noise hides."""

import numpy as np
import pytest

from models.lead_quality import LeadOutcome, lead_report


def generated(users: int, informative_modifiers: bool, seed: int = 3, copies: int = 1):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        variant = "with_modifiers" if u % 2 else "without_modifiers"
        propensity = rng.normal()
        converted = bool(rng.random() < 1 / (1 + np.exp(-2 * propensity)))
        for _ in range(rng.integers(1, 4)):
            unmodified = propensity + rng.normal(scale=1.5)
            hint = propensity if informative_modifiers else rng.normal()
            modified = unmodified + 0.8 * hint
            served = modified if variant == "with_modifiers" else unmodified
            rows += [LeadOutcome(f"u{u}", variant, served, unmodified, converted)] * copies
    return rows


ARMS = ("without_modifiers", "with_modifiers")


def test_modifiers_that_carry_information_raise_the_auc_and_the_report_says_so():
    report = lead_report(generated(1200, informative_modifiers=True), ARMS)
    without, with_ = report.arms
    assert (without.variant, with_.variant) == ARMS
    assert with_.auc > without.auc and with_.top_conversion > without.top_conversion
    between = report.against_first["with_modifiers"]
    assert between.ci[0] > 0 and between.ci[0] < between.difference < between.ci[1]
    paired = report.served_vs_unmodified
    assert set(paired) == {"with_modifiers"}  # the other arm serves the unmodified score
    assert paired["with_modifiers"].ci[0] > 0


def test_modifiers_of_noise_lower_the_auc_on_the_same_leads():
    report = lead_report(generated(1200, informative_modifiers=False), ARMS)
    assert report.served_vs_unmodified["with_modifiers"].ci[1] < 0


def test_intervals_resample_users_so_copies_of_their_leads_add_no_certainty():
    once = lead_report(generated(300, True), ARMS).arms[1]
    copied = lead_report(generated(300, True, copies=5), ARMS).arms[1]
    width = once.auc_ci[1] - once.auc_ci[0]
    assert copied.auc == pytest.approx(once.auc)
    assert copied.auc_ci[1] - copied.auc_ci[0] > 0.8 * width
    assert copied.leads == 5 * once.leads and copied.users == once.users


def test_an_arm_without_outcomes_is_refused():
    rows = [r for r in generated(50, True) if r.variant == "with_modifiers"]
    with pytest.raises(ValueError, match="without_modifiers"):
        lead_report(rows, ARMS)


def test_the_auc_is_sklearns_ties_included():
    from sklearn.metrics import roc_auc_score

    from models.lead_quality import auc

    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, size=400).astype(float)  # many ties
    converted = rng.random(400) < 0.3
    assert auc(scores, converted) == pytest.approx(roc_auc_score(converted, scores))
