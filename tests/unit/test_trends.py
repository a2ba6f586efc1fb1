import math

import pytest

from tests.unit.profile_events import HOUR, T0, coupon, event, page, view
from udfs.events import EventType, OfferResponse
from udfs.states import STATE_INDEX
from udfs.trends import Trends, mean_and_std

BROWSE = STATE_INDEX["browse"]
PRICES = {"books": 15.0}


def fill(events):
    trends = Trends()
    for e in events:
        state = STATE_INDEX["view" if e.type is EventType.PRODUCT_VIEW else "browse"]
        if e.type is EventType.COUPON_ATTEMPT:
            state = STATE_INDEX["coupon"]
        if e.type is EventType.OFFER_RESPONSE:
            state = STATE_INDEX["offer"]
        trends.add(e, state, HOUR, PRICES)
    return trends


def test_counts_and_dwell_statistics_decay_with_the_half_life():
    trends = fill([page(T0, dwell_ms=60_000, scroll=0.5), page(T0 + HOUR, dwell_ms=120_000)])
    assert trends.counts[BROWSE] == pytest.approx(1.5)  # 0.5 + 1
    # weight 1.5; sum 0.5*60 + 120 = 150; squares 0.5*3600 + 14400 = 16200
    assert trends.dwell_s == pytest.approx([1.5, 150.0, 16200.0])
    mean, std = mean_and_std(trends.dwell_s)
    assert mean == pytest.approx(100.0)
    assert std == pytest.approx(math.sqrt(16200 / 1.5 - 100.0**2))


def test_out_of_order_events_give_the_same_trends_as_in_order():
    events = [page(T0), view(T0 + HOUR, price=30.0), page(T0 + 3 * HOUR, dwell_ms=5_000)]
    in_order, shuffled = fill(events), fill([events[2], events[0], events[1]])
    assert shuffled.ref_ts == in_order.ref_ts == T0 + 3 * HOUR
    assert shuffled.counts == pytest.approx(in_order.counts)
    assert shuffled.dwell_s == pytest.approx(in_order.dwell_s)
    assert shuffled.attention == pytest.approx(in_order.attention)


def test_category_shares_are_decayed_attention_per_category():
    trends = fill([page(T0, category="books"), view(T0 + HOUR, category="electronics")])
    assert trends.category_shares() == pytest.approx({"books": 1 / 3, "electronics": 2 / 3})


def test_viewed_prices_are_compared_with_the_category_reference():
    trends = fill([view(T0, "books", price=30.0), view(T0, "toys", price=99.0)])
    assert trends.price_log_ratio == pytest.approx([1.0, 1.0])  # log2(30 / 15); toys: no ref


def test_coupon_attempts_and_accepted_offers_count_as_discount_reactions():
    accepted = event(EventType.OFFER_RESPONSE, T0 + HOUR, OfferResponse("a1", "accepted"))
    dismissed = event(EventType.OFFER_RESPONSE, T0 + HOUR, OfferResponse("a2", "dismissed"))
    trends = fill([coupon(T0), accepted, dismissed])
    assert trends.discounts == pytest.approx(1.5)
