"""Reads a user's state as the profile job stored it before the state had a schema version:
one tuple of plain values in a fixed order (udfs.profile_state reads these, then stores the
user in the versioned form). Its layouts over time: a profile of 33 positions (before the
exact lifetime counters and the dormant mark) or 35; a cohort of 5 positions (before the
assessment record) or 7; a schedule of 4 (with a held-back emission time, no longer kept);
the user's value of 5 positions (before the seen event ids moved in,
which were then in a map state of their own) or 6."""

from __future__ import annotations

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


# The positions a profile had before the lifetime counters and the dormant mark were added.
BEFORE_LIFETIME = 33


def holds_seen_ids(value: tuple) -> bool:
    """Whether a stored value has the user's seen event ids (those stored before do not)."""
    return len(value) > 5


def unpack(value: tuple, s: ProfileSettings):
    """(profile, schedule, cohort, ledger, awaiting, seen ids) of a value of an old layout."""
    profile, schedule, cohort, ledger, awaiting, *seen = value
    return (
        from_tuple(profile, s) if profile is not None else None,
        Schedule(schedule[0], schedule[1], schedule[3]),  # wake_at, last_emit, outcome_due
        CohortState(*cohort) if cohort is not None else None,
        ledger,
        awaiting,
        seen[0] if seen else {},
    )


def _tracker(value: tuple) -> RfmTracker:
    return RfmTracker(*value)


def _session(value: tuple) -> OpenSession:
    *scalars, step_ts, step_order, step_state = value
    steps = list(zip(step_ts, step_order, step_state, strict=True))
    return OpenSession(*scalars, steps=steps)


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
