"""Point-in-time training sets: a user's events replayed in event-time order through the same
UserProfile the profile job runs, with the job's retention (short-term layers expire after
`profile.ttl_ms`, the whole profile after `profile.long_term_ttl_ms`). Features at a sample time
come from events before it only; labels come from what happened after it (models.labels):

- `cart`: at every event of a session after its first cart add, until a purchase (the moments
  the job scores an open cart). abandonment = the session ends without a purchase.
- `session_end`: when a session closes (its last event plus the gap). drift = the engagement
  of the next drift_window_days (the engagement-score contributions of its events: dwell
  minutes, product views, searches) is below drift_fraction of the last window's; purchase = a
  purchase within purchase_horizon_days. A sample whose window runs past the end of the history
  gets no such label.

One user at a time: `replay_user` needs only that user's events, so a history of any size is
read user by user (models/history.py) and memory holds one user's events plus what is kept.
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate

from conf.settings import Models
from conf.settings import Profile as ProfileSettings
from udfs.events import Event, EventType, PageView
from udfs.model_features import COHORT_FEATURES, vector
from udfs.profile import UserProfile
from udfs.rfm import LifetimePurchases
from udfs.timeunits import DAY_MS, MINUTE_MS

TARGETS = ("abandonment", "drift", "purchase")


@dataclass(slots=True)
class Sample:
    user_id: str
    kind: str  # cart | session_end
    ts: int  # features use events up to this time only
    features: array  # FEATURES order, float64
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class UserReplay:
    """What one user's history gives training."""

    samples: list[Sample]
    cohort_before: array | None  # cohort features as of `split_ts` (None: no events before)
    cohort_at_end: array | None  # as of the end of the history (None: forgotten by then)
    lifetime: LifetimePurchases  # exact purchases as of the end


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


def cohort_vector(profile: UserProfile, s: ProfileSettings) -> array:
    return array("d", vector(profile.snapshot(s, full=False), COHORT_FEATURES))


class Replay:
    """One user's profile moved through event time as the job moves it: sessions close when
    their gap has passed, layers expire when their retention has."""

    def __init__(self, user_id: str, s: ProfileSettings, on_close=None):
        self.user_id, self.s = user_id, s
        self.profile: UserProfile | None = None
        # Called with the time a session closed, the profile as it stands then (before any
        # expiry that follows).
        self.on_close = on_close or (lambda ts: None)

    def advance(self, now: int) -> None:
        profile, s = self.profile, self.s
        if profile is None:
            return
        while profile.expires_at(s) <= now:
            expiry = profile.expires_at(s)
            self._close(expiry)
            if profile.dormant_since is not None:
                self.profile = None  # the long-term layer expired too
                return
            profile.expire_short_term(expiry, s)
        self._close(now)

    def _close(self, now: int) -> None:
        closed = self.profile.close_sessions(now, self.s)
        for session in closed:
            self.on_close(session.end_ts + self.s.session_gap_ms)

    def apply(self, event: Event) -> None:
        self.advance(event.ts)
        if self.profile is None:
            self.profile = UserProfile.new(self.user_id, self.s)
        self.profile.apply(event, event.ts, self.s)


def replay_user(
    events: list[Event], s: ProfileSettings, m: Models, end_ts: int, split_ts: int | None = None
) -> UserReplay:
    """Replays one user's events (any order; sorted here) up to `end_ts`, the end of the
    history, and returns the labelled samples and what the cohorts and RFM breakpoints need."""
    events = sorted(
        (e for e in events if e.type is not EventType.CONSENT_UPDATE),
        key=lambda e: (e.ts, e.event_id),
    )
    if not events:
        return UserReplay([], None, None, LifetimePurchases())
    ends: list[Sample] = []
    carts: list[tuple[Sample, str]] = []  # waiting for their session's outcome
    purchased_at: dict[str, int] = {}  # session -> first purchase time
    open_carts: set[str] = set()
    cohort_before, split_passed = None, split_ts is None

    def sample(ts: int, kind: str) -> Sample:
        return Sample(
            replay.user_id, kind, ts, array("d", vector(replay.profile.snapshot(s, full=False)))
        )

    replay = Replay(events[0].user_id, s, lambda ts: ends.append(sample(ts, "session_end")))
    for event in events:
        if not split_passed and event.ts >= split_ts:
            # The user as of the hold-out start (None if they had not come yet).
            split_passed = True
            replay.advance(split_ts)
            if replay.profile is not None:
                cohort_before = cohort_vector(replay.profile, s)
        replay.apply(event)
        session = event.session_id
        if event.type is EventType.PURCHASE:
            purchased_at.setdefault(session, event.ts)
            open_carts.discard(session)
        elif event.type is EventType.ADD_TO_CART and session not in purchased_at:
            open_carts.add(session)
        if session in open_carts:
            carts.append((sample(event.ts, "cart"), session))
    if not split_passed:
        replay.advance(split_ts)
        cohort_before = cohort_vector(replay.profile, s) if replay.profile else None
    replay.advance(end_ts)
    if replay.profile is None:
        at_end, lifetime = None, LifetimePurchases()
    else:
        at_end, lifetime = cohort_vector(replay.profile, s), replay.profile.lifetime

    for cart, session in carts:
        cart.labels["abandonment"] = 0 if session in purchased_at else 1
    label_session_ends(ends, events, sorted(purchased_at.values()), s, m, end_ts)
    return UserReplay(
        [c for c, _ in carts] + [e for e in ends if e.ts <= end_ts], cohort_before, at_end, lifetime
    )


def label_session_ends(
    ends: list[Sample],
    events: list[Event],
    purchases: list[int],
    s: ProfileSettings,
    m: Models,
    end_ts: int,
) -> None:
    labels = m.labels
    window = int(labels.drift_window_days * DAY_MS)
    horizon = int(labels.purchase_horizon_days * DAY_MS)
    times = [e.ts for e in events]
    totals = [0.0, *accumulate(engagement_value(e, s) for e in events)]

    def engagement_between(start: int, end: int) -> float:  # events in (start, end]
        return totals[bisect.bisect_right(times, end)] - totals[bisect.bisect_right(times, start)]

    for end in ends:
        if end.ts + window <= end_ts:
            past = engagement_between(end.ts - window, end.ts)
            future = engagement_between(end.ts, end.ts + window)
            end.labels["drift"] = int(future < labels.drift_fraction * past)
        if end.ts + horizon <= end_ts:
            i = bisect.bisect_right(purchases, end.ts)
            end.labels["purchase"] = int(i < len(purchases) and purchases[i] <= end.ts + horizon)


def user_samples(events: list[Event], s: ProfileSettings, m: Models, end_ts: int) -> list[Sample]:
    return replay_user(events, s, m, end_ts).samples


class Reservoir:
    """A uniform sample of at most `size` items of a stream (Algorithm R), the same for the
    same stream and seed: training memory stays bounded however long the history."""

    def __init__(self, size: int, seed: int):
        self.size, self.seen, self.items = size, 0, []
        self.random = random.Random(seed)

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        j = self.random.randrange(self.seen)
        if j < self.size:
            self.items[j] = item


def build(events: Iterable[Event], s: ProfileSettings, m: Models, end_ts: int) -> list[Sample]:
    """Samples of every user of an in-memory log, in time order. `end_ts` is where the log
    ends: labels need their whole window before it."""
    by_user: dict[str, list[Event]] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append(event)
    samples = [x for user in sorted(by_user) for x in user_samples(by_user[user], s, m, end_ts)]
    return sorted(samples, key=lambda x: (x.ts, x.user_id, x.kind))
