"""One user's scores after a profile update: cohort (with hysteresis), dense cohort, the learned
propensities of their cohort's models merged with the profile's model-free ones into one
ranked list, and the lead score. Without a registered model version, the model-free
propensities alone are ranked and no cohort is assigned."""

from __future__ import annotations

from dataclasses import dataclass

from conf.settings import Leads, Models
from udfs import cohort_assignment
from udfs.actions import UserContext
from udfs.cohort_assignment import CohortMove, CohortState
from udfs.events import Event, EventType
from udfs.leads import LeadScore, Modifier, base_capacity, lead_score
from udfs.profile import ProfileSnapshot
from udfs.scoring import ModelSet, Propensity

PROFILE_SOURCE = "profile"
MODEL_SOURCE = "model"


@dataclass(frozen=True)
class UserScores:
    user_id: str
    ts: int
    event_id: str | None  # the event that triggered the update; None for a timer's update
    model_version: int | None
    cohort: int | None
    cohort_name: str | None
    dense_cohort: int | None
    learned: dict[str, Propensity]
    ranked: list[dict]  # {"score", "p", "source", "model", "version"}, highest p first
    lead: LeadScore


@dataclass(frozen=True)
class Scored:
    scores: UserScores
    cohort_state: CohortState | None
    move: CohortMove | None


def long_term_changes(snapshot: ProfileSnapshot) -> int:
    """How many times the long-term layer changed: updates other than events (closed sessions,
    dormancy)."""
    return snapshot.columns["version"] - snapshot.columns["events"]


def has_open_cart(snapshot: ProfileSnapshot) -> bool:
    """The current session has a cart and no purchase yet: when abandonment was learned, and
    when cart actions are eligible."""
    session = snapshot.details.get("session") or {}
    return session.get("cart_adds", 0) > 0 and session.get("purchases", 0) == 0


def score_user(
    snapshot: ProfileSnapshot,
    models: ModelSet | None,
    state: CohortState | None,
    event_id: str | None,
    competitor_view: bool,
    m: Models,
    leads: Leads,
    modifiers: list[Modifier],
) -> Scored:
    c = snapshot.columns
    ts = c["as_of_ts"]
    ranked = [
        {
            "score": p["action"],
            "p": p["p"],
            "source": PROFILE_SOURCE,
            "model": None,
            "version": None,
        }
        for p in snapshot.details["propensities"]
    ]
    learned: dict[str, Propensity] = {}
    move = dense = cohort_name = version = None
    cohort = None
    if models is not None:
        features = snapshot.features
        version = models.version
        changes = long_term_changes(snapshot)
        if cohort_assignment.due(state, version, changes, ts, m.cohort_dwell_ms):
            state, move = cohort_assignment.decide(
                state,
                models.cohort_distances(features),
                ts,
                version,
                m.cohort_margin,
                m.cohort_dwell_ms,
            )
            state.assessed_changes, state.dense = changes, models.dense_cohort(features)
        cohort, cohort_name = state.cohort, models.cohort_names.get(state.cohort)
        dense = state.dense
        open_cart = has_open_cart(snapshot)
        targets = [t for t in models.targets if t != "abandonment" or open_cart]
        learned = {p.target: p for p in models.propensities(features, cohort, targets)}
        ranked += [
            {
                "score": p.target,
                "p": p.p,
                "source": MODEL_SOURCE,
                "model": p.model,
                "version": version,
            }
            for p in learned.values()
        ]
    ranked.sort(key=lambda r: -r["p"])
    intent = learned["purchase"].p if "purchase" in learned else c["propensity_purchase"]
    capacity = base_capacity(
        snapshot.details["rfm_purchase"][2], c["price_sensitivity"], leads.monetary_weight
    )
    lead = lead_score(intent, capacity, cohort_name, competitor_view, modifiers)
    scores = UserScores(
        c["user_id"], ts, event_id, version, cohort, cohort_name, dense, learned, ranked, lead
    )
    return Scored(scores, state, move)


def decision_context(
    sc: UserScores, snapshot: ProfileSnapshot, allowed: frozenset[str]
) -> UserContext:
    """What the decision step sees: every watchable score (conf.policy.SCORES), the cart, and
    the purposes of actions the user's consent allows."""
    c = snapshot.columns
    scores = {t: p.p for t, p in sc.learned.items()}
    scores |= {
        "profile_purchase": c["propensity_purchase"],
        "add_to_cart": c["propensity_add_to_cart"],
        "checkout_start": c["propensity_checkout_start"],
        "churn": c["propensity_churn"],
        "lead": sc.lead.score,
        "intent": c["intent_strength"],
        "engagement": c["engagement_score"],
        "deviation": c["deviation"],
    }
    return UserContext(
        sc.user_id,
        sc.ts,
        sc.event_id,
        scores,
        has_open_cart(snapshot),
        c["events"],
        (snapshot.details.get("session") or {}).get("cart_value", 0.0),
        c["top_category"],
        sc.cohort_name,
        sc.model_version,
        allowed,
    )


def is_competitor_view(event: Event | None, brands: tuple[str, ...]) -> bool:
    if event is None or event.type is not EventType.PRODUCT_VIEW:
        return False
    return event.data.attributes.get("brand") in brands
