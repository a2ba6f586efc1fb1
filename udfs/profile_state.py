"""How a user's state is kept in Flink keyed state: one value per user (UserState: the profile,
its timer bookkeeping, its cohort, its action ledger and the decisions awaiting an outcome) as
one tuple of plain values (numbers, strings, lists, dicts). In thread mode PyFlink pickles every
state value, whatever type it is declared with; a plain tuple pickles in C, small, where a Row
pickles through Python code with its field names. `pack` and `unpack` are exact inverses; the
unit tests round-trip them. A profile stored before the exact lifetime counters existed (33
positions) is read with them at zero and awake."""

from __future__ import annotations

from dataclasses import dataclass, field

from conf.settings import Profile as ProfileSettings
from udfs.cohort_assignment import CohortState
from udfs.history import RecentEvent, RecentEvents
from udfs.profile import UserProfile
from udfs.rfm import LifetimePurchases, RfmTracker
from udfs.schedule import Schedule
from udfs.sessions import OpenSession, Sessions
from udfs.signature import Baseline, TransitionModel
from udfs.trends import Trends

# An open session's scalar fields, in their tuple order (its steps follow as three lists).
SESSION_FIELDS = (
    "session_id",
    "start",
    "end",
    "events",
    "page_views",
    "product_views",
    "searches",
    "cart_adds",
    "checkouts",
    "purchases",
    "revenue",
    "dwell_ms",
    "max_scroll",
    "cart_value",
)


@dataclass(slots=True)
class UserState:
    """Everything kept for one user; `profile` is None before the first event and after a
    purge or expiry."""

    profile: UserProfile | None = None
    schedule: Schedule = field(default_factory=Schedule)
    cohort: CohortState | None = None
    ledger: str | None = None  # udfs.actions.Ledger as JSON
    awaiting: str | None = None  # udfs.attribution.Attribution as JSON, None when empty
    # Event ids seen within the allowed lateness, with their event time: a copy of one is a
    # duplicate. Kept in the one state value (a separate map state cost two JVM calls an event).
    seen: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        """Forgets everything (a purge or expiry)."""
        self.profile, self.schedule, self.cohort = None, Schedule(), None
        self.ledger = self.awaiting = None
        self.seen = {}

    def remember(self, event_id: str, ts: int, limit: int) -> None:
        """Keeps the event id; beyond `limit` ids the oldest goes (a copy of it would count
        again: only a user with more than `limit` events within the allowed lateness)."""
        self.seen[event_id] = ts
        if len(self.seen) > limit:
            del self.seen[min(self.seen, key=self.seen.__getitem__)]

    def forget_seen(self, before_ts: int) -> None:
        """Event ids older than the lateness horizon: any copy of them is refused as late."""
        if any(ts < before_ts for ts in self.seen.values()):
            self.seen = {e: ts for e, ts in self.seen.items() if ts >= before_ts}


def pack(state: UserState) -> tuple:
    sc, cohort = state.schedule, state.cohort
    return (
        to_tuple(state.profile) if state.profile is not None else None,
        (sc.wake_at, sc.last_emit, sc.emit_due, sc.outcome_due),
        (
            (
                cohort.cohort,
                cohort.since_ts,
                cohort.model_version,
                cohort.challenger,
                cohort.challenger_since,
                cohort.assessed_changes,
                cohort.dense,
            )
            if cohort is not None
            else None
        ),
        state.ledger,
        state.awaiting,
        state.seen,
    )


def holds_seen_ids(value: tuple) -> bool:
    """Whether a stored value has the user's seen event ids (those stored before do not)."""
    return len(value) > 5


def unpack(value: tuple | None, s: ProfileSettings) -> UserState:
    if value is None:
        return UserState()
    profile, schedule, cohort, ledger, awaiting, *seen = value
    return UserState(
        from_tuple(profile, s) if profile is not None else None,
        Schedule(*schedule),
        CohortState(*cohort) if cohort is not None else None,
        ledger,
        awaiting,
        # Stored before the ids moved in (they were in a map state of their own): none.
        seen[0] if seen else {},
    )


def _tracker_tuple(t: RfmTracker) -> tuple:
    return (t.last_ts, t.ref_ts, t.count, t.value)


def _tracker(value: tuple) -> RfmTracker:
    return RfmTracker(*value)


def _session_tuple(s: OpenSession) -> tuple:
    return (
        *(getattr(s, name) for name in SESSION_FIELDS),
        [t for t, _, _ in s.steps],
        [o for _, o, _ in s.steps],
        [x for _, _, x in s.steps],
    )


def _session(value: tuple) -> OpenSession:
    *scalars, step_ts, step_order, step_state = value
    steps = list(zip(step_ts, step_order, step_state, strict=True))
    return OpenSession(*scalars, steps=steps)


def to_tuple(p: UserProfile) -> tuple:
    """The profile's fields in a fixed order; layer 1 (the recent events) as parallel lists."""
    items = p.recent.items
    t = p.trends
    reach = [x for row in p.reach for x in row] if p.reach else []  # flattened rows
    return (
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
        _tracker_tuple(p.purchases),
        _tracker_tuple(p.engagement),
        _tracker_tuple(p.session_starts),
        _tracker_tuple(p.recent_starts),
        _tracker_tuple(p.carts),
        [_session_tuple(s) for s in p.sessions.open.values()],
        p.sessions.closed,
        p.sessions.last_closed_end,
        p.sessions.last_closed_gap,
        p.transitions.counts,
        p.baseline.n,
        p.baseline.mean,
        p.baseline.var,
        reach,
        p.last_session_metrics or [],
        (p.lifetime.count, p.lifetime.total, p.lifetime.first_ts, p.lifetime.last_ts),
        p.dormant_since,
    )


# The positions a profile had before the lifetime counters and the dormant mark were added.
BEFORE_LIFETIME = 33


def from_tuple(value: tuple, s: ProfileSettings) -> UserProfile:
    if len(value) == BEFORE_LIFETIME:
        value = (*value, (0, 0.0, None, None), None)
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
        lifetime,
        dormant_since,
    ) = value
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
            {session[0]: _session(session) for session in open_sessions},
            dict(closed_sessions),
            last_closed_end,
            last_closed_gap,
        ),
        transitions=TransitionModel(dict(transitions)),
        baseline=Baseline(baseline_n, list(baseline_mean), list(baseline_var)),
        reach=[list(reach[i : i + width]) for i in range(0, len(reach), width)] if reach else None,
        last_session_metrics=list(last_session_metrics) or None,
        lifetime=LifetimePurchases(*lifetime),
        dormant_since=dormant_since,
    )
