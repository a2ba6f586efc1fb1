"""The feature vector the learned models see, built from a profile snapshot. The same function
runs in the job and in training (models/datasets.py), so a model never sees a feature computed
differently from the one it was trained on. FEATURES fixes the order; it is recorded with every
model."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from udfs.features import Features
from udfs.sessions import BASELINE_METRICS
from udfs.states import ACTIVE_STATES, CHURN, STATES

if TYPE_CHECKING:
    from udfs.profile import ProfileSnapshot

SHARE_FEATURES = tuple(f"share_{STATES[i]}" for i in range(ACTIVE_STATES))
SIGNATURE_FEATURES = (
    *(f"from_{STATES[i]}" for i in range(ACTIVE_STATES)),
    "view_to_cart",
    "cart_to_checkout",
    "checkout_to_purchase",
    "browse_to_exit",
    "view_to_exit",
)
CURRENT_FEATURES = tuple(f"now_{STATES[i]}" for i in range(ACTIVE_STATES))
DEVIATION_FEATURES = tuple(f"z_{metric}" for metric in BASELINE_METRICS)
SESSION_FEATURES = (
    "session_events",
    "session_minutes",
    "session_product_views",
    "session_cart_adds",
    "session_checkouts",
    "session_purchases",
)
FEATURES = (
    "engagement_score",
    "category_affinity",
    "price_sensitivity",
    "intent_strength",
    "session_recency",
    "rfm_purchase_r",
    "rfm_purchase_f",
    "rfm_purchase_m",
    "rfm_engagement_r",
    "rfm_engagement_f",
    "rfm_engagement_m",
    "deviation",
    "propensity_purchase",
    "propensity_add_to_cart",
    "propensity_checkout_start",
    "propensity_churn",
    "log_dwell_s",
    "scroll_mean",
    "log_sessions",
    "log_events",
    "abandon_rate",
    "session_trend",
    *SHARE_FEATURES,
    *SIGNATURE_FEATURES,
    *DEVIATION_FEATURES,
    *SESSION_FEATURES,
    *CURRENT_FEATURES,
)
# What cohorts are clustered on: the long-term signature, how a user habitually moves.
COHORT_FEATURES = SIGNATURE_FEATURES


FEATURE_INDEX = {name: i for i, name in enumerate(FEATURES)}


class FeatureVector:
    """A profile's model features: floats in FEATURES order (UserProfile.snapshot makes it)."""

    __slots__ = ("values",)

    def __init__(self, values: list[float]):
        self.values = values

    def __getitem__(self, name: str) -> float:
        return self.values[FEATURE_INDEX[name]]

    def take(self, names: tuple[str, ...]) -> list[float]:
        return [self.values[FEATURE_INDEX[name]] for name in names]


def feature_vector(
    f: Features,
    propensity: dict[str, float],
    deviation: float,
    sessions: int,
    events: int,
    dwell_mean: float,
    scroll_mean: float,
    abandon_rate: float,
    session_trend: float,
    trend_counts: list[float],
    signature: dict[str, float],
    z: list[float],
    current_state: int | None,
    session: dict | None,
) -> FeatureVector:
    """The vector of the profile's parts, as UserProfile.snapshot derives them: `propensity` by
    target, `trend_counts` and `current_state` by state index, `z` by BASELINE_METRICS (empty
    without a baseline), `session` the open session's counts (udfs.profile.current_session)."""
    total = sum(trend_counts) or 1.0
    session = session or {}
    values = [
        f.engagement_score,
        f.category_affinity,
        f.price_sensitivity,
        f.intent_strength,
        f.session_recency,
        *f.rfm_purchase,
        *f.rfm_engagement,
        deviation,
        propensity["purchase"],
        propensity["add_to_cart"],
        propensity["checkout_start"],
        propensity[CHURN],
        math.log1p(dwell_mean),
        scroll_mean,
        math.log1p(sessions),
        math.log1p(events),
        abandon_rate,
        session_trend,
    ]
    values += [trend_counts[i] / total for i in range(ACTIVE_STATES)]
    values += [signature[name] for name in SIGNATURE_FEATURES]
    values += [*z, *[0.0] * (len(DEVIATION_FEATURES) - len(z))]  # zeros without a baseline
    values += [float(session.get(name.removeprefix("session_"), 0.0)) for name in SESSION_FEATURES]
    values += [1.0 if i == current_state else 0.0 for i in range(ACTIVE_STATES)]
    return FeatureVector(values)


def vector(snapshot: ProfileSnapshot, names: tuple[str, ...] = FEATURES) -> list[float]:
    return snapshot.features.take(names)
