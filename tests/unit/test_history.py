from udfs.history import RecentEvent, RecentEvents
from udfs.states import STATE_INDEX

BROWSE, VIEW, CART = STATE_INDEX["browse"], STATE_INDEX["view"], STATE_INDEX["cart"]


def recent(ts, state=BROWSE, order=0):
    return RecentEvent(ts, order, state, "", 0.0)


def test_ring_buffer_keeps_last_n_events_by_event_time():
    ring = RecentEvents(3)
    for ts in (1, 2, 3, 4, 5):
        ring.add(recent(ts))
    assert [r.ts for r in ring.items] == [3, 4, 5]
    assert ring.latest().ts == 5


def test_a_late_event_slots_into_place_and_one_older_than_all_is_not_kept():
    ring = RecentEvents(3)
    for ts in (10, 30, 40):
        ring.add(recent(ts))
    ring.add(recent(20))
    assert [r.ts for r in ring.items] == [20, 30, 40]
    ring.add(recent(5))
    assert [r.ts for r in ring.items] == [20, 30, 40]


def test_events_at_the_same_time_are_ordered_by_their_tie_breaker_whatever_the_arrival():
    a, b = recent(7, VIEW, order=2), recent(7, CART, order=1)
    one, two = RecentEvents(5), RecentEvents(5)
    one.add(a)
    one.add(b)
    two.add(b)
    two.add(a)
    assert one.items == two.items == [b, a]


def test_bigrams_count_consecutive_states_most_frequent_first():
    ring = RecentEvents(10)
    for ts, state in enumerate([BROWSE, VIEW, VIEW, CART, BROWSE, VIEW]):
        ring.add(recent(ts, state))
    assert ring.bigrams(top=2) == [("browse>view", 2), ("cart>browse", 1)]
