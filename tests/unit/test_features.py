import math

import pytest

from conf import settings as settings_module
from udfs import features
from udfs.states import ACTIVE_STATES, STATE_INDEX
from udfs.trends import Trends

S = settings_module.load("local").profile


def trends(**counts) -> Trends:
    t = Trends(ref_ts=0)
    t.counts = [0.0] * ACTIVE_STATES
    for state, value in counts.items():
        t.counts[STATE_INDEX[state]] = value
    return t


def test_engagement_score_weighs_dwell_views_and_searches():
    t = trends(view=2.0, search=1.0)
    t.dwell_s = [1.0, 120.0, 14_400.0]  # two decayed dwell minutes
    raw = 0.5 * 2 + 0.5 * 2 + 0.5 * 1  # dwell minutes, product views, searches
    assert features.engagement_score(t, S) == pytest.approx(1 - math.exp(-raw / 10.0))


def test_intent_strength_weighs_cart_wishlist_checkout_and_mean_dwell():
    t = trends(cart=1.0, wishlist=1.0, checkout=1.0)
    t.dwell_s = [2.0, 240.0, 28_800.0]  # mean dwell 120 s = 2 minutes
    raw = 1.0 + 0.4 + 1.5 + 0.1 * 2
    assert features.intent_strength(t, S) == pytest.approx(1 - math.exp(-raw / 3.0))


def test_price_sensitivity_blends_cheapness_and_discount_reaction():
    t = trends()
    t.price_log_ratio = [2.0, -2.0]  # viewed at half the reference price on average
    t.discounts = 2.0
    cheapness = 1 / (1 + 2**-1)
    reaction = 1 - math.exp(-2.0 / 2.0)
    assert features.price_sensitivity(t, S) == pytest.approx(0.5 * cheapness + 0.5 * reaction)


def test_price_sensitivity_is_neutral_without_priced_views_or_discounts():
    assert features.price_sensitivity(trends(), S) == pytest.approx(0.25)


def test_category_affinity_is_the_top_share_with_ties_broken_by_name():
    t = trends()
    t.attention = {"toys": 1.0, "books": 1.0, "home": 0.5}
    assert features.top_category(t) == ("books", pytest.approx(0.4))
    assert features.top_category(trends()) == (None, 0.0)


def test_session_recency_halves_with_each_recency_half_life_of_absence():
    assert features.session_recency(3 * 86_400_000, S) == pytest.approx(0.5)
    assert features.session_recency(0, S) == 1.0
    assert features.session_recency(None, S) == 0.0


def test_segment_vector_is_the_weighted_rfm_components():
    f = features.Features(0, 0, None, 0, 0, 0, (1.0, 0.5, 0.0), (0.2, 0.2, 0.2), (0.5, 0.25, 0.25))
    assert f.segment == pytest.approx((0.5, 0.125, 0.0, 0.1, 0.05, 0.05))
    assert f.rfm_purchase_score == pytest.approx(0.625)
    assert f.rfm_engagement_score == pytest.approx(0.2)
