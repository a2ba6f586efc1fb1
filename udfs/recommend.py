"""Recommendations, as pure logic: what the profile job's three recommendation steps do
(jobs/profile.py wires them; docs/recommendations.md explains the choices).

    per user (in build-profiles)   Shopper: the user's recent items and items bought, and the
                                   bucket of the user's current segment profile (Hyperplanes);
                                   each item interaction becomes a Touch, and a Request for a
                                   new list goes out on a significant change
    per item and per bucket        Knowledge (keyed by item or bucket): an item's category,
                                   price as seen, decayed popularity and the items seen with it;
                                   a bucket's items its members interacted with, decayed; each
                                   bounded, forgotten after a quiet `item_ttl_ms`, and sent on as
                                   a summary
    per user again (rank)          Catalogue (every summary) and rank(): the blend of neighbours
                                   (the user's bucket), content (top categories within the
                                   user's price band), co-occurrence (items seen with the user's
                                   recent ones) and popularity, without items already bought,
                                   each item with the signals that put it there

All times are event time.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from hashlib import blake2b

from conf.settings import Blend
from conf.settings import Recommendations as RecommendationSettings
from udfs.decay import advance, decay

SIGNALS = ("neighbours", "content", "co_occurrence", "popularity")
# A signal is named among an item's reasons when it gave at least this share of its score.
REASON_SHARE = 0.2


# ------------------------------------------------------------------ the segment profile


def segment_vector(
    segment: tuple[float, ...],
    category_shares: dict[str, float],
    price_level: float,
    s: RecommendationSettings,
) -> dict[str, float]:
    """The user's current segment profile as a sparse vector: the dynamically weighted RFM
    values (purchase then engagement, udfs.features.Features.segment; a weight of 1/3 on a score
    of 1/2 sits at 0), the category shares, and the price level (mean log2 of viewed prices over
    their category's reference)."""
    vector = {f"rfm{i}": s.rfm_weight * (3.0 * v - 0.5) for i, v in enumerate(segment)}
    for category, share in category_shares.items():
        vector[f"c:{category}"] = s.category_weight * share
    vector["price"] = s.price_weight * price_level
    return vector


class Hyperplanes:
    """Random-hyperplane LSH (sign of the projection on `bits` random directions): vectors at a
    small angle share a bucket with a high probability, (1 - angle / pi) ** bits. The directions'
    components are drawn per dimension name from a seeded hash, so a category nobody has seen
    yet gets its own, and every process hashes alike."""

    def __init__(self, bits: int, seed: int):
        self.bits, self.seed = bits, seed
        self._components: dict[str, tuple[float, ...]] = {}

    def components(self, dimension: str) -> tuple[float, ...]:
        found = self._components.get(dimension)
        if found is None:
            digest = blake2b(f"{self.seed}:{dimension}".encode(), digest_size=8).digest()
            rng = random.Random(int.from_bytes(digest, "little"))
            found = self._components[dimension] = tuple(rng.gauss(0, 1) for _ in range(self.bits))
        return found

    def bucket(self, vector: dict[str, float]) -> int:
        sums = [0.0] * self.bits
        for dimension, value in vector.items():
            if value:
                for i, c in enumerate(self.components(dimension)):
                    sums[i] += value * c
        return sum(1 << i for i, x in enumerate(sums) if x > 0)


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    dot = sum(v * b.get(k, 0.0) for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


# ------------------------------------------------------------------ per user


@dataclass(frozen=True, slots=True)
class Touch:
    """One interaction of a user with an item: `together`, the user's other items touched
    within `together_ms` before it."""

    item: str
    kind: str  # the event type
    ts: int
    category: str | None
    price: float | None
    bucket: int
    together: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "item": self.item,
            "kind": self.kind,
            "ts": self.ts,
            "category": self.category,
            "price": self.price,
            "bucket": self.bucket,
            "together": list(self.together),
        }

    @staticmethod
    def from_json(value: dict) -> Touch:
        return Touch(**{**value, "together": tuple(value["together"])})


@dataclass(slots=True)
class Shopper:
    """What the recommendation steps keep of one user (in the user's state): recent item
    interactions [item, kind, ts, category, price], newest last; items bought, newest last;
    the bucket of the last request and the product views since it."""

    recent: list[list] = field(default_factory=list)
    bought: list[str] = field(default_factory=list)
    bucket: int | None = None
    views_since_request: int = 0

    def touch(
        self,
        item: str,
        kind: str,
        ts: int,
        category: str | None,
        price: float | None,
        bucket: int,
        s: RecommendationSettings,
    ) -> Touch:
        known = next((r for r in reversed(self.recent) if r[0] == item), None)
        category = category or (known[3] if known else None)
        price = price if price is not None else (known[4] if known else None)
        together = tuple(
            dict.fromkeys(
                r[0] for r in reversed(self.recent) if r[0] != item and ts - r[2] <= s.together_ms
            )
        )[: s.together_items]
        self.recent.append([item, kind, ts, category, price])
        del self.recent[: -s.recent_items]
        if kind == "purchase":
            if item in self.bought:
                self.bought.remove(item)
            self.bought.append(item)
            del self.bought[: -s.bought_items]
        if kind == "product_view":
            self.views_since_request += 1
        return Touch(item, kind, ts, category, price, bucket, together)

    def wants_list(self, kind: str, bucket: int, s: RecommendationSettings) -> bool:
        """Whether this interaction is a significant change: one that asks for a new list."""
        return (
            kind != "product_view"
            or bucket != self.bucket
            or self.views_since_request >= s.refresh_after_views
        )

    def request(
        self, user_id: str, ts: int, bucket: int, shares: dict[str, float], event_id: str | None
    ) -> Request:
        self.bucket, self.views_since_request = bucket, 0
        top = dict(sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
        return Request(
            user_id,
            ts,
            event_id,
            bucket,
            tuple((r[0], r[1], r[2]) for r in self.recent),
            tuple(self.bought),
            top,
            tuple(r[4] for r in self.recent if r[4]),
        )


@dataclass(frozen=True, slots=True)
class Request:
    """What ranking needs of a user: recent items (item, kind, ts), items bought, the top
    category shares and the prices of recent items."""

    user_id: str
    ts: int
    event_id: str | None
    bucket: int
    recent: tuple[tuple[str, str, int], ...]
    bought: tuple[str, ...]
    categories: dict[str, float]
    prices: tuple[float, ...]

    def to_json(self) -> dict:
        return {
            "user_id": self.user_id,
            "ts": self.ts,
            "event_id": self.event_id,
            "bucket": self.bucket,
            "recent": [list(r) for r in self.recent],
            "bought": list(self.bought),
            "categories": self.categories,
            "prices": list(self.prices),
        }

    @staticmethod
    def from_json(value: dict) -> Request:
        return Request(
            value["user_id"],
            value["ts"],
            value["event_id"],
            value["bucket"],
            tuple(tuple(r) for r in value["recent"]),
            tuple(value["bought"]),
            value["categories"],
            tuple(value["prices"]),
        )


# ------------------------------------------------------------------ per item and per bucket


def bound(weights: dict[str, float], limit: int, keep: str | None = None) -> None:
    """Drops the weakest weights beyond `limit` (never `keep`, the key just added)."""
    while len(weights) > limit:
        weakest = min((k for k in weights if k != keep), key=lambda k: (weights[k], k))
        del weights[weakest]


@dataclass(slots=True)
class Knowledge:
    """The state of one key of the knowledge step: an item ("i:<id>") or a bucket ("b:<n>").
    `weights`: for an item, the items seen with it; for a bucket, its members' items;
    `popularity`: an item's own decayed interactions. `emitted_at`: when its last summary went;
    `dirty`: it changed since."""

    category: str | None = None
    price: float | None = None
    popularity: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    ref_ts: int | None = None
    last_seen: int = 0
    emitted_at: int | None = None
    dirty: bool = False
    timer_at: int | None = None  # the timer the job has registered for the key

    def age(self, ts: int, half_life: float) -> float:
        """Ages the weights to `ts` if it is newer; returns the weight an interaction at `ts`
        has as of the reference time (udfs/decay.py)."""
        self.ref_ts, factor, own = advance(self.ref_ts, ts, half_life)
        if factor != 1.0:
            self.popularity *= factor
            self.weights = {k: v * factor for k, v in self.weights.items()}
        return own

    def touch_item(self, t: Touch, s: RecommendationSettings) -> None:
        w = s.interaction_weights.get(t.kind, 1.0) * self.age(t.ts, s.half_life_ms)
        self.popularity += w
        for other in t.together:
            self.weights[other] = self.weights.get(other, 0.0) + w
        bound(self.weights, s.co_items)
        self.category = t.category or self.category
        self.price = t.price if t.price is not None else self.price
        self._seen(t.ts)

    def touch_bucket(self, t: Touch, s: RecommendationSettings) -> None:
        w = s.interaction_weights.get(t.kind, 1.0) * self.age(t.ts, s.half_life_ms)
        self.weights[t.item] = self.weights.get(t.item, 0.0) + w
        bound(self.weights, s.bucket_items, keep=t.item)
        self._seen(t.ts)

    def _seen(self, ts: int) -> None:
        self.last_seen = max(self.last_seen, ts)
        self.dirty = True

    def summary_due(self, now: int, s: RecommendationSettings) -> bool:
        return self.dirty and (
            self.emitted_at is None or now - self.emitted_at >= s.summary_interval_ms
        )

    def summary(self, now: int) -> dict:
        """What ranking is sent: the weights as of `ref_ts`."""
        self.emitted_at, self.dirty = now, False
        return {
            "category": self.category,
            "price": self.price,
            "popularity": self.popularity,
            "ref_ts": self.ref_ts,
            "weights": self.weights,
        }

    def wake_at(self, s: RecommendationSettings) -> int:
        """When its timer should fire: a pending summary, else its expiry."""
        expiry = self.last_seen + s.item_ttl_ms
        if self.dirty and self.emitted_at is not None:
            return min(expiry, self.emitted_at + s.summary_interval_ms)
        return expiry

    def expired(self, now: int, s: RecommendationSettings) -> bool:
        return now >= self.last_seen + s.item_ttl_ms


def item_key(item: str) -> str:
    return f"i:{item}"


def bucket_key(bucket: int) -> str:
    return f"b:{bucket}"


# ------------------------------------------------------------------ ranking


class Catalogue:
    """Every item's and bucket's latest summary, as ranking reads them (None: forgotten).

    Items' popularity as of a request is computed for the whole catalogue at most once per
    `refresh_ms` of event time, with the items ranked by it (summaries arrive far more often
    than the order of popularity changes): a request only looks it up."""

    def __init__(self, refresh_ms: int = 60_000):
        self.items: dict[str, dict] = {}
        self.buckets: dict[int, dict] = {}
        self.by_category: dict[str, set[str]] = {}
        self.refresh_ms = refresh_ms
        self._as_of: int | None = None
        self._popularity: dict[str, float] = {}
        self._ranked: list[str] = []  # by popularity, most popular first

    def apply(self, key: str, summary: dict | None) -> None:
        kind, name = key.split(":", 1)
        if kind == "b":
            if summary is None:
                self.buckets.pop(int(name), None)
            else:
                self.buckets[int(name)] = summary
            return
        old = self.items.pop(name, None)
        if old is not None and old["category"] is not None:
            self.by_category.get(old["category"], set()).discard(name)
        if summary is not None:
            self.items[name] = summary
            if summary["category"] is not None:
                self.by_category.setdefault(summary["category"], set()).add(name)
        elif name in self._popularity:
            self._as_of = None  # a forgotten item leaves the ranking at once

    def refresh(self, now: int, half_life: float, wanted: int = 0) -> None:
        """`wanted`: a ranking shorter than this is stale if the catalogue has more items (one
        made before the first summaries arrived would otherwise leave lists empty)."""
        fresh = self._as_of is not None and 0 <= now - self._as_of < self.refresh_ms
        if fresh and len(self._ranked) >= min(wanted, len(self.items)):
            return
        self._as_of = now
        self._popularity = {
            item: found["popularity"] * decay(max(now - found["ref_ts"], 0), half_life)
            for item, found in self.items.items()
        }
        self._ranked = sorted(self._popularity, key=lambda i: (-self._popularity[i], i))

    def popularity(self, item: str, now: int, half_life: float) -> float:
        self.refresh(now, half_life)
        return self._popularity.get(item, 0.0)

    def popular(self, now: int, half_life: float, n: int) -> list[tuple[float, str]]:
        """The `n` most popular items, (popularity, item)."""
        self.refresh(now, half_life, wanted=n)
        return [(self._popularity[i], i) for i in self._ranked[:n]]


@dataclass(frozen=True, slots=True)
class Recommended:
    item: str
    score: float
    reasons: tuple[str, ...]  # the signals that put it there, strongest first

    def to_json(self) -> dict:
        return {"item_id": self.item, "score": round(self.score, 6), "reasons": list(self.reasons)}


def scaled(scores: dict[str, float]) -> dict[str, float]:
    top = max(scores.values(), default=0.0)
    return {k: v / top for k, v in scores.items() if v > 0} if top > 0 else {}


def candidates(
    request: Request, catalogue: Catalogue, s: RecommendationSettings, pool: int
) -> dict[str, dict[str, float]]:
    """Each signal's candidates with raw scores, `pool` at most per signal."""
    now, half_life = request.ts, s.half_life_ms
    bucket = catalogue.buckets.get(request.bucket)
    neighbours: dict[str, float] = {}
    if bucket is not None:
        neighbours = dict(heapq.nlargest(pool, bucket["weights"].items(), key=lambda kv: kv[1]))

    content: dict[str, float] = {}
    if request.prices:
        low, high = min(request.prices) / s.price_band, max(request.prices) * s.price_band
    else:
        low, high = 0.0, math.inf
    for category, share in request.categories.items():
        for item in catalogue.by_category.get(category, ()):
            price = catalogue.items[item]["price"]
            if price is None or low <= price <= high:
                content[item] = share * catalogue.popularity(item, now, half_life)
    content = dict(heapq.nlargest(pool, content.items(), key=lambda kv: kv[1]))

    co: dict[str, float] = {}
    weights = s.interaction_weights
    for item, kind, ts in request.recent:
        found = catalogue.items.get(item)
        if found is None:
            continue
        w = weights.get(kind, 1.0) * decay(max(now - ts, 0), half_life)
        age = decay(max(now - found["ref_ts"], 0), half_life)
        for other, together in found["weights"].items():
            co[other] = co.get(other, 0.0) + w * together * age
    co = dict(heapq.nlargest(pool, co.items(), key=lambda kv: kv[1]))

    popular = {item: p for p, item in catalogue.popular(now, half_life, pool)}
    return {
        "neighbours": neighbours,
        "content": content,
        "co_occurrence": co,
        "popularity": popular,
    }


def rank(
    request: Request, catalogue: Catalogue, blend: Blend, s: RecommendationSettings
) -> list[Recommended]:
    """The user's list: each signal's scores scaled to [0, 1], blended by the weights, items
    bought left out; ties go to the smaller item id. Popular items fill a list the blend leaves
    short."""
    n = s.items
    exclude = set(request.bought)
    weights = blend.model_dump()
    parts: dict[str, dict[str, float]] = {}
    for signal, raw in candidates(request, catalogue, s, pool=n * 5).items():
        w = weights[signal]
        if w <= 0:
            continue
        for item, x in scaled(raw).items():
            if item not in exclude:
                parts.setdefault(item, {})[signal] = w * x
    total = {item: sum(by_signal.values()) for item, by_signal in parts.items()}
    best = heapq.nsmallest(n, total, key=lambda item: (-total[item], item))
    ranked = [Recommended(item, total[item], reasons(parts[item], total[item])) for item in best]
    # A short list (a thin bucket, a new user) is filled up with popular items, scored 0.
    for _, item in catalogue.popular(request.ts, s.half_life_ms, 2 * n + len(exclude)):
        if len(ranked) >= n:
            break
        if item not in exclude and item not in total:
            ranked.append(Recommended(item, 0.0, ("popularity",)))
    return ranked


def reasons(by_signal: dict[str, float], total: float) -> tuple[str, ...]:
    ranked = sorted(by_signal, key=lambda signal: (-by_signal[signal], signal))
    return tuple(x for x in ranked if by_signal[x] >= REASON_SHARE * total) or ranked[:1]
