"""Layer 2, short-term trends: time-decayed counts and statistics (half-life from config)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from udfs.decay import advance
from udfs.events import (
    Event,
    EventType,
    OfferResponse,
    PageView,
    ProductView,
    Purchase,
)
from udfs.states import ACTIVE_STATES


def _moments() -> list[float]:
    return [0.0, 0.0, 0.0]  # decayed weight, weighted sum, weighted sum of squares


def mean_and_std(moments: list[float]) -> tuple[float, float]:
    w, s, ss = moments
    if w <= 0:
        return 0.0, 0.0
    mean = s / w
    mean_square = ss / w
    variance = mean_square - mean * mean
    # E[x^2] - E[x]^2 cancels to rounding noise when all values are equal; call that zero so
    # the result does not depend on the order the sums were built in.
    if variance <= 1e-12 * mean_square:
        return mean, 0.0
    return mean, math.sqrt(variance)


@dataclass(slots=True)
class Trends:
    ref_ts: int | None = None
    # Decayed count of events per behavioural state (exit excluded).
    counts: list[float] = field(default_factory=lambda: [0.0] * ACTIVE_STATES)
    dwell_s: list[float] = field(default_factory=_moments)  # page-view dwell, seconds
    scroll: list[float] = field(default_factory=_moments)  # page-view scroll depth, 0..1
    # Decayed weight and weighted sum of log2(price / reference price) over product views.
    price_log_ratio: list[float] = field(default_factory=lambda: [0.0, 0.0])
    discounts: float = 0.0  # decayed coupon attempts plus accepted offers
    attention: dict[str, float] = field(default_factory=dict)  # decayed views per category

    def add(
        self,
        event: Event,
        state: int,
        half_life_ms: float,
        reference_prices: dict[str, float],
    ) -> None:
        self.ref_ts, age, w = advance(self.ref_ts, event.ts, half_life_ms)
        if age != 1.0:
            self._age(age)
        self.counts[state] += w
        data = event.data
        if isinstance(data, PageView):
            _add_moment(self.dwell_s, data.dwell_ms / 1000.0, w)
            _add_moment(self.scroll, data.scroll_depth, w)
            self._attend(data.category, w)
        elif isinstance(data, ProductView):
            self._attend(data.category, w)
            reference = reference_prices.get(data.category)
            if reference and data.price > 0:
                self.price_log_ratio[0] += w
                self.price_log_ratio[1] += w * math.log2(data.price / reference)
        elif event.type is EventType.COUPON_ATTEMPT or (
            isinstance(data, OfferResponse) and data.response == "accepted"
        ):
            self.discounts += w
        elif isinstance(data, Purchase):
            for item in data.items:
                if item.category:
                    self._attend(item.category, w)

    def _attend(self, category: str, w: float) -> None:
        self.attention[category] = self.attention.get(category, 0.0) + w

    def _age(self, factor: float) -> None:
        self.counts = [c * factor for c in self.counts]
        self.dwell_s = [m * factor for m in self.dwell_s]
        self.scroll = [m * factor for m in self.scroll]
        self.price_log_ratio = [m * factor for m in self.price_log_ratio]
        self.discounts *= factor
        self.attention = {c: a * factor for c, a in self.attention.items()}

    def category_shares(self) -> dict[str, float]:
        total = sum(self.attention.values())
        if total <= 0:
            return {}
        return {c: a / total for c, a in self.attention.items()}


def _add_moment(moments: list[float], x: float, w: float) -> None:
    moments[0] += w
    moments[1] += w * x
    moments[2] += w * x * x
