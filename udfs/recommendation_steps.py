"""The knowledge and ranking steps of the profile job as pure objects: messages in, state
updated in place, summaries or output records out. The Flink functions (jobs/recommendations.py)
load and store the state and keep the timers; the offline evaluation (models/recommendations.py)
runs the same steps over a history with state in dicts.

    KnowledgeStep.on_touch(state, key, touch)   an item's or bucket's Knowledge updated; its
                                                summary when one is due
    KnowledgeStep.on_timer(state, key, now)     a pending summary, or the key forgotten
                                                (summary None) after `item_ttl_ms` unseen
    RankingStep.on_summary(key, summary)        the catalogue updated
    RankingStep.on_request(last, body)          the user's list (when it changed), an offer
                                                with its items, or the user forgotten
"""

from __future__ import annotations

import json

from conf.policy import RECOMMENDED_ITEMS
from conf.settings import Recommendations as RecommendationSettings
from udfs import outputs
from udfs.outputs import Emitted
from udfs.recommend import Catalogue, Knowledge, Request, Touch, rank

# In a request, instead of the user's items: the user is forgotten (purge or expiry).
FORGET = "forget"
PAYLOAD = outputs.ACTIONS.names.index("payload")


class KnowledgeStep:
    def __init__(self, s: RecommendationSettings):
        self.s = s

    def on_touch(self, state: Knowledge, key: str, touch: Touch) -> dict | None:
        """The key's summary if one is due now, else None (the timer sends it later)."""
        if key.startswith("i:"):
            state.touch_item(touch, self.s)
        else:
            state.touch_bucket(touch, self.s)
        return state.summary(touch.ts) if state.summary_due(touch.ts, self.s) else None

    def on_timer(self, state: Knowledge, now: int) -> tuple[bool, dict | None]:
        """(whether the key is forgotten, its summary if one is due)."""
        if state.expired(now, self.s):
            return True, None
        return False, state.summary(now) if state.summary_due(now, self.s) else None


class RankingStep:
    def __init__(self, s: RecommendationSettings):
        self.s = s
        self.catalogue = Catalogue()

    def on_summary(self, key: str, summary: dict | None) -> None:
        self.catalogue.apply(key, summary)

    def blend_of(self, name: str | None) -> str:
        return name if name in self.s.blends else self.s.blend

    def on_request(self, last: list[str] | None, body: dict) -> tuple[list[Emitted], list | None]:
        """Outputs for a request, and the item ids of the user's latest list now (None: the
        user is forgotten). A list goes out when it differs from the latest; an offer goes out
        with the items of the list it was ranked with, which is then the latest."""
        if body.get(FORGET):
            return ([outputs.RECOMMENDATIONS.deletion(body["user_id"])] if last else []), None
        offer = body.get("offer")
        blend = self.blend_of(body.get("blend"))
        request = Request.from_json(body)
        items = rank(request, self.catalogue, self.s.blends[blend], self.s)
        ids = [r.item for r in items]
        out = []
        if ids != last:
            out.append(
                outputs.recommendations(
                    request.user_id, request.ts, request.event_id, blend, request.bucket, items
                )
            )
        if offer is not None:
            out.append(with_items(offer, ids))
        return out, ids


def with_items(offer: list, ids: list[str]) -> Emitted:
    """The offer's action record with the item ids in its payload."""
    values = list(offer)
    payload = json.loads(values[PAYLOAD])
    payload[RECOMMENDED_ITEMS[0]] = ids
    values[PAYLOAD] = outputs.compact(payload)
    return outputs.ACTIONS.record(*values)
