"""A user's behavioural profile: the four layers, updated event by event, and what it emits.

    layer 1  recent       last N events (udfs/history.py)
    layer 2  trends       decayed counts and statistics, sessions (udfs/trends.py, sessions.py)
    layer 3  signature    Markov transitions + baseline, refreshed on session close
    layer 4  propensities ranked probabilities of actions, recomputed on every update

Retention is per layer: `profile.ttl_ms` after the last event the short-term layers (recent
events, trends, open sessions) are dropped and the profile turns dormant, keeping its long-term
layer (signature, baseline, decayed and exact RFM counters) until `profile.long_term_ttl_ms`.

Everything is in event time and tolerant of out-of-order arrival: the same events give the same
profile whatever order they come in, as long as none is later than its session (see
`Sessions.add`). The Flink adapter (jobs/profile.py) only loads, stores and calls this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from conf.settings import Profile as ProfileSettings
from udfs import features as feature_maths
from udfs.decay import decay
from udfs.events import Event, PageView, ProductView, Purchase
from udfs.history import RecentEvent, RecentEvents, tie_breaker
from udfs.model_features import FeatureVector, feature_vector
from udfs.rfm import LifetimePurchases, RfmBreakpoints, RfmTracker
from udfs.sessions import BASELINE_METRICS, Sessions, SessionSummary
from udfs.signature import Baseline, TransitionModel, prior_reach, reach_within
from udfs.states import CHURN, PROPENSITY_TARGETS, STATE_INDEX, STATE_OF, STATES
from udfs.timeunits import DAY_MS, MINUTE_MS
from udfs.trends import Trends, mean_and_std

TARGET_NAMES = tuple(PROPENSITY_TARGETS)
TARGET_STATES = tuple(PROPENSITY_TARGETS.values())

# Typed columns of a profile record (PostgreSQL `user_profiles`, and the Kafka value's fields).
PROFILE_COLUMNS = (
    "user_id",
    "version",
    "as_of_ts",
    "events",
    "sessions",
    "engagement_score",
    "category_affinity",
    "top_category",
    "price_sensitivity",
    "intent_strength",
    "session_recency",
    "rfm_purchase_score",
    "rfm_engagement_score",
    "deviation",
    "propensity_purchase",
    "propensity_add_to_cart",
    "propensity_checkout_start",
    "propensity_churn",
    "top_propensity",
    "dormant",
    "purchase_count",
    "spend_total",
    "spend_mean",
    "days_since_purchase",
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "rfm_standard_score",
)


def event_amount(event: Event) -> tuple[str, float]:
    """The category and the amount shown for an event in the recent history."""
    data = event.data
    if isinstance(data, PageView):
        return data.category, data.dwell_ms / 1000.0
    if isinstance(data, ProductView):
        return data.category, data.price
    if isinstance(data, Purchase):
        return "", data.total
    return "", float(getattr(data, "price", 0.0) or 0.0)


def current_session(session) -> dict[str, Any] | None:
    """What the user has done so far in the open session with the latest activity."""
    if session is None:
        return None
    return {
        "events": session.events,
        "minutes": (session.end - session.start) / MINUTE_MS,
        "product_views": session.product_views,
        "cart_adds": session.cart_adds,
        "checkouts": session.checkouts,
        "purchases": session.purchases,
        "cart_value": round(session.cart_value, 2),
    }


def standard_rfm(
    lifetime: LifetimePurchases,
    as_of_ts: int,
    breakpoints: RfmBreakpoints | None,
    weights: tuple[float, float, float],
) -> dict[str, Any]:
    """Standard RFM: exact lifetime purchases as of the profile time, their quintile scores and
    those scores under the same dynamic weights as the decayed RFM (a 1-5 scale)."""
    quintiles = breakpoints.scores(lifetime, as_of_ts) if breakpoints else None
    return {
        "purchase_count": lifetime.count,
        "spend_total": lifetime.total,
        "spend_mean": lifetime.mean(),
        "days_since_purchase": lifetime.days_since(as_of_ts),
        "rfm_r": quintiles[0] if quintiles else None,
        "rfm_f": quintiles[1] if quintiles else None,
        "rfm_m": quintiles[2] if quintiles else None,
        "rfm_standard_score": (
            sum(w * q for w, q in zip(weights, quintiles, strict=True)) if quintiles else None
        ),
    }


@dataclass(frozen=True, slots=True)
class ProfileSnapshot:
    columns: dict[str, Any]  # PROFILE_COLUMNS
    details: dict[str, Any]  # everything else, JSON-ready (a few keys unless `full`)
    features: FeatureVector  # what the models see
    segment: tuple[float, ...] = ()  # udfs.features.Features.segment


@dataclass(slots=True)
class UserProfile:
    user_id: str
    recent: RecentEvents
    version: int = 0  # updates applied: events plus closed sessions
    first_ts: int | None = None
    last_ts: int | None = None
    events: int = 0
    late_events: int = 0  # applied to the profile after their session had closed
    trends: Trends = field(default_factory=lambda: Trends())
    purchases: RfmTracker = field(default_factory=RfmTracker)
    engagement: RfmTracker = field(default_factory=RfmTracker)
    session_starts: RfmTracker = field(default_factory=RfmTracker)
    # The same session starts with a short memory (recency half-life), to see a pace change.
    recent_starts: RfmTracker = field(default_factory=RfmTracker)
    # Sessions with a cart add (count) and those of them that ended without a purchase (value).
    carts: RfmTracker = field(default_factory=RfmTracker)
    sessions: Sessions = field(default_factory=Sessions)
    transitions: TransitionModel = field(default_factory=TransitionModel)
    baseline: Baseline = field(default_factory=Baseline)
    # reach[state][target]: propensity table from the transition model; None until a session
    # has closed (the prior's table applies).
    reach: list[list[float]] | None = None
    last_session_metrics: list[float] | None = None
    lifetime: LifetimePurchases = field(default_factory=LifetimePurchases)
    # Set when the short-term layers expired; a new event wakes the profile up.
    dormant_since: int | None = None

    @staticmethod
    def new(user_id: str, s: ProfileSettings) -> UserProfile:
        return UserProfile(user_id, RecentEvents(s.recent_events))

    # ------------------------------------------------------------ updates

    def apply(self, event: Event, watermark: int, s: ProfileSettings) -> None:
        """Adds one behavioural event (not a consent update) to every layer."""
        state = STATE_OF[event.type]
        order = tie_breaker(event.event_id)
        ts = event.ts
        self.version += 1
        self.events += 1
        self.dormant_since = None
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        category, amount = event_amount(event)
        self.recent.add(RecentEvent(ts, order, state, category, amount))
        self.trends.add(event, state, s.half_life_ms, s.price.reference_prices)
        rfm_half_life = s.rfm.half_life_days * DAY_MS
        if isinstance(event.data, Purchase):
            self.purchases.add(ts, event.data.total, rfm_half_life)
            self.lifetime.add(ts, event.data.total)
        value = s.rfm.engagement_values.get(event.type.value)
        if value:
            self.engagement.add(ts, value, rfm_half_life)
        if self.sessions.add(event, state, order, watermark, s.session_gap_ms) == "late":
            self.late_events += 1

    def close_sessions(self, watermark: int, s: ProfileSettings) -> list[SessionSummary]:
        """Closes the sessions whose inactivity gap has passed and refreshes layer 3 from them."""
        done = self.sessions.due(watermark, s.session_gap_ms, s.allowed_lateness_ms)
        for session in done:
            self.session_starts.add(session.start, 0.0, s.rfm.half_life_days * DAY_MS)
            self.recent_starts.add(session.start, 0.0, s.recency_half_life_ms)
            if session.cart_adds:
                abandoned = 0.0 if session.purchases else 1.0
                self.carts.add(session.start, abandoned, s.rfm.half_life_days * DAY_MS)
            self.transitions.add_session(session.path, s.transition_memory)
            metrics = session.metrics()
            self.baseline.update(metrics, s.baseline_window)
            self.last_session_metrics = metrics
            self.version += 1
        if done:
            matrix = self.transitions.matrix(s.prior_strength)
            self.reach = reach_within(matrix, list(TARGET_STATES), s.propensity_steps)
        return [SessionSummary.of(self.user_id, session) for session in done]

    def timers(self, s: ProfileSettings) -> set[int]:
        """Event times at which this profile needs a call: session closes and expiry."""
        due = {session.end + s.session_gap_ms for session in self.sessions.open.values()}
        if self.last_ts is not None:
            due.add(self.expires_at(s))
        return due

    def expires_at(self, s: ProfileSettings) -> int:
        """When the next layer expires: the short-term ones, or for a dormant profile the rest."""
        retention = s.long_term_ttl_ms if self.dormant_since is not None else s.ttl_ms
        return (self.last_ts or 0) + retention

    def expire_short_term(self, now: int, s: ProfileSettings) -> None:
        """Drops the short-term layers and keeps the long-term one (the profile is dormant).
        Open sessions were closed long before (the session gap is far below the ttl)."""
        self.recent = RecentEvents(s.recent_events)
        self.trends = Trends()
        self.sessions = Sessions(
            last_closed_end=self.sessions.last_closed_end,
            last_closed_gap=self.sessions.last_closed_gap,
        )
        self.recent_starts = RfmTracker()
        self.last_session_metrics = None
        self.dormant_since = now
        self.version += 1

    # ------------------------------------------------------------ layer 4 and features

    def propensities(self, s: ProfileSettings) -> list[tuple[str, float]]:
        """Ranked (action, probability): reaching each target state within the next
        `propensity_steps` moves from the current state, plus churn."""
        latest = self.recent.latest()
        state = latest.state if latest else STATE_INDEX["browse"]
        table = self.reach or prior_reach(s.prior_strength, TARGET_STATES, s.propensity_steps)
        scores = {name: table[state][i] for i, name in enumerate(TARGET_NAMES)}
        scores[CHURN] = self.churn(s)
        return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))

    def churn(self, s: ProfileSettings) -> float:
        """P(no new session within the horizon) = exp(-rate * horizon): a Poisson session rate
        rate = (decayed session starts + prior sessions) / (decayed exposure days + prior days),
        decayed with the RFM half-life so that a user who comes less often is seen to. Closed
        sessions are kept in `session_starts`; open ones are added as they stand."""
        if self.last_ts is None or self.first_ts is None:
            return 1.0
        half_life = s.rfm.half_life_days * DAY_MS
        starts = self.session_starts
        count = starts.count * decay(self.last_ts - (starts.ref_ts or self.last_ts), half_life)
        count += sum(decay(self.last_ts - o.start, half_life) for o in self.sessions.open.values())
        lifetime = self.last_ts - self.first_ts
        exposure_ms = half_life / math.log(2) * (1.0 - decay(lifetime, half_life))
        rate = (count + s.churn_prior_sessions) / (exposure_ms / DAY_MS + s.churn_prior_days)
        return math.exp(-rate * s.churn_horizon_days)

    def abandon_rate(self) -> float:
        """Share of the user's carted sessions that ended without a purchase (decayed), with
        one abandoned and one completed session as a prior."""
        return (self.carts.value + 1.0) / (self.carts.count + 2.0)

    def session_trend(self, s: ProfileSettings) -> float:
        """log of the recent session rate over the long-term one: below 0 when the user comes
        less often than they used to. Both rates are decayed counts over their exposure."""
        if self.last_ts is None or self.first_ts is None:
            return 0.0
        lifetime = self.last_ts - self.first_ts

        def rate(tracker: RfmTracker, half_life: float) -> float:
            count = tracker.count * decay(
                self.last_ts - (tracker.ref_ts or self.last_ts), half_life
            )
            exposure = half_life / math.log(2) * (1.0 - decay(lifetime, half_life))
            return (count + 0.5) / (exposure / DAY_MS + 0.5)

        recent = rate(self.recent_starts, s.recency_half_life_ms)
        long_term = rate(self.session_starts, s.rfm.half_life_days * DAY_MS)
        return math.log(recent / long_term)

    def current_session_metrics(self) -> list[float] | None:
        session = self.sessions.current()
        return session.metrics() if session else self.last_session_metrics

    def session_recency(self, s: ProfileSettings) -> float:
        return feature_maths.session_recency(self.sessions.return_gap(), s)

    def snapshot(
        self, s: ProfileSettings, breakpoints: RfmBreakpoints | None = None, full: bool = True
    ) -> ProfileSnapshot:
        """The profile as of its last event. `breakpoints` (registered by `make train`) give the
        standard R, F and M quintile scores; without them those columns are empty. Unless
        `full`, the details only the profile record shows (segment, RFM weights, category
        shares, bigrams, the recent events) are left out: scoring does not read them."""
        now = self.last_ts or 0
        f = feature_maths.compute(
            self.trends, self.purchases, self.engagement, self.session_recency(s), now, s
        )
        ranked = self.propensities(s)
        by_name = dict(ranked)
        current = self.current_session_metrics()
        z = self.baseline.z_scores(current, s.baseline_min_sessions) if current else []
        deviation = math.sqrt(sum(x * x for x in z) / len(z)) if z else 0.0
        columns = {
            "user_id": self.user_id,
            "version": self.version,
            "as_of_ts": now,
            "events": self.events,
            "sessions": self.baseline.n,
            "engagement_score": f.engagement_score,
            "category_affinity": f.category_affinity,
            "top_category": f.top_category,
            "price_sensitivity": f.price_sensitivity,
            "intent_strength": f.intent_strength,
            "session_recency": f.session_recency,
            "rfm_purchase_score": f.rfm_purchase_score,
            "rfm_engagement_score": f.rfm_engagement_score,
            "deviation": deviation,
            "propensity_purchase": by_name["purchase"],
            "propensity_add_to_cart": by_name["add_to_cart"],
            "propensity_checkout_start": by_name["checkout_start"],
            "propensity_churn": by_name[CHURN],
            "top_propensity": ranked[0][0],
            "dormant": self.dormant_since is not None,
            **standard_rfm(self.lifetime, now, breakpoints, f.rfm_weights),
        }
        dwell_mean, dwell_std = mean_and_std(self.trends.dwell_s)
        scroll_mean, scroll_std = mean_and_std(self.trends.scroll)
        latest = self.recent.latest()
        session = current_session(self.sessions.current())
        abandon_rate, session_trend = self.abandon_rate(), self.session_trend(s)
        signature = self.transitions.summary(s.prior_strength)
        features = feature_vector(
            f,
            by_name,
            deviation,
            self.baseline.n,
            self.events,
            dwell_mean,
            scroll_mean,
            abandon_rate,
            session_trend,
            self.trends.counts,
            signature,
            z,
            latest.state if latest else None,
            session,
        )
        propensities = [{"action": name, "p": p} for name, p in ranked]
        if not full:
            # What scoring reads besides the features; the rest only a profile record shows.
            details = {
                "propensities": propensities,
                "rfm_purchase": list(f.rfm_purchase),
                "session": session,
            }
            return ProfileSnapshot(columns, details, features, f.segment)
        details = {
            "propensities": propensities,
            "rfm_purchase": list(f.rfm_purchase),
            "rfm_engagement": list(f.rfm_engagement),
            "trend_counts": {STATES[i]: c for i, c in enumerate(self.trends.counts) if c > 0},
            "dwell_s": {"mean": dwell_mean, "std": dwell_std},
            "scroll": {"mean": scroll_mean, "std": scroll_std},
            "deviation_z": dict(zip(BASELINE_METRICS, z, strict=False)),
            "current_state": STATES[latest.state] if latest else None,
            "session": session,
            "abandon_rate": abandon_rate,
            "signature": signature,
            "session_trend": session_trend,
            "segment": list(f.segment),
            "rfm_weights": list(f.rfm_weights),
            "category_shares": self.trends.category_shares(),
            "bigrams": [{"pair": pair, "count": n} for pair, n in self.recent.bigrams()],
            "recent": [
                {"ts": r.ts, "state": STATES[r.state], "category": r.category, "amount": r.amount}
                for r in self.recent.items
            ],
            "open_sessions": len(self.sessions.open),
            "late_events": self.late_events,
        }
        return ProfileSnapshot(columns, details, features, f.segment)
