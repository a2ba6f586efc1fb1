"""Features of a profile, each a documented formula over the layers (all in [0, 1] unless
noted). Settings are `conf.settings.Profile`; weights and scales come from there.

- engagement_score = 1 - exp(-E / scale), E = dwell_minute * decayed dwell minutes
  + product_view * decayed product views + search * decayed searches.
- category_affinity = the largest share of decayed attention (page views, product views and
  purchased items per category); `top_category` is that category.
- price_sensitivity = c * cheapness + (1 - c) * discount_reaction, cheapness = 1 / (1 + 2^m)
  with m the decayed mean log2(price / category reference price) of viewed products (0.5 with no
  priced views), discount_reaction = 1 - exp(-(decayed coupon attempts + accepted offers) / s).
- intent_strength = 1 - exp(-I / scale), I = add_to_cart * decayed cart adds + wishlist *
  decayed wishlist changes + checkout * decayed checkouts + dwell_minute * mean dwell minutes.
- session_recency = 2^(-gap / recency_half_life), gap = time between the latest session's
  start and the user's activity before it; 0 for a first session.
- RFM (purchases and engagement actions) and the dynamic weights: see udfs/rfm.py.
- deviation z-scores of the current session against the baseline, and `deviation`, their
  root mean square.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from conf.settings import Profile as ProfileSettings
from udfs.decay import decay
from udfs.rfm import RfmTracker, dynamic_weights, parameters_for
from udfs.states import STATE_INDEX
from udfs.timeunits import DAY_MS
from udfs.trends import Trends, mean_and_std

BROWSE, SEARCH, VIEW = STATE_INDEX["browse"], STATE_INDEX["search"], STATE_INDEX["view"]
CART, WISHLIST, CHECKOUT = STATE_INDEX["cart"], STATE_INDEX["wishlist"], STATE_INDEX["checkout"]


@dataclass(frozen=True, slots=True)
class Features:
    engagement_score: float
    category_affinity: float
    top_category: str | None
    price_sensitivity: float
    intent_strength: float
    session_recency: float
    rfm_purchase: tuple[float, float, float]  # recency, frequency, monetary
    rfm_engagement: tuple[float, float, float]
    rfm_weights: tuple[float, float, float]  # dynamic w_R, w_F, w_M (sum 1)

    @property
    def segment(self) -> tuple[float, ...]:
        """The current segment profile: weighted purchase R, F, M then engagement R, F, M."""
        values = self.rfm_purchase + self.rfm_engagement
        return tuple(w * x for w, x in zip(self.rfm_weights * 2, values, strict=True))

    @property
    def rfm_purchase_score(self) -> float:
        return sum(self.segment[:3])

    @property
    def rfm_engagement_score(self) -> float:
        return sum(self.segment[3:])


def saturate(x: float, scale: float) -> float:
    return 1.0 - math.exp(-x / scale)


def engagement_score(trends: Trends, s: ProfileSettings) -> float:
    e = s.engagement
    dwell_minutes = trends.dwell_s[1] / 60.0
    raw = (
        e.dwell_minute * dwell_minutes
        + e.product_view * trends.counts[VIEW]
        + e.search * trends.counts[SEARCH]
    )
    return saturate(raw, e.scale)


def intent_strength(trends: Trends, s: ProfileSettings) -> float:
    i = s.intent
    mean_dwell_minutes = mean_and_std(trends.dwell_s)[0] / 60.0
    raw = (
        i.add_to_cart * trends.counts[CART]
        + i.wishlist * trends.counts[WISHLIST]
        + i.checkout * trends.counts[CHECKOUT]
        + i.dwell_minute * mean_dwell_minutes
    )
    return saturate(raw, i.scale)


def price_sensitivity(trends: Trends, s: ProfileSettings) -> float:
    p = s.price
    weight, total = trends.price_log_ratio
    cheapness = 1.0 / (1.0 + 2.0 ** (total / weight)) if weight > 0 else 0.5
    reaction = saturate(trends.discounts, p.discount_scale)
    return p.cheapness_weight * cheapness + (1.0 - p.cheapness_weight) * reaction


def top_category(trends: Trends) -> tuple[str | None, float]:
    shares = trends.category_shares()
    if not shares:
        return None, 0.0
    category = min(shares, key=lambda c: (-shares[c], c))
    return category, shares[category]


def session_recency(return_gap_ms: int | None, s: ProfileSettings) -> float:
    if return_gap_ms is None:
        return 0.0
    return decay(max(return_gap_ms, 0), s.recency_half_life_ms)


def compute(
    trends: Trends,
    purchases: RfmTracker,
    engagement: RfmTracker,
    recency: float,
    now_ms: int,
    s: ProfileSettings,
) -> Features:
    rfm = s.rfm
    half_life = rfm.half_life_days * DAY_MS
    recency_half_life = rfm.recency_half_life_days * DAY_MS
    category, affinity = top_category(trends)
    engaged = engagement_score(trends, s)
    intent = intent_strength(trends, s)
    price = price_sensitivity(trends, s)
    rfm_purchase = purchases.scores(
        now_ms,
        half_life,
        recency_half_life,
        rfm.purchase_frequency_scale,
        rfm.purchase_monetary_scale,
    )
    rfm_engagement = engagement.scores(
        now_ms,
        half_life,
        recency_half_life,
        rfm.engagement_frequency_scale,
        rfm.engagement_monetary_scale,
    )
    weights = dynamic_weights(parameters_for(rfm, category), recency, affinity, intent, price)
    return Features(
        engaged, affinity, category, price, intent, recency, rfm_purchase, rfm_engagement, weights
    )
