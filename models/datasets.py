"""Point-in-time training sets: the event log replayed, user by user in event-time order,
through the same UserProfile the profile job runs. Features at a sample time come from events
before it only; labels come from what happened after it.

Samples and labels:
- `cart`: at every event of a session after its first cart add, until a purchase (the moments
  the job scores an open cart). abandonment = the session ends without a purchase.
- `session_end`: when a session closes (its last event plus the gap). drift = the engagement
  of the next horizon (the engagement-score contributions of its events: dwell minutes, product
  views, searches) is below (1 - drift_drop) of the last horizon's; purchase = a purchase within
  the horizon. Samples whose horizon runs past the end of the log get no such labels.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate

from conf.settings import Models
from conf.settings import Profile as ProfileSettings
from udfs.events import Event, EventType, PageView
from udfs.model_features import vector
from udfs.profile import UserProfile
from udfs.timeunits import DAY_MS, MINUTE_MS

TARGETS = ("abandonment", "drift", "purchase")


@dataclass
class Sample:
    user_id: str
    kind: str  # cart | session_end
    ts: int  # features use events up to this time only
    features: list[float]
    labels: dict[str, int] = field(default_factory=dict)


def engagement_value(event: Event, s: ProfileSettings) -> float:
    """An event's contribution to the engagement score's raw sum (see udfs/features.py)."""
    e = s.engagement
    if isinstance(event.data, PageView):
        return e.dwell_minute * event.data.dwell_ms / MINUTE_MS
    if event.type is EventType.PRODUCT_VIEW:
        return e.product_view
    if event.type is EventType.SEARCH:
        return e.search
    return 0.0


def user_samples(events: list[Event], s: ProfileSettings, m: Models, end_ts: int) -> list[Sample]:
    """Replays one user's events (any order; sorted here) and returns the labelled samples."""
    events = sorted(
        (e for e in events if e.type is not EventType.CONSENT_UPDATE),
        key=lambda e: (e.ts, e.event_id),
    )
    if not events:
        return []
    profile = UserProfile.new(events[0].user_id, s)
    horizon = int(m.horizon_days * DAY_MS)
    ends: list[Sample] = []
    carts: list[tuple[Sample, str]] = []  # waiting for their session's outcome
    purchased_at: dict[str, int] = {}  # session -> first purchase time
    open_carts: set[str] = set()

    def sample(ts: int, kind: str) -> Sample:
        return Sample(profile.user_id, kind, ts, vector(profile.snapshot(s)))

    for event in events:
        for closed in profile.close_sessions(event.ts, s):
            ends.append(sample(closed.end_ts + s.session_gap_ms, "session_end"))
        profile.apply(event, event.ts, s)
        session = event.session_id
        if event.type is EventType.PURCHASE:
            purchased_at.setdefault(session, event.ts)
            open_carts.discard(session)
        elif event.type is EventType.ADD_TO_CART and session not in purchased_at:
            open_carts.add(session)
        if session in open_carts:
            carts.append((sample(event.ts, "cart"), session))
    for closed in profile.close_sessions(2**62, s):
        ends.append(sample(closed.end_ts + s.session_gap_ms, "session_end"))

    for cart, session in carts:
        cart.labels["abandonment"] = 0 if session in purchased_at else 1
    times = [e.ts for e in events]
    totals = [0.0, *accumulate(engagement_value(e, s) for e in events)]
    purchases = sorted(purchased_at.values())

    def engagement_between(start: int, end: int) -> float:  # events in (start, end]
        return totals[bisect.bisect_right(times, end)] - totals[bisect.bisect_right(times, start)]

    for end in ends:
        if end.ts + horizon > end_ts:
            continue
        past = engagement_between(end.ts - horizon, end.ts)
        future = engagement_between(end.ts, end.ts + horizon)
        end.labels["drift"] = int(future < (1.0 - m.drift_drop) * past)
        i = bisect.bisect_right(purchases, end.ts)
        end.labels["purchase"] = int(i < len(purchases) and purchases[i] <= end.ts + horizon)
    return [c for c, _ in carts] + [e for e in ends if e.ts <= end_ts]


def build(events: Iterable[Event], s: ProfileSettings, m: Models, end_ts: int) -> list[Sample]:
    """Samples of every user, in time order. `end_ts` is where the log ends: labels need their
    whole horizon before it."""
    by_user: dict[str, list[Event]] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append(event)
    samples = [x for user in sorted(by_user) for x in user_samples(by_user[user], s, m, end_ts)]
    return sorted(samples, key=lambda x: (x.ts, x.user_id, x.kind))
