"""The feature vector the learned models see, built from a profile snapshot. The same function
runs in the job and in training (models/datasets.py), so a model never sees a feature computed
differently from the one it was trained on. FEATURES fixes the order; it is recorded with every
model."""

from __future__ import annotations

import math

from udfs.profile import ProfileSnapshot
from udfs.sessions import BASELINE_METRICS
from udfs.states import ACTIVE_STATES, STATES

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


def feature_map(snapshot: ProfileSnapshot) -> dict[str, float]:
    c, d = snapshot.columns, snapshot.details
    counts = d["trend_counts"]
    total = sum(counts.values()) or 1.0
    session = d.get("session") or {}
    values = {
        "engagement_score": c["engagement_score"],
        "category_affinity": c["category_affinity"],
        "price_sensitivity": c["price_sensitivity"],
        "intent_strength": c["intent_strength"],
        "session_recency": c["session_recency"],
        "deviation": c["deviation"],
        "propensity_purchase": c["propensity_purchase"],
        "propensity_add_to_cart": c["propensity_add_to_cart"],
        "propensity_checkout_start": c["propensity_checkout_start"],
        "propensity_churn": c["propensity_churn"],
        "log_dwell_s": math.log1p(d["dwell_s"]["mean"]),
        "scroll_mean": d["scroll"]["mean"],
        "log_sessions": math.log1p(c["sessions"]),
        "log_events": math.log1p(c["events"]),
        "abandon_rate": d["abandon_rate"],
        "session_trend": d["session_trend"],
    }
    for prefix, parts in (
        ("rfm_purchase", d["rfm_purchase"]),
        ("rfm_engagement", d["rfm_engagement"]),
    ):
        for letter, value in zip("rfm", parts, strict=True):
            values[f"{prefix}_{letter}"] = value
    for i, name in enumerate(SHARE_FEATURES):
        values[name] = counts.get(STATES[i], 0.0) / total
    values.update(d["signature"])
    z = d["deviation_z"]
    for metric, name in zip(BASELINE_METRICS, DEVIATION_FEATURES, strict=True):
        values[name] = z.get(metric, 0.0)
    current = d["current_state"]
    for name in CURRENT_FEATURES:
        values[name] = 1.0 if name == f"now_{current}" else 0.0
    for name in SESSION_FEATURES:
        values[name] = float(session.get(name.removeprefix("session_"), 0.0))
    return values


def vector(snapshot: ProfileSnapshot, names: tuple[str, ...] = FEATURES) -> list[float]:
    values = feature_map(snapshot)
    return [values[name] for name in names]
