"""Lead scores: purchase intent (the learned purchase probability) and purchase capacity (what
the user has spent, and how little price holds them back), each adjusted by the cohort
modifiers that apply to the user's cohort and to what they are doing now."""

from __future__ import annotations

from dataclasses import dataclass

ALWAYS = "always"
COMPETITOR_VIEW = "competitor_view"  # the event is a view of a competitor's product


@dataclass(frozen=True)
class Modifier:
    """A row of the `cohort_modifiers` table. `cohort_match` is matched case-insensitively
    inside the cohort's generated name ("researchers" matches "Search-led researchers"), so a
    modifier survives retraining as long as the trait it is about is still named."""

    modifier_id: int
    cohort_match: str
    context: str
    intent_pct: float
    capacity_pct: float

    def applies(self, cohort_name: str | None, competitor_view: bool) -> bool:
        if cohort_name is None or self.cohort_match.lower() not in cohort_name.lower():
            return False
        return self.context == ALWAYS or (self.context == COMPETITOR_VIEW and competitor_view)


@dataclass(frozen=True)
class LeadScore:
    intent: float
    capacity: float
    score: float  # intent x capacity
    base_intent: float
    base_capacity: float
    modifiers: tuple[int, ...]  # ids of the modifiers applied


def clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def base_capacity(monetary: float, price_sensitivity: float, monetary_weight: float) -> float:
    """Spending so far (the purchase RFM monetary part, 0..1) and indifference to price."""
    return clip(monetary_weight * monetary + (1 - monetary_weight) * (1 - price_sensitivity))


def lead_score(
    intent: float,
    capacity: float,
    cohort_name: str | None,
    competitor_view: bool,
    modifiers: list[Modifier],
) -> LeadScore:
    applied = [m for m in modifiers if m.applies(cohort_name, competitor_view)]
    adjusted_intent = clip(intent * (1 + sum(m.intent_pct for m in applied) / 100))
    adjusted_capacity = clip(capacity * (1 + sum(m.capacity_pct for m in applied) / 100))
    return LeadScore(
        adjusted_intent,
        adjusted_capacity,
        adjusted_intent * adjusted_capacity,
        intent,
        capacity,
        tuple(m.modifier_id for m in applied),
    )
