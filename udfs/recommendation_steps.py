"""The knowledge and ranking steps of the profile job as pure objects: messages in, state
updated in place, summaries or output records out. The Flink functions (jobs/recommendations.py)
load and store the state and keep the timers; the offline evaluation (models/recommendations.py)
and the benchmark run the same steps with state in dicts (InMemorySteps).

    KnowledgeStep.on_touch(state, key, touch)   an item's or bucket's Knowledge updated; its
                                                summary when one is due
    KnowledgeStep.on_timer(state, key, now)     a pending summary, or the key forgotten
                                                (summary None) after `item_ttl_ms` unseen
    RankingStep.on_summary(key, summary)        the catalogue updated
    RankingStep.on_request(last, body)          the user's list (when it changed), an offer
                                                with its items, or the user forgotten
    RankingStep.answer(last, queue, watermark)  a user's requests in order, an offer held
                                                (and those after it) while no item is known
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

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
        self.latest_ts: int | None = None  # the latest interaction this step has seen

    def on_touch(self, state: Knowledge, key: str, touch: Touch) -> dict | None:
        """The key's summary if one is due now, else None (the timer sends it later)."""
        self.latest_ts = touch.ts if self.latest_ts is None else max(self.latest_ts, touch.ts)
        if key.startswith("i:"):
            state.touch_item(touch, self.s)
        else:
            state.touch_bucket(touch, self.s)
        return state.summary(touch.ts) if state.summary_due(touch.ts, self.s) else None

    def on_timer(self, state: Knowledge, now: int, end_of_input: bool) -> tuple[bool, dict | None]:
        """(whether the key is forgotten, its summary if one is due). At the end of the input
        (event time jumps to its end) a key is forgotten only if the latest interaction seen
        would have let it expire, as the per-user pipeline does with profiles."""
        expire = not end_of_input or (self.latest_ts is not None and now <= self.latest_ts)
        if expire and state.expired(now, self.s):
            return True, None
        return False, state.summary(now) if state.summary_due(now, self.s) else None


class RankingStep:
    def __init__(self, s: RecommendationSettings):
        self.s = s
        self.catalogue = Catalogue(s.summary_interval_ms)

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

    def must_wait(self, body: dict, watermark: int) -> bool:
        """Whether an offer waits: ranking knows no item yet and the watermark is short of the
        offer's event time, so the summaries of earlier events may still be on their way (a job
        starting on a backlog); an empty offer would reach the user."""
        return body.get("offer") is not None and not self.catalogue.items and body["ts"] > watermark

    def answer(
        self, last: list[str] | None, queue: list[dict], watermark: int
    ) -> tuple[list[Emitted], list | None, list[dict]]:
        """A user's queued requests answered in order until one must wait: (outputs, the user's
        latest list now, the requests still waiting, the first of them the one that waits)."""
        out: list[Emitted] = []
        for i, body in enumerate(queue):
            if self.must_wait(body, watermark):
                return out, last, queue[i:]
            made, last = self.on_request(last, body)
            out += made
        return out, last, []


def with_items(offer: list, ids: list[str]) -> Emitted:
    """The offer's action record with the item ids in its payload."""
    values = list(offer)
    payload = json.loads(values[PAYLOAD])
    payload[RECOMMENDED_ITEMS[0]] = ids
    values[PAYLOAD] = outputs.compact(payload)
    return outputs.ACTIONS.record(*values)


@dataclass
class InMemorySteps:
    """The knowledge and ranking steps with their state in dicts: a summary reaches the
    ranking at once (in the job it crosses a network edge), timers fire as `advance` passes
    them."""

    s: RecommendationSettings
    knowledge: dict[str, Knowledge] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)  # latest item ids by user
    timers: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self):
        self.knowing, self.ranking = KnowledgeStep(self.s), RankingStep(self.s)

    def handle(self, out: Iterable[Emitted]) -> list[Emitted]:
        """The pipeline's messages in; the recommendation outputs (and offers) out."""
        made: list[Emitted] = []
        for emitted in out:
            if emitted.output is outputs.TOUCHES:
                key, body = emitted.values
                self.touch(key, Touch.from_json(json.loads(body)))
            elif emitted.output is outputs.REQUESTS:
                user_id, body = emitted.values
                new, ids = self.ranking.on_request(self.lists.get(user_id), json.loads(body))
                if ids is None:
                    self.lists.pop(user_id, None)
                else:
                    self.lists[user_id] = ids
                made += new
        return made

    def touch(self, key: str, touch: Touch) -> None:
        state = self.knowledge.setdefault(key, Knowledge())
        summary = self.knowing.on_touch(state, key, touch)
        if summary is not None:
            self.ranking.on_summary(key, summary)
        heapq.heappush(self.timers, (state.wake_at(self.s), key))

    def advance(self, watermark: int) -> None:
        while self.timers and self.timers[0][0] <= watermark:
            time, key = heapq.heappop(self.timers)
            state = self.knowledge.get(key)
            if state is None or state.wake_at(self.s) != time:
                continue  # moved or gone since
            forgotten, summary = self.knowing.on_timer(state, time, end_of_input=False)
            if forgotten:
                del self.knowledge[key]
                self.ranking.on_summary(key, None)
                continue
            if summary is not None:
                self.ranking.on_summary(key, summary)
            heapq.heappush(self.timers, (state.wake_at(self.s), key))
