"""What a backtest found, from its decisions (rows of the `actions` output): per action and
variant, how many users were targeted, how many decisions, when (per day of event time) and at
what scores; and two candidates side by side: the overlap of their targeted users, how much
sooner or later one targets the users both target, and the volume per day of each."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import median, quantiles

from udfs.timeunits import DAY_MS, HOUR_MS


@dataclass(frozen=True)
class Decision:
    user_id: str
    ts: int
    action: str
    variant: str | None
    score_name: str
    score: float
    delivered: bool

    @staticmethod
    def of(row: dict) -> Decision:
        return Decision(
            row["user_id"],
            int(row["ts"]),
            row["action"],
            row.get("variant"),
            row["score_name"],
            float(row["score"]),
            bool(row["delivered"]),
        )


def day_of(ts: int) -> str:
    """The UTC date of an event time."""
    return datetime.fromtimestamp(ts // DAY_MS * DAY_MS / 1000, UTC).date().isoformat()


def score_summary(scores: list[float]) -> dict:
    if len(scores) < 2:
        return {"min": min(scores), "median": median(scores), "max": max(scores)}
    q1, q2, q3 = quantiles(scores, n=4)
    return {"min": min(scores), "p25": q1, "median": q2, "p75": q3, "max": max(scores)}


def summarize(decisions: list[Decision]) -> dict:
    """Per action and variant: users, decisions, delivered ones, the scores decided at and the
    decisions per day; and the totals per day."""
    groups: dict[tuple[str, str | None], list[Decision]] = defaultdict(list)
    for d in decisions:
        groups[(d.action, d.variant)].append(d)
    per_arm = []
    for (action, variant), mine in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
    ):
        per_day: dict[str, int] = defaultdict(int)
        for d in mine:
            per_day[day_of(d.ts)] += 1
        per_arm.append(
            {
                "action": action,
                "variant": variant,
                "users": len({d.user_id for d in mine}),
                "decisions": len(mine),
                "delivered": sum(d.delivered for d in mine),
                "scores": score_summary([d.score for d in mine]),
                "per_day": dict(sorted(per_day.items())),
            }
        )
    per_day: dict[str, int] = defaultdict(int)
    for d in decisions:
        per_day[day_of(d.ts)] += 1
    return {
        "decisions": len(decisions),
        "users": len({d.user_id for d in decisions}),
        "by_action": per_arm,
        "per_day": dict(sorted(per_day.items())),
    }


def first_targeted(decisions: list[Decision], action: str) -> dict[str, int]:
    """When each user was first decided for `action`."""
    first: dict[str, int] = {}
    for d in decisions:
        if d.action == action and (d.user_id not in first or d.ts < first[d.user_id]):
            first[d.user_id] = d.ts
    return first


def compare(a: list[Decision], b: list[Decision]) -> dict:
    """Candidate b against candidate a, per action either decided: users targeted by both, by
    one only, their overlap (Jaccard), and for users both target how many hours later b first
    targets them (median; negative: sooner); and the decisions per day of each."""
    actions = sorted({d.action for d in a} | {d.action for d in b})
    by_action = {}
    for action in actions:
        first_a, first_b = first_targeted(a, action), first_targeted(b, action)
        both = first_a.keys() & first_b.keys()
        union = first_a.keys() | first_b.keys()
        shifts = [(first_b[u] - first_a[u]) / HOUR_MS for u in both]
        by_action[action] = {
            "users_a": len(first_a),
            "users_b": len(first_b),
            "both": len(both),
            "only_a": len(first_a.keys() - first_b.keys()),
            "only_b": len(first_b.keys() - first_a.keys()),
            "jaccard": len(both) / len(union) if union else None,
            "median_hours_b_later": median(shifts) if shifts else None,
            "same_time": sum(1 for s in shifts if s == 0),
        }
    days = sorted({day_of(d.ts) for d in a} | {day_of(d.ts) for d in b})
    count_a, count_b = summarize(a)["per_day"], summarize(b)["per_day"]
    per_day = {day: {"a": count_a.get(day, 0), "b": count_b.get(day, 0)} for day in days}
    return {"by_action": by_action, "per_day": per_day}
