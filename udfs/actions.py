"""The decision step: after a score update, at most one action for the user.

Actions are tried by priority, highest first. An action is taken when its score is over its
threshold, the user is eligible, its cooldown has passed and its daily cap is not reached; an
experiment the user is in may change its threshold, discount or payload, or switch it off for
the variant. A control variant's decision is made and logged the same way but not delivered
("would have triggered"), so arms are compared on the same footing. The ledger (cooldowns and
caps) lives in keyed state; all times are event time."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field

from conf.policy import Action, Policy
from udfs.experiments import assignment_for
from udfs.timeunits import DAY_MS


@dataclass
class Ledger:
    """One user's firing history: last firing per action, and firings per action on `day`."""

    last_fired: dict[str, int] = field(default_factory=dict)
    day: int = -1
    fired_today: dict[str, int] = field(default_factory=dict)

    def allows(self, action: Action, ts: int) -> bool:
        last = self.last_fired.get(action.name)
        if last is not None and ts - last < action.cooldown_ms:
            return False
        today = self.fired_today.get(action.name, 0) if ts // DAY_MS == self.day else 0
        return today < action.cap_per_day

    def to_json(self) -> str:
        return json.dumps([self.last_fired, self.day, self.fired_today], separators=(",", ":"))

    @staticmethod
    def from_json(text: str | None) -> Ledger:
        return Ledger(*json.loads(text)) if text else Ledger()

    def record(self, action: str, ts: int) -> None:
        if ts // DAY_MS != self.day:
            self.day, self.fired_today = ts // DAY_MS, {}
        self.fired_today[action] = self.fired_today.get(action, 0) + 1
        self.last_fired[action] = max(ts, self.last_fired.get(action, ts))


@dataclass(frozen=True)
class UserContext:
    """What the decision may look at, from the scores and profile of one update."""

    user_id: str
    ts: int
    event_id: str | None
    scores: dict[str, float]  # by conf.policy.SCORES name; absent = not available now
    open_cart: bool
    events: int
    cart_total: float
    top_category: str | None
    cohort_name: str | None
    model_version: int | None
    # The purposes of actions (conf.policy.Action.purposes) the user's consent allows.
    allowed: frozenset[str]


@dataclass(frozen=True)
class Decision:
    decision_id: str  # derived from the update, so a replay decides the same id again
    user_id: str
    ts: int
    event_id: str | None
    action: str
    score_name: str
    score: float
    threshold: float
    payload: dict
    experiment: str | None
    variant: str | None
    delivered: bool  # False: a control arm's "would have triggered"
    model_version: int | None
    scores: dict[str, float]
    arms: str | None = None  # the experiment's arms version (conf/policy.py)


def eligible(action: Action, ctx: UserContext) -> bool:
    e = action.eligible
    if e.open_cart is not None and e.open_cart != ctx.open_cart:
        return False
    if ctx.events < e.min_events:
        return False
    if e.cohorts:
        name = (ctx.cohort_name or "").lower()
        return any(c.lower() in name for c in e.cohorts)
    return True


def render(payload: dict, fields: dict) -> dict:
    """Fills ${name} templates; a value that is one placeholder alone keeps the field's type.
    A placeholder of no field stays as written (`${recommendations}`: the ranking step fills
    it, udfs/recommendation_steps.py)."""
    out = {}
    for key, value in payload.items():
        if isinstance(value, str):
            names = string.Template(value).get_identifiers()
            if (
                len(names) == 1
                and names[0] in fields
                and value in (f"${names[0]}", f"${{{names[0]}}}")
            ):
                out[key] = fields.get(names[0])
                continue
            value = string.Template(value).safe_substitute(
                {k: "" if v is None else v for k, v in fields.items()}
            )
        out[key] = value
    return out


def decide(
    policy: Policy,
    ctx: UserContext,
    ledger: Ledger,
    refused: list[str] | None = None,
    requested: str | None = None,
) -> Decision | None:
    """The one action (or control-arm non-action) for this update, recorded in the ledger. An
    action the user's consent does not allow is passed over, and the purposes it lacked are
    added to `refused`. `requested`: only that action is considered, and its threshold does
    not apply (it was asked for: an action_request); consent, eligibility, cooldown, cap and
    experiments do."""
    layers: dict = {}  # the user's experiment assignments, hashed once per layer
    for action in policy.by_priority:
        if requested is not None and action.name != requested:
            continue
        value = ctx.scores.get(action.score)
        if value is None or not eligible(action, ctx) or not ledger.allows(action, ctx.ts):
            continue
        # Only now the (hashing) experiment lookup: the checks above do not depend on it.
        assignment = (
            assignment_for(policy, ctx.user_id, action.name, layers) if action.experiments else None
        )
        change = assignment.variant.actions.get(action.name) if assignment else None
        if change is not None and not change.enabled:
            continue
        threshold = (
            change.threshold if change and change.threshold is not None else action.threshold
        )
        if value <= threshold and requested is None:
            continue
        lacking = [p for p in action.purposes if p not in ctx.allowed]
        if lacking:
            if refused is not None:
                refused += lacking
            continue
        percent = action.discount_percent
        if change and change.discount_percent is not None:
            percent = change.discount_percent
        payload = change.payload if change and change.payload is not None else action.payload
        fields = {
            "user_id": ctx.user_id,
            "action": action.name,
            "score": round(value, 4),
            "threshold": threshold,
            "cart_total": round(ctx.cart_total, 2),
            "discount_amount": round(ctx.cart_total * percent / 100, 2),
            "top_category": ctx.top_category,
            "cohort_name": ctx.cohort_name,
        }
        ledger.record(action.name, ctx.ts)
        return Decision(
            f"{ctx.user_id}|{ctx.ts}|{ctx.event_id or 'timer'}|{action.name}",
            ctx.user_id,
            ctx.ts,
            ctx.event_id,
            action.name,
            action.score,
            value,
            threshold,
            render(payload, fields),
            assignment.experiment.name if assignment else None,
            assignment.variant.name if assignment else None,
            not (assignment and assignment.variant.control),
            ctx.model_version,
            dict(ctx.scores),
            assignment.experiment.arms_version if assignment else None,
        )
    return None
