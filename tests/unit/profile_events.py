"""Hand-written events for the profile unit tests: explicit event times, no generator."""

from __future__ import annotations

import itertools

from udfs.events import (
    CartChange,
    CheckoutStart,
    CouponAttempt,
    EmailEngagement,
    Event,
    EventType,
    PageView,
    ProductView,
    Purchase,
    PurchaseItem,
    Search,
)
from udfs.timeunits import DAY_MS, HOUR_MS, MINUTE_MS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE, HOUR, DAY = MINUTE_MS, HOUR_MS, DAY_MS
_ids = itertools.count()


def event(kind: EventType, ts: int, data, session: str = "s1", user: str = "u1") -> Event:
    return Event(f"e{next(_ids):05d}", user, session, kind, ts, 1, data)


def page(ts, category="books", dwell_ms=60_000, scroll=0.5, session="s1"):
    return event(
        EventType.PAGE_VIEW, ts, PageView(f"/c/{category}", category, dwell_ms, scroll), session
    )


def view(ts, category="books", price=15.0, session="s1", item="p1"):
    return event(EventType.PRODUCT_VIEW, ts, ProductView(item, category, price, {}), session)


def search(ts, session="s1"):
    return event(EventType.SEARCH, ts, Search("q", {}), session)


def cart(ts, price=10.0, session="s1"):
    return event(EventType.ADD_TO_CART, ts, CartChange("p1", 1, price), session)


def checkout(ts, value=10.0, session="s1"):
    return event(EventType.CHECKOUT_START, ts, CheckoutStart(value), session)


def purchase(ts, total=100.0, category="books", session="s1"):
    item = PurchaseItem("p1", 1, total, category)
    return event(EventType.PURCHASE, ts, Purchase("o1", total, (item,)), session)


def coupon(ts, session="s1"):
    return event(EventType.COUPON_ATTEMPT, ts, CouponAttempt("SAVE", True), session)


def email_click(ts, session="s1"):
    return event(EventType.EMAIL_CLICK, ts, EmailEngagement("c1"), session)
