"""Simulated users answering the offers the job delivers, with a known true effect.

The generated history ignores offers: a user buys (or not) whatever the job decides. A response
model adds the effect an experiment should find: a delivered offer is accepted with a known
probability per variant, and an accepted offer is a purchase of the user's cart at the moment the
offer is seen. A user who would have bought anyway changes nothing, so the true uplift in
conversion over the control arm is `accept * (1 - organic conversion)`.

Draws are a hash of the seed and the decision id: the same decision gets the same answer, in
any order and across a replay.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def unit_draw(seed: int, decision_id: str) -> float:
    """A uniform number in [0, 1) that depends only on the seed and the decision."""
    digest = hashlib.sha256(f"{seed}\x1f{decision_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def short_id(decision_id: str) -> str:
    """Ids derived from a decision, within the event contract's 128 characters."""
    return hashlib.sha256(decision_id.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class OfferResponses:
    accept: dict[str, float]  # variant -> probability that a delivered offer is accepted
    seed: int = 0

    def respond(self, decision: dict, now_ts: int) -> list[dict]:
        """The events a user sends at event time `now_ts`, in a session of their own, in answer
        to one decision (a record of the `actions` topic): none unless it was delivered in a
        variant of this model; otherwise an `offer_response`, followed by a purchase of the cart
        when accepted."""
        p = self.accept.get(decision.get("variant"))
        if p is None or not decision["delivered"]:
            return []
        decision_id, user = decision["decision_id"], decision["user_id"]
        accepted = unit_draw(self.seed, decision_id) < p
        ref = short_id(decision_id)
        session = f"offer-{ref}"
        events = [
            {
                "event_id": f"response-{ref}",
                "user_id": user,
                "session_id": session,
                "type": "offer_response",
                "ts": now_ts,
                "schema_version": 1,
                "action_id": decision_id,
                "response": "accepted" if accepted else "dismissed",
            }
        ]
        if accepted:
            payload = decision["payload"]
            total = float(payload.get("cart_total") or 0.0) - float(payload.get("amount") or 0.0)
            total = round(max(total, 0.0), 2)
            events.append(
                {
                    "event_id": f"purchase-{ref}",
                    "user_id": user,
                    "session_id": session,
                    "type": "purchase",
                    "ts": now_ts + 1,
                    "schema_version": 1,
                    "order_id": f"order-{ref}",
                    "total": total,
                    # The cart as one line: the offer carries its value, not its items.
                    "items": [{"product_id": "offer-cart", "quantity": 1, "price": total}],
                }
            )
        return events
