from tests.unit.profile_events import MINUTE, T0, cart, page, purchase, search, view
from udfs.history import tie_breaker
from udfs.sessions import Sessions
from udfs.states import STATE_OF

GAP = 30 * MINUTE
LATENESS = 120 * MINUTE


def add(sessions, e, watermark):
    return sessions.add(e, STATE_OF[e.type], tie_breaker(e.event_id), watermark, GAP)


def test_a_session_closes_when_event_time_passes_its_last_event_by_the_gap():
    sessions = Sessions()
    assert add(sessions, page(T0, dwell_ms=20_000), T0) == "opened"
    assert add(sessions, view(T0 + 10 * MINUTE), T0) == "added"
    assert sessions.due(T0 + 40 * MINUTE - 1, GAP, LATENESS) == []
    [closed] = sessions.due(T0 + 40 * MINUTE, GAP, LATENESS)
    assert (closed.start, closed.end, closed.events) == (T0, T0 + 10 * MINUTE, 2)
    assert sessions.open == {}


def test_session_summary_counts_and_metrics():
    sessions = Sessions()
    for e in (
        page(T0, dwell_ms=20_000, scroll=0.4),
        search(T0 + MINUTE),
        view(T0 + 2 * MINUTE),
        cart(T0 + 3 * MINUTE),
        page(T0 + 4 * MINUTE, dwell_ms=40_000, scroll=0.9),
        purchase(T0 + 6 * MINUTE, total=80.0),
    ):
        add(sessions, e, T0)
    [closed] = sessions.due(T0 + 6 * MINUTE + GAP, GAP, LATENESS)
    # events, minutes, product views, searches, cart adds, mean dwell seconds
    assert closed.metrics() == [6.0, 6.0, 1.0, 1.0, 1.0, 30.0]
    assert closed.path[0] == STATE_OF[page(T0).type]
    assert (closed.purchases, closed.revenue, closed.max_scroll) == (1, 80.0, 0.9)


def test_a_straggler_for_a_closed_session_is_late_and_does_not_reopen_it():
    sessions = Sessions()
    add(sessions, page(T0), T0)
    sessions.due(T0 + GAP, GAP, LATENESS)
    assert add(sessions, view(T0 + MINUTE), T0 + GAP) == "late"
    assert sessions.open == {}


def test_an_event_whose_own_gap_has_passed_does_not_open_a_session():
    sessions = Sessions()
    assert add(sessions, page(T0, session="s9"), T0 + GAP) == "late"


def test_out_of_order_events_land_in_their_own_open_sessions_and_close_oldest_first():
    sessions = Sessions()
    add(sessions, page(T0 + 60 * MINUTE, session="s2"), T0)
    add(sessions, page(T0 + 5 * MINUTE, session="s1"), T0)
    add(sessions, view(T0, session="s1"), T0)
    closed = sessions.due(T0 + 200 * MINUTE, GAP, LATENESS)
    assert [(s.session_id, s.start, s.events) for s in closed] == [
        ("s1", T0, 2),
        ("s2", T0 + 60 * MINUTE, 1),
    ]


def test_return_gap_is_the_time_since_the_activity_before_the_latest_session():
    sessions = Sessions()
    add(sessions, page(T0, session="s1"), T0)
    add(sessions, page(T0 + 10 * MINUTE, session="s1"), T0)
    assert sessions.return_gap() is None  # a first session
    add(sessions, page(T0 + 120 * MINUTE, session="s2"), T0)
    assert sessions.return_gap() == 110 * MINUTE
    sessions.due(T0 + 10 * 120 * MINUTE, GAP, LATENESS)
    assert sessions.return_gap() == 110 * MINUTE  # kept once both have closed
