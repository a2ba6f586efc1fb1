"""RFM (recency, frequency, monetary) for purchases and for engagement actions, and the
dynamic weights that turn them into the current segment profile."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from conf.settings import Rfm, RfmParameters
from udfs.decay import advance, decay
from udfs.timeunits import DAY_MS


@dataclass(slots=True)
class RfmTracker:
    """One kind of action: when it last happened, its decayed count and decayed total value."""

    last_ts: int | None = None
    ref_ts: int | None = None
    count: float = 0.0
    value: float = 0.0

    def add(self, ts: int, value: float, half_life_ms: float) -> None:
        self.ref_ts, age, w = advance(self.ref_ts, ts, half_life_ms)
        self.count = self.count * age + w
        self.value = self.value * age + w * value
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    def scores(
        self,
        now_ms: int,
        half_life_ms: float,
        recency_half_life_ms: float,
        frequency_scale: float,
        monetary_scale: float,
    ) -> tuple[float, float, float]:
        """(recency, frequency, monetary) in [0, 1] as of now_ms:
        recency = 2^(-(now - last) / recency_half_life), frequency = 1 - exp(-count / scale),
        monetary = 1 - exp(-(value / count) / scale) (the decayed mean value per action)."""
        if self.last_ts is None or self.ref_ts is None:
            return 0.0, 0.0, 0.0
        recency = decay(max(now_ms - self.last_ts, 0), recency_half_life_ms)
        count = self.count * decay(max(now_ms - self.ref_ts, 0), half_life_ms)
        frequency = 1.0 - math.exp(-count / frequency_scale)
        mean_value = self.value / self.count if self.count > 0 else 0.0
        monetary = 1.0 - math.exp(-mean_value / monetary_scale)
        return recency, frequency, monetary


def parameters_for(rfm: Rfm, category: str | None) -> RfmParameters:
    """The weight parameters for a user whose top category is `category`: the per-category
    entry's explicitly set fields over the global ones."""
    override = rfm.per_category.get(category) if category else None
    base = {name: getattr(rfm, name) for name in RfmParameters.model_fields}
    if override is not None:
        base.update({name: getattr(override, name) for name in override.model_fields_set})
    return RfmParameters(**base)


def dynamic_weights(
    p: RfmParameters,
    session_recency: float,
    category_affinity: float,
    intent_strength: float,
    price_sensitivity: float,
) -> tuple[float, float, float]:
    """w_R = base_r + a*session_recency + b*category_affinity, w_F = base_f + g*intent_strength,
    w_M = base_m + d*price_sensitivity; clipped at 0 and normalized to sum to 1."""
    raw = (
        max(p.base_r + p.a * session_recency + p.b * category_affinity, 0.0),
        max(p.base_f + p.g * intent_strength, 0.0),
        max(p.base_m + p.d * price_sensitivity, 0.0),
    )
    total = sum(raw)
    if total <= 0:
        return (1 / 3, 1 / 3, 1 / 3)
    return (raw[0] / total, raw[1] / total, raw[2] / total)


@dataclass(slots=True)
class LifetimePurchases:
    """Exact purchase history of a user (standard RFM): kept for the long-term retention, never
    decayed. Sums and extremes, so the order events arrive in does not change it."""

    count: int = 0
    total: float = 0.0
    first_ts: int | None = None
    last_ts: int | None = None

    def add(self, ts: int, total: float) -> None:
        self.count += 1
        self.total += total
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def days_since(self, as_of_ts: int) -> float | None:
        if self.last_ts is None:
            return None
        return max(as_of_ts - self.last_ts, 0) / DAY_MS


@dataclass(frozen=True, slots=True)
class RfmBreakpoints:
    """Population quintile edges learned by `make train` (four ascending values each): days
    since the last purchase, purchase count and mean spend of the customers in the history."""

    recency_days: tuple[float, ...]
    frequency: tuple[float, ...]
    monetary: tuple[float, ...]

    @staticmethod
    def learn(days: list[float], counts: list[float], means: list[float]) -> RfmBreakpoints:
        def edges(values: list[float]) -> tuple[float, ...]:
            ordered = sorted(values)
            return tuple(ordered[min(int(q * len(ordered)), len(ordered) - 1)] for q in QUANTILES)

        return RfmBreakpoints(edges(days), edges(counts), edges(means))

    def to_json(self) -> dict:
        return {
            "recency_days": self.recency_days,
            "frequency": self.frequency,
            "monetary": self.monetary,
        }

    @staticmethod
    def from_json(value: dict) -> RfmBreakpoints:
        return RfmBreakpoints(
            tuple(value["recency_days"]), tuple(value["frequency"]), tuple(value["monetary"])
        )

    def scores(self, lifetime: LifetimePurchases, as_of_ts: int) -> tuple[int, int, int] | None:
        """(R, F, M) quintile scores 1-5, 5 the best (most recent, most frequent, highest
        spend); None for a user who never bought."""
        days = lifetime.days_since(as_of_ts)
        if days is None:
            return None
        r = 5 - bisect.bisect_right(self.recency_days, days)  # fewer days than most: 5
        f = 1 + bisect.bisect_left(self.frequency, lifetime.count)
        m = 1 + bisect.bisect_left(self.monetary, lifetime.mean())
        return max(r, 1), f, m


# The quintile edges: the values below which a fifth, two fifths... of the customers fall.
QUANTILES = (0.2, 0.4, 0.6, 0.8)
