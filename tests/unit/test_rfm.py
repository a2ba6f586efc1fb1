import math

import pytest

from conf.settings import Rfm, RfmParameters
from udfs.rfm import (
    LifetimePurchases,
    RfmBreakpoints,
    RfmTracker,
    dynamic_weights,
    parameters_for,
)
from udfs.timeunits import DAY_MS

T0 = 1_767_225_600_000
HALF_LIFE = 30 * DAY_MS


def test_rfm_scores_from_decayed_count_and_value():
    tracker = RfmTracker()
    tracker.add(T0, 100.0, HALF_LIFE)
    tracker.add(T0 + 30 * DAY_MS, 50.0, HALF_LIFE)
    assert (tracker.count, tracker.value) == (pytest.approx(1.5), pytest.approx(100.0))
    now = T0 + 37 * DAY_MS
    recency, frequency, monetary = tracker.scores(now, HALF_LIFE, 7 * DAY_MS, 3.0, 150.0)
    assert recency == pytest.approx(0.5)  # 7 days after the last, half-life 7 days
    assert frequency == pytest.approx(1 - math.exp(-1.5 * 2 ** (-7 / 30) / 3.0))
    assert monetary == pytest.approx(1 - math.exp(-(100.0 / 1.5) / 150.0))


def test_rfm_tracker_is_order_independent():
    a, b = RfmTracker(), RfmTracker()
    for ts, v in [(T0, 10.0), (T0 + 5 * DAY_MS, 30.0)]:
        a.add(ts, v, HALF_LIFE)
    for ts, v in [(T0 + 5 * DAY_MS, 30.0), (T0, 10.0)]:
        b.add(ts, v, HALF_LIFE)
    assert (b.last_ts, b.count, b.value) == (
        a.last_ts,
        pytest.approx(a.count),
        pytest.approx(a.value),
    )


def test_no_action_yet_scores_zero():
    assert RfmTracker().scores(T0, HALF_LIFE, DAY_MS, 1.0, 1.0) == (0.0, 0.0, 0.0)


def test_dynamic_weights_follow_the_formula_and_are_normalized():
    p = RfmParameters(base_r=0.4, base_f=0.3, base_m=0.3, a=0.3, b=0.2, g=0.4, d=-0.2)
    # w_R = 0.4 + 0.3*1 + 0.2*0.5 = 0.8; w_F = 0.3 + 0.4*0.5 = 0.5; w_M = 0.3 - 0.2*1 = 0.1
    weights = dynamic_weights(
        p, session_recency=1.0, category_affinity=0.5, intent_strength=0.5, price_sensitivity=1.0
    )
    assert weights == pytest.approx((0.8 / 1.4, 0.5 / 1.4, 0.1 / 1.4))


def test_negative_weights_are_clipped():
    p = RfmParameters(base_r=0.0, base_f=1.0, base_m=0.1, a=0.0, b=0.0, g=0.0, d=-1.0)
    assert dynamic_weights(p, 0, 0, 0, 1.0) == (0.0, 1.0, 0.0)


def test_per_category_parameters_override_only_what_they_set():
    rfm = Rfm(a=0.3, per_category={"books": RfmParameters(a=0.9)})
    assert parameters_for(rfm, "books").a == 0.9
    assert parameters_for(rfm, "books").base_r == rfm.base_r
    assert parameters_for(rfm, "toys") == parameters_for(rfm, None)
    assert parameters_for(rfm, "toys").a == 0.3


def test_lifetime_purchases_are_exact_whatever_the_arrival_order():
    a, b = LifetimePurchases(), LifetimePurchases()
    purchases = [(3 * DAY_MS, 20.0), (DAY_MS, 10.0), (9 * DAY_MS, 60.0)]
    for ts, total in purchases:
        a.add(ts, total)
    for ts, total in sorted(purchases):
        b.add(ts, total)
    assert a == b
    assert (a.count, a.total, a.mean(), a.first_ts) == (3, 90.0, 30.0, DAY_MS)
    assert a.days_since(12 * DAY_MS) == 3.0
    assert LifetimePurchases().days_since(DAY_MS) is None


def test_quintile_scores_rank_recent_frequent_big_spenders_highest():
    edges = RfmBreakpoints.learn(
        days=[float(d) for d in range(1, 101)],
        counts=[1.0] * 60 + [2.0] * 20 + [5.0] * 20,
        means=[float(m) for m in range(10, 1010, 10)],
    )
    assert edges.recency_days == (21.0, 41.0, 61.0, 81.0)
    best = LifetimePurchases(6, 6 * 2000.0, 0, 100 * DAY_MS)
    worst = LifetimePurchases(1, 5.0, 0, 0)
    assert edges.scores(best, 100 * DAY_MS) == (5, 5, 5)
    assert edges.scores(worst, 365 * DAY_MS) == (1, 1, 1)
    assert edges.scores(LifetimePurchases(), DAY_MS) is None
    assert RfmBreakpoints.from_json(edges.to_json()) == edges
