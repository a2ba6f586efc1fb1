"""Attribution windows in event time: the edges, several decisions waiting, responses kept, one
outcome per decision."""

from dataclasses import replace

from tests.unit.dataclass_fields import differences, fields_at_default
from udfs.attribution import Attribution, Pending

T0 = 1_767_225_600_000
WINDOW = 24 * 3_600_000


def pending(decision_id, ts, action="discount_offer"):
    return Pending(decision_id, action, ts, "abandonment_offer", "discount_10", True)


def test_a_purchase_inside_the_window_converts():
    a = Attribution("u1", WINDOW)
    a.decided(pending("d1", T0))
    [o] = a.purchased(T0 + WINDOW - 1, 30.0)
    assert (o.converted, o.outcome_ts, o.revenue, o.decided_ts) == (True, T0 + WINDOW - 1, 30.0, T0)
    assert a.pending == [] and a.expire(T0 + 10 * WINDOW) == []


def test_the_window_edges():
    a = Attribution("u1", WINDOW)
    a.decided(pending("d1", T0))
    assert a.purchased(T0 - 1, 10.0) == []  # before the decision: not its outcome
    assert a.purchased(T0 + WINDOW, 10.0) == []  # the window is [decision, decision + window)
    [o] = a.expire(T0 + WINDOW)
    assert (o.converted, o.outcome_ts, o.revenue) == (False, T0 + WINDOW, 0.0)


def test_a_purchase_at_the_decision_time_counts():
    a = Attribution("u1", WINDOW)
    a.decided(pending("d1", T0))
    assert [o.converted for o in a.purchased(T0, 5.0)] == [True]


def test_nothing_expires_before_the_watermark_passes_the_window():
    a = Attribution("u1", WINDOW)
    a.decided(pending("d1", T0))
    assert a.expire(T0 + WINDOW - 1) == [] and a.next_deadline() == T0 + WINDOW


def test_one_purchase_converts_every_decision_waiting_and_each_gets_one_outcome():
    a = Attribution("u1", WINDOW)
    a.decided(pending("d1", T0))
    a.decided(pending("d1", T0))  # the same decision replayed
    a.decided(pending("d2", T0 + 3_600_000, "recommendation_offer"))
    outcomes = a.purchased(T0 + 7_200_000, 50.0)
    assert sorted(o.decision_id for o in outcomes) == ["d1", "d2"]
    assert a.purchased(T0 + 7_300_000, 50.0) == []


def test_a_response_is_kept_with_its_decision():
    a = Attribution("u1", WINDOW)
    a.decided(pending("d1", T0))
    a.responded("d1", "declined")
    a.responded("other", "accepted")
    [o] = a.expire(T0 + WINDOW)
    assert (o.response, o.converted) == ("declined", False)


def test_waiting_decisions_survive_the_state_round_trip():
    a = Attribution("u1", WINDOW)
    assert a.to_json() is None
    a.decided(replace(pending("d1", T0), scores=(0.4, 0.3)))
    a.responded("d1", "accepted")
    assert fields_at_default(a.pending) == [], "the fixture must set every field"
    back = Attribution.from_json("u1", WINDOW, a.to_json())
    assert differences(a.pending, back.pending) == []
