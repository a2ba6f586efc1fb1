"""Outcomes of actions: each decision (delivered, or a control arm's "would have triggered")
waits for the user's next purchase within the attribution window, in event time. A purchase at
or after the decision and before the window ends converts every decision still waiting; the
window ending first makes it a non-conversion. An `offer_response` naming the decision is kept
with it. Every decision gets exactly one outcome. Lead scores in an experiment about lead
scoring await theirs the same way, over `leads.horizon_ms`."""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass, replace


@dataclass(frozen=True)
class Pending:
    decision_id: str
    action: str
    ts: int
    experiment: str | None
    variant: str | None
    delivered: bool
    response: str | None = None  # from an offer_response naming this decision
    scores: tuple[float, float] | None = None  # a lead score's: (as served, unmodified)


@dataclass(frozen=True)
class Outcome:
    decision_id: str
    user_id: str
    action: str
    experiment: str | None
    variant: str | None
    delivered: bool
    decided_ts: int
    converted: bool
    outcome_ts: int  # the purchase's event time, or the end of the window
    revenue: float
    response: str | None
    scores: tuple[float, float] | None = None


class Attribution:
    """One user's decisions awaiting an outcome (kept in keyed state by the job)."""

    def __init__(self, user_id: str, window_ms: int, pending: list[Pending] | None = None):
        self.user_id, self.window_ms = user_id, window_ms
        self.pending = list(pending or [])

    def to_json(self) -> str | None:
        """The waiting decisions as compact JSON for keyed state; None when there are none."""
        if not self.pending:
            return None
        return json.dumps([astuple(p) for p in self.pending], separators=(",", ":"))

    @staticmethod
    def from_json(user_id: str, window_ms: int, text: str | None) -> Attribution:
        pending = [Pending(*fields) for fields in json.loads(text)] if text else []
        pending = [replace(p, scores=tuple(p.scores)) if p.scores else p for p in pending]
        return Attribution(user_id, window_ms, pending)

    def decided(self, p: Pending) -> None:
        if all(q.decision_id != p.decision_id for q in self.pending):
            self.pending.append(p)

    def responded(self, decision_id: str, response: str) -> None:
        self.pending = [
            replace(p, response=response) if p.decision_id == decision_id else p
            for p in self.pending
        ]

    def purchased(self, ts: int, revenue: float) -> list[Outcome]:
        hit = [p for p in self.pending if p.ts <= ts < p.ts + self.window_ms]
        self.pending = [p for p in self.pending if p not in hit]
        return [self._outcome(p, True, ts, revenue) for p in hit]

    def expire(self, watermark: int) -> list[Outcome]:
        """Decisions whose window ended at or before the watermark: no purchase came."""
        done = [p for p in self.pending if p.ts + self.window_ms <= watermark]
        self.pending = [p for p in self.pending if p not in done]
        return [self._outcome(p, False, p.ts + self.window_ms, 0.0) for p in done]

    def next_deadline(self) -> int | None:
        return min((p.ts + self.window_ms for p in self.pending), default=None)

    def _outcome(self, p: Pending, converted: bool, ts: int, revenue: float) -> Outcome:
        return Outcome(
            p.decision_id,
            self.user_id,
            p.action,
            p.experiment,
            p.variant,
            p.delivered,
            p.ts,
            converted,
            ts,
            revenue,
            p.response,
            p.scores,
        )
