"""How a UserProfile is kept in Flink keyed state: one typed row (Flink's own serializers, no
pickling), with arrays and maps for the variable parts. `to_row` and `from_row` are exact
inverses; the unit tests round-trip them."""

from __future__ import annotations

from pyflink.common import Row, Types

from conf.settings import Profile as ProfileSettings
from udfs.history import RecentEvent, RecentEvents
from udfs.profile import UserProfile
from udfs.rfm import RfmTracker
from udfs.sessions import OpenSession, Sessions
from udfs.signature import Baseline, TransitionModel
from udfs.trends import Trends

LONGS = Types.PRIMITIVE_ARRAY(Types.LONG())
INTS = Types.PRIMITIVE_ARRAY(Types.INT())
DOUBLES = Types.PRIMITIVE_ARRAY(Types.DOUBLE())
STRINGS = Types.BASIC_ARRAY(Types.STRING())

TRACKER = Types.ROW_NAMED(
    ["last_ts", "ref_ts", "count", "value"],
    [Types.LONG(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE()],
)
SESSION_FIELDS = [
    ("session_id", Types.STRING()),
    ("start", Types.LONG()),
    ("end", Types.LONG()),
    ("events", Types.INT()),
    ("page_views", Types.INT()),
    ("product_views", Types.INT()),
    ("searches", Types.INT()),
    ("cart_adds", Types.INT()),
    ("checkouts", Types.INT()),
    ("purchases", Types.INT()),
    ("revenue", Types.DOUBLE()),
    ("dwell_ms", Types.LONG()),
    ("max_scroll", Types.DOUBLE()),
    ("cart_value", Types.DOUBLE()),
    ("step_ts", LONGS),
    ("step_order", LONGS),
    ("step_state", INTS),
]
SESSION = Types.ROW_NAMED([n for n, _ in SESSION_FIELDS], [t for _, t in SESSION_FIELDS])
STATE_FIELDS = [
    ("user_id", Types.STRING()),
    ("version", Types.LONG()),
    ("first_ts", Types.LONG()),
    ("last_ts", Types.LONG()),
    ("events", Types.LONG()),
    ("late_events", Types.LONG()),
    # layer 1: parallel arrays, one entry per recent event
    ("recent_ts", LONGS),
    ("recent_order", LONGS),
    ("recent_state", INTS),
    ("recent_category", STRINGS),
    ("recent_amount", DOUBLES),
    # layer 2
    ("trends_ref_ts", Types.LONG()),
    ("trend_counts", DOUBLES),
    ("dwell_s", DOUBLES),
    ("scroll", DOUBLES),
    ("price_log_ratio", DOUBLES),
    ("discounts", Types.DOUBLE()),
    ("attention", Types.MAP(Types.STRING(), Types.DOUBLE())),
    ("purchases", TRACKER),
    ("engagement", TRACKER),
    ("session_starts", TRACKER),
    ("recent_starts", TRACKER),
    ("carts", TRACKER),
    ("open_sessions", Types.OBJECT_ARRAY(SESSION)),
    ("closed_sessions", Types.MAP(Types.STRING(), Types.LONG())),
    ("last_closed_end", Types.LONG()),
    ("last_closed_gap", Types.LONG()),
    # layer 3
    ("transitions", Types.MAP(Types.INT(), Types.DOUBLE())),
    ("baseline_n", Types.INT()),
    ("baseline_mean", DOUBLES),
    ("baseline_var", DOUBLES),
    ("reach", DOUBLES),  # flattened rows; empty while the prior applies
    ("last_session_metrics", DOUBLES),  # empty when there is none
]
PROFILE_STATE = Types.ROW_NAMED([n for n, _ in STATE_FIELDS], [t for _, t in STATE_FIELDS])


def _tracker_row(t: RfmTracker) -> Row:
    return Row(t.last_ts, t.ref_ts, t.count, t.value)


def _tracker(row: Row) -> RfmTracker:
    return RfmTracker(row[0], row[1], row[2], row[3])


def _session_row(s: OpenSession) -> Row:
    scalars = (getattr(s, name) for name, _ in SESSION_FIELDS[:-3])
    return Row(
        *scalars,
        [t for t, _, _ in s.steps],
        [o for _, o, _ in s.steps],
        [x for _, _, x in s.steps],
    )


def _session(row: Row) -> OpenSession:
    *scalars, step_ts, step_order, step_state = row
    steps = list(zip(step_ts, step_order, step_state, strict=True))
    return OpenSession(*scalars, steps=steps)


def to_row(p: UserProfile) -> Row:
    items = p.recent.items
    t = p.trends
    reach = [x for row in p.reach for x in row] if p.reach else []
    return Row(
        p.user_id,
        p.version,
        p.first_ts,
        p.last_ts,
        p.events,
        p.late_events,
        [r.ts for r in items],
        [r.order for r in items],
        [r.state for r in items],
        [r.category for r in items],
        [r.amount for r in items],
        t.ref_ts,
        t.counts,
        t.dwell_s,
        t.scroll,
        t.price_log_ratio,
        t.discounts,
        t.attention,
        _tracker_row(p.purchases),
        _tracker_row(p.engagement),
        _tracker_row(p.session_starts),
        _tracker_row(p.recent_starts),
        _tracker_row(p.carts),
        [_session_row(s) for s in p.sessions.open.values()],
        p.sessions.closed,
        p.sessions.last_closed_end,
        p.sessions.last_closed_gap,
        p.transitions.counts,
        p.baseline.n,
        p.baseline.mean,
        p.baseline.var,
        reach,
        p.last_session_metrics or [],
    )


def from_row(row: Row, s: ProfileSettings) -> UserProfile:
    (
        user_id,
        version,
        first_ts,
        last_ts,
        events,
        late_events,
        recent_ts,
        recent_order,
        recent_state,
        recent_category,
        recent_amount,
        trends_ref_ts,
        counts,
        dwell_s,
        scroll,
        price_log_ratio,
        discounts,
        attention,
        purchases,
        engagement,
        session_starts,
        recent_starts,
        carts,
        open_sessions,
        closed_sessions,
        last_closed_end,
        last_closed_gap,
        transitions,
        baseline_n,
        baseline_mean,
        baseline_var,
        reach,
        last_session_metrics,
    ) = row
    recent = RecentEvents(
        s.recent_events,
        [
            RecentEvent(*fields)
            for fields in zip(
                recent_ts, recent_order, recent_state, recent_category, recent_amount, strict=True
            )
        ],
    )
    width = len(reach) // 12 if reach else 0
    return UserProfile(
        user_id=user_id,
        recent=recent,
        version=version,
        first_ts=first_ts,
        last_ts=last_ts,
        events=events,
        late_events=late_events,
        trends=Trends(
            trends_ref_ts,
            list(counts),
            list(dwell_s),
            list(scroll),
            list(price_log_ratio),
            discounts,
            dict(attention),
        ),
        purchases=_tracker(purchases),
        engagement=_tracker(engagement),
        session_starts=_tracker(session_starts),
        recent_starts=_tracker(recent_starts),
        carts=_tracker(carts),
        sessions=Sessions(
            {row[0]: _session(row) for row in open_sessions},
            dict(closed_sessions),
            last_closed_end,
            last_closed_gap,
        ),
        transitions=TransitionModel(dict(transitions)),
        baseline=Baseline(baseline_n, list(baseline_mean), list(baseline_var)),
        reach=[list(reach[i : i + width]) for i in range(0, len(reach), width)] if reach else None,
        last_session_metrics=list(last_session_metrics) or None,
    )
