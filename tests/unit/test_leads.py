"""Lead scores: capacity from spending and price indifference; cohort modifiers by name and
context, summed per score and clipped to [0, 1]."""

import pytest

from udfs.leads import ALWAYS, COMPETITOR_VIEW, Modifier, base_capacity, lead_score

RESEARCHERS = Modifier(1, "researchers", ALWAYS, 15, 0)
DEAL_HUNTERS = Modifier(2, "price-sensitive", ALWAYS, 0, -10)
COMPARING = Modifier(3, "price-sensitive", COMPETITOR_VIEW, 5, 0)
ALL = [RESEARCHERS, DEAL_HUNTERS, COMPARING]


def test_capacity_mixes_spending_and_indifference_to_price():
    assert base_capacity(1.0, 0.0, 0.6) == pytest.approx(1.0)
    assert base_capacity(0.5, 0.25, 0.6) == pytest.approx(0.6 * 0.5 + 0.4 * 0.75)
    assert base_capacity(0.0, 1.0, 0.6) == 0.0


def test_a_modifier_matches_the_cohort_name_ignoring_case():
    lead = lead_score(0.4, 0.5, "Search-led Researchers", False, ALL)
    assert lead.modifiers == (1,)
    assert lead.intent == pytest.approx(0.46) and lead.capacity == pytest.approx(0.5)
    assert lead.score == pytest.approx(0.46 * 0.5)


def test_competitor_view_modifiers_apply_only_on_such_a_view():
    browsing = lead_score(0.4, 0.5, "Price-sensitive browsers", False, ALL)
    comparing = lead_score(0.4, 0.5, "Price-sensitive browsers", True, ALL)
    assert browsing.modifiers == (2,)
    assert (browsing.intent, browsing.capacity) == pytest.approx((0.4, 0.45))
    assert comparing.modifiers == (2, 3)
    assert (comparing.intent, comparing.capacity) == pytest.approx((0.42, 0.45))


def test_modifiers_add_up_and_the_result_stays_a_probability():
    both = lead_score(0.95, 0.5, "Price-sensitive researchers", True, ALL)
    assert both.modifiers == (1, 2, 3)
    assert both.intent == 1.0  # 0.95 * 1.20, clipped
    assert (both.base_intent, both.base_capacity) == (0.95, 0.5)


def test_no_cohort_means_no_modifier():
    lead = lead_score(0.3, 0.6, None, True, ALL)
    assert lead.modifiers == () and lead.score == pytest.approx(0.18)
