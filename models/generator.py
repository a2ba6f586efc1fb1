"""Synthetic behavioural history with hidden ground truth.

Users belong to archetypes (researchers, impulse buyers, price-sensitive browsers, loyal
repeaters, users drifting away, cart abandoners). Each session is a Markov journey between event
types whose transition weights depend on the archetype; dwell, scroll, prices, carts, coupons,
purchases, emails, in-app clicks and offer responses follow from it. Everything is drawn from one
seeded `random.Random`, so a seed always gives the same events. Event time starts at a configured
epoch (never the wall clock); some events are emitted out of order or late on purpose.

Users of an archetype share item tastes: a share of their product picks (`item_taste`) comes from
their archetype's favourite products of the category, drawn from a second seeded generator so
that everything else a seed gives stays the same whatever the tastes.

The ground truth (archetype, drift, whether each session ended in abandonment, each archetype's
favourite products) is returned separately and never written into the events.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from conf.settings import Generator as GeneratorSettings
from models.tracker_context import TrackerContexts
from udfs.events import Reason
from udfs.timeunits import DAY_MS, MINUTE_MS

CATEGORIES = {  # category -> (median price, log-normal sigma)
    "electronics": (180.0, 0.8),
    "fashion": (45.0, 0.6),
    "home": (70.0, 0.7),
    "beauty": (25.0, 0.5),
    "sports": (60.0, 0.7),
    "books": (15.0, 0.4),
    "toys": (30.0, 0.6),
    "grocery": (8.0, 0.5),
}
BRANDS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
FEATURES = ("wishlist_tab", "order_tracking", "dark_mode", "notifications", "size_guide")
SUPPORT_PAGES = ("/help/faq", "/help/returns", "/help/support-chat", "/help/payment")
ERROR_PAGE = "/error/payment"

# Base journey: from each event type, relative weights of the next one ("exit" ends the session).
BASE_TRANSITIONS: dict[str, dict[str, float]] = {
    "page_view": {
        "page_view": 3,
        "search": 2,
        "product_view": 4,
        "content_interaction": 0.6,
        "app_click": 0.4,
        "exit": 1.2,
    },
    "search": {"product_view": 5, "search": 1, "page_view": 1, "exit": 0.6},
    "product_view": {
        "product_view": 3,
        "add_to_cart": 1.2,
        "wishlist_add": 0.4,
        "search": 1,
        "page_view": 1,
        "content_interaction": 0.3,
        "exit": 1.0,
    },
    "add_to_cart": {
        "product_view": 2,
        "checkout_start": 1.5,
        "remove_from_cart": 0.3,
        "coupon_attempt": 0.4,
        "exit": 0.5,
    },
    "remove_from_cart": {"product_view": 2, "exit": 1},
    "wishlist_add": {"product_view": 2, "wishlist_remove": 0.1, "exit": 0.5},
    "wishlist_remove": {"product_view": 1, "exit": 1},
    "coupon_attempt": {"checkout_start": 2, "coupon_attempt": 0.3, "exit": 0.5},
    "content_interaction": {"product_view": 2, "page_view": 1, "exit": 0.5},
    "app_click": {"page_view": 2, "product_view": 1, "exit": 0.5},
    "checkout_start": {"purchase": 1.6, "coupon_attempt": 0.3, "exit": 0.6},
    "purchase": {"page_view": 0.5, "exit": 2},
    "email_click": {"product_view": 2, "page_view": 1},
}


@dataclass(frozen=True)
class Archetype:
    name: str
    sessions_per_day: float
    bias: dict[str, float]  # multiplies BASE_TRANSITIONS weights by next event type
    dwell_median_ms: float
    scroll_mean: float
    price_quantile: tuple[float, float]  # price multipliers this user shops within
    coupon_success: float
    offer_accept: float
    email_rate: float  # probability a session starts from an email
    drifts: bool = False


ARCHETYPES = {
    a.name: a
    for a in (
        Archetype(
            "researcher",
            1.2,
            {
                "search": 2.5,
                "product_view": 2.0,
                "exit": 0.5,
                "add_to_cart": 0.35,
                "purchase": 0.6,
                "wishlist_add": 2.0,
            },
            42_000,
            0.8,
            (0.7, 1.6),
            0.5,
            0.15,
            0.1,
        ),
        Archetype(
            "impulse_buyer",
            0.8,
            {
                "add_to_cart": 3.0,
                "checkout_start": 2.5,
                "purchase": 3.0,
                "search": 0.4,
                "exit": 0.5,
            },
            6_000,
            0.3,
            (0.6, 1.8),
            0.5,
            0.45,
            0.15,
        ),
        Archetype(
            "price_sensitive",
            1.0,
            {"coupon_attempt": 5.0, "search": 1.5, "purchase": 0.7, "add_to_cart": 0.8},
            18_000,
            0.6,
            (0.3, 0.8),
            0.35,
            0.6,
            0.3,
        ),
        Archetype(
            "loyal_repeater",
            1.5,
            {"purchase": 3.0, "checkout_start": 2.2, "app_click": 3.0, "exit": 0.6},
            15_000,
            0.5,
            (0.8, 1.3),
            0.6,
            0.35,
            0.4,
        ),
        Archetype(
            "drifter",
            1.3,
            {"content_interaction": 1.5, "purchase": 0.8},
            20_000,
            0.5,
            (0.7, 1.3),
            0.5,
            0.2,
            0.25,
            drifts=True,
        ),
        Archetype(
            "cart_abandoner",
            1.0,
            {"add_to_cart": 2.5, "checkout_start": 1.8, "purchase": 0.05, "exit": 1.5},
            12_000,
            0.45,
            (0.8, 1.5),
            0.3,
            0.3,
            0.2,
        ),
    )
}


@dataclass(frozen=True)
class Product:
    product_id: str
    category: str
    price: float
    brand: str


@dataclass
class UserTruth:
    user_id: str
    archetype: str
    drifted: bool
    drift_start_ms: int | None


@dataclass
class SessionTruth:
    session_id: str
    user_id: str
    start_ms: int
    end_ms: int
    added_to_cart: bool
    purchased: bool

    @property
    def abandoned(self) -> bool:
        return self.added_to_cart and not self.purchased


@dataclass
class IncidentTruth:
    kind: str
    start_ms: int
    end_ms: int


@dataclass
class History:
    """Events in emission order (some out of order on purpose) and the hidden truth."""

    events: list[dict]
    users: list[UserTruth]
    sessions: list[SessionTruth]
    incidents: list[IncidentTruth] = field(default_factory=list)
    # archetype -> category -> its favourite product ids, most favoured first
    tastes: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass
class _Session:
    user: UserTruth
    archetype: Archetype
    rng: random.Random
    catalog: dict[str, list[Product]]
    favourite: str
    session_id: str
    ts: int
    events: list[dict] = field(default_factory=list)
    cart: dict[str, tuple[Product, int]] = field(default_factory=dict)
    purchased: bool = False
    added_to_cart: bool = False
    viewed: list[Product] = field(default_factory=list)
    payment_failed: bool = False
    context: dict | None = None  # what the tracker sends with each event (tracker_context)


class EventGenerator:
    def __init__(
        self,
        settings: GeneratorSettings,
        users: int | None = None,
        days: float | None = None,
        seed: int | None = None,
    ):
        self.settings = settings
        self.users = users if users is not None else settings.users
        self.days = days if days is not None else settings.days
        self.seed = seed if seed is not None else settings.seed
        self.rng = random.Random(self.seed)
        self.catalog = self._catalog()
        self.taste_rng = random.Random(f"{self.seed}-tastes")
        self.tastes = self._tastes()
        self.contexts = TrackerContexts(self.seed, settings.context_rate)
        incident = settings.incident
        self.incident = (
            IncidentTruth(
                "payment_outage",
                settings.start_ts_ms + int(incident.start_day * DAY_MS),
                settings.start_ts_ms + int((incident.start_day + incident.days) * DAY_MS),
            )
            if incident is not None
            else None
        )

    @property
    def run_id(self) -> str:
        run = f"seed{self.seed}-users{self.users}-days{self.days:g}-t{self.settings.start_ts_ms}"
        if self.settings.support_page_rate:
            run += f"-support{self.settings.support_page_rate:g}"
        if self.settings.item_taste:
            run += f"-taste{self.settings.item_taste:g}x{self.settings.taste_items}"
        if self.settings.context_rate:
            run += f"-context{self.settings.context_rate:g}"
        run += (
            f"-consent{self.settings.personalization_consent:g}x{self.settings.marketing_consent:g}"
        )
        if self.incident is not None:
            run += f"-outage{self.incident.start_ms}-{self.incident.end_ms}"
        return run

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _catalog(self) -> dict[str, list[Product]]:
        catalog = {}
        for category, (median, sigma) in CATEGORIES.items():
            catalog[category] = [
                Product(
                    f"{category[:3]}-{i:04d}",
                    category,
                    round(median * math.exp(self.rng.gauss(0, sigma)), 2),
                    self.rng.choice(BRANDS),
                )
                for i in range(self.settings.products_per_category)
            ]
        return catalog

    def _tastes(self) -> dict[str, dict[str, list[Product]]]:
        count = min(self.settings.taste_items, self.settings.products_per_category)
        return {
            name: {
                c: self.taste_rng.sample(products, count) for c, products in self.catalog.items()
            }
            for name in ARCHETYPES
        }

    # ---------------------------------------------------------------- whole history

    def generate(self, on_user: Callable[[], None] | None = None) -> History:
        """`on_user`: called after each user is simulated (progress)."""
        start = self.settings.start_ts_ms
        end = start + int(self.days * DAY_MS)
        names = list(ARCHETYPES)
        timeline: list[dict] = []
        users, sessions = [], []
        for n in range(self.users):
            archetype = ARCHETYPES[names[n % len(names)]]
            user_id = f"u{n:06d}"
            drift_start = (
                start + int(self.rng.uniform(0.1, 0.6) * (end - start))
                if archetype.drifts
                else None
            )
            truth = UserTruth(user_id, archetype.name, archetype.drifts, drift_start)
            users.append(truth)
            favourite = self.rng.choice(list(CATEGORIES))
            context = self.contexts.for_user(user_id)
            ts = start + int(self.rng.expovariate(archetype.sessions_per_day) * DAY_MS)
            first = True
            while ts < end:
                session = self._session(truth, archetype, favourite, ts, first, context)
                first = False
                timeline.extend(session.events)
                sessions.append(
                    SessionTruth(
                        session.session_id,
                        user_id,
                        session.events[0]["ts"],
                        session.events[-1]["ts"],
                        session.added_to_cart,
                        session.purchased,
                    )
                )
                rate = archetype.sessions_per_day
                if drift_start is not None and ts > drift_start:
                    rate *= math.exp(-(ts - drift_start) / (3 * DAY_MS))  # fades within days
                gap = self.rng.expovariate(max(rate, 0.02)) * DAY_MS
                ts = session.ts + max(int(gap), 30 * MINUTE_MS)
            if on_user is not None:
                on_user()
        timeline.sort(key=lambda e: e["ts"])
        incidents = [self.incident] if self.incident is not None else []
        tastes = {
            name: {c: [p.product_id for p in products] for c, products in by_category.items()}
            for name, by_category in self.tastes.items()
        }
        return History(self._emission_order(timeline), users, sessions, incidents, tastes)

    def _emission_order(self, timeline: list[dict]) -> list[dict]:
        """Delay a few events so they arrive out of order (small delay) or late (large delay)."""
        s = self.settings
        keyed = []
        for i, event in enumerate(timeline):
            roll = self.rng.random()
            delay = 0
            if roll < s.late_rate:
                delay = self.rng.randint(
                    s.max_out_of_order_ms, max(s.max_late_ms, s.max_out_of_order_ms)
                )
            elif roll < s.late_rate + s.out_of_order_rate:
                delay = self.rng.randint(1, max(s.max_out_of_order_ms, 1))
            keyed.append((event["ts"] + delay, i, event))
        keyed.sort(key=lambda k: (k[0], k[1]))
        return [event for _, _, event in keyed]

    # ---------------------------------------------------------------- one session

    def _session(
        self,
        user: UserTruth,
        archetype: Archetype,
        favourite: str,
        ts: int,
        first: bool,
        context: dict | None = None,
    ) -> _Session:
        rng = self.rng
        s = _Session(user, archetype, rng, self.catalog, favourite, self._id(), ts)
        s.context = self.contexts.for_session(context, user.user_id)
        if first:
            purposes = {
                "analytics": True,
                "personalization": rng.random() < self.settings.personalization_consent,
                "marketing": rng.random() < self.settings.marketing_consent,
            }
            self._emit(s, "consent_update", 500, purposes=purposes)
        if rng.random() < archetype.email_rate:
            campaign = f"cmp-{rng.randint(1, 40):03d}"
            self._emit(s, "email_open", rng.randint(2_000, 20_000), campaign_id=campaign)
            if rng.random() < 0.05:
                self._emit(s, "email_reply", rng.randint(5_000, 60_000), campaign_id=campaign)
            self._emit(s, "email_click", rng.randint(1_000, 5_000), campaign_id=campaign)
            state = "email_click"
        else:
            state = "page_view"
            self._page_view(s)
        for _ in range(60):  # hard cap on journey length
            state = self._next_state(s, state)
            if state == "exit":
                break
            self._step(s, state)
        if s.cart and rng.random() < 0.12:  # some respond to an on-site offer before leaving
            response = (
                "accepted"
                if rng.random() < archetype.offer_accept
                else rng.choice(["dismissed", "ignored"])
            )
            self._emit(
                s,
                "offer_response",
                rng.randint(1_000, 10_000),
                action_id=f"offer-{rng.randint(1, 9):02d}",
                response=response,
            )
        return s

    def _in_incident(self, ts: int) -> bool:
        return self.incident is not None and self.incident.start_ms <= ts < self.incident.end_ms

    def _next_state(self, s: _Session, state: str) -> str:
        if s.payment_failed:
            return "exit"
        weights = dict(BASE_TRANSITIONS[state])
        if not s.cart:
            weights.pop("checkout_start", None)
            weights.pop("remove_from_cart", None)
        for target in weights:
            weights[target] *= s.archetype.bias.get(target, 1.0)
        if "exit" in weights:
            weights["exit"] *= 1.0 + 3.0 * self._fade(s)  # drifting users leave sooner
        targets = list(weights)
        return s.rng.choices(targets, weights=[weights[t] for t in targets])[0]

    def _dwell(self, s: _Session) -> int:
        median = s.archetype.dwell_median_ms * (1.0 - 0.6 * self._fade(s))
        return max(300, int(median * math.exp(s.rng.gauss(0, 0.7))))

    @staticmethod
    def _fade(s: _Session) -> float:
        """How far a drifting user has drifted: 0 before the drift starts, towards 1 over the
        following days. Their sessions get shorter and their attention thinner as it grows."""
        start = s.user.drift_start_ms
        if start is None or s.ts <= start:
            return 0.0
        return 1.0 - math.exp(-(s.ts - start) / (3 * DAY_MS))

    def _emit(self, s: _Session, event_type: str, gap_ms: int, **fields) -> None:
        s.ts += gap_ms
        s.events.append(
            {
                "event_id": self._id(),
                "user_id": s.user.user_id,
                "session_id": s.session_id,
                "type": event_type,
                "ts": s.ts,
                "schema_version": 1,
                **fields,
                **({"context": s.context} if s.context is not None else {}),
            }
        )

    def _pick_product(self, s: _Session) -> Product:
        category = s.favourite if s.rng.random() < 0.6 else s.rng.choice(list(CATEGORIES))
        low, high = s.archetype.price_quantile
        median = CATEGORIES[category][0]
        candidates = [p for p in s.catalog[category] if low * median <= p.price <= high * median]
        product = s.rng.choice(candidates or s.catalog[category])
        if self.taste_rng.random() >= self.settings.item_taste:
            return product
        # The archetype's taste, within the user's price band when any of it is.
        favourites = self.tastes[s.archetype.name][category]
        affordable = [p for p in favourites if low * median <= p.price <= high * median]
        favourites = affordable or favourites
        weights = [1.0 / (rank + 1) for rank in range(len(favourites))]
        return self.taste_rng.choices(favourites, weights)[0]

    def _page_view(self, s: _Session, url: str | None = None) -> None:
        category = s.favourite if s.rng.random() < 0.5 else s.rng.choice(list(CATEGORIES))
        scroll = min(1.0, max(0.0, s.rng.betavariate(2, 2) * 2 * s.archetype.scroll_mean))
        support_rate = self.settings.support_page_rate
        if support_rate and url is None:  # drawn only when the site has support pages
            if self._in_incident(s.ts):
                support_rate *= self.settings.incident.support_multiplier
            if s.rng.random() < support_rate:
                url = s.rng.choice(SUPPORT_PAGES)
        self._emit(
            s,
            "page_view",
            s.rng.randint(500, 3_000),
            url=url or f"/c/{category}",
            category="help" if url else category,
            dwell_ms=self._dwell(s),
            scroll_depth=round(scroll, 3),
        )

    def _step(self, s: _Session, state: str) -> None:
        rng = s.rng
        think = rng.randint(1_000, 8_000)
        if state == "page_view":
            self._page_view(s)
        elif state == "search":
            product = self._pick_product(s)
            filters: dict = {"category": product.category}
            if s.archetype.price_quantile[1] < 1.0:
                filters["max_price"] = round(product.price * 1.2, 2)
            self._emit(
                s, "search", think, query=f"{product.brand} {product.category}", filters=filters
            )
        elif state == "product_view":
            product = self._pick_product(s)
            s.viewed.append(product)
            self._emit(
                s,
                "product_view",
                think + self._dwell(s) // 3,
                product_id=product.product_id,
                category=product.category,
                price=product.price,
                attributes={"brand": product.brand, "discounted": rng.random() < 0.2},
            )
        elif state == "add_to_cart":
            product = s.viewed[-1] if s.viewed else self._pick_product(s)
            quantity = 1 if rng.random() < 0.8 else rng.randint(2, 3)
            previous = s.cart.get(product.product_id, (product, 0))[1]
            s.cart[product.product_id] = (product, previous + quantity)
            s.added_to_cart = True
            self._emit(
                s,
                "add_to_cart",
                think,
                product_id=product.product_id,
                quantity=quantity,
                price=product.price,
            )
        elif state == "remove_from_cart":
            product_id = rng.choice(list(s.cart))
            product, quantity = s.cart.pop(product_id)
            self._emit(
                s,
                "remove_from_cart",
                think,
                product_id=product_id,
                quantity=quantity,
                price=product.price,
            )
        elif state in ("wishlist_add", "wishlist_remove"):
            product = s.viewed[-1] if s.viewed else self._pick_product(s)
            self._emit(s, state, think, product_id=product.product_id)
        elif state == "coupon_attempt":
            code = rng.choice(["SAVE10", "WELCOME", "FREESHIP", "VIP20", "EXPIRED5"])
            self._emit(
                s,
                "coupon_attempt",
                think,
                code=code,
                success=rng.random() < s.archetype.coupon_success,
            )
        elif state == "content_interaction":
            self._emit(
                s,
                "content_interaction",
                think,
                content_id=f"cnt-{rng.randint(1, 60):03d}",
                kind=rng.choice(["banner", "recommendation", "help_tip"]),
            )
        elif state == "app_click":
            self._emit(s, "app_click", think, feature=rng.choice(FEATURES))
        elif state == "checkout_start":
            self._emit(s, "checkout_start", think, cart_value=self._cart_total(s))
            if self._in_incident(s.ts) and rng.random() < self.settings.incident.checkout_failure:
                # The payment fails: an error page, the support chat, and the user leaves.
                s.payment_failed = True
                self._page_view(s, ERROR_PAGE)
                self._page_view(s, "/help/support-chat")
        elif state == "purchase":
            if not s.cart:
                return
            items = [
                {
                    "product_id": p.product_id,
                    "quantity": q,
                    "price": p.price,
                    "category": p.category,
                }
                for p, q in s.cart.values()
            ]
            self._emit(
                s,
                "purchase",
                rng.randint(5_000, 40_000),
                order_id=f"ord-{self._id()[:13]}",
                total=self._cart_total(s),
                items=items,
            )
            s.cart.clear()
            s.purchased = True

    @staticmethod
    def _cart_total(s: _Session) -> float:
        return round(sum(p.price * q for p, q in s.cart.values()), 2)


# -------------------------------------------------------------------- hostile input


def hostile_record(
    rng: random.Random, valid: dict, ts_bounds: tuple[int, int], max_bytes: int = 65_536
) -> tuple[bytes, Reason]:
    """One malformed record derived from a valid event, with the reason the parser must give.

    `ts_bounds` is (earliest, latest) event time the parser accepts; `max_bytes` the largest
    record it accepts (an oversized record is just over it).
    """
    broken = dict(valid)
    kind = rng.randrange(12)
    if kind == 0:
        text = json.dumps(valid)
        return text[: rng.randint(1, len(text) - 1)].encode(), Reason.INVALID_JSON
    if kind == 1:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))) + b"\xff", (
            Reason.INVALID_ENCODING
        )
    if kind == 2:
        broken["type"] = rng.choice(["page_veiw", "", "PURCHASE", "teleport"])
        return json.dumps(broken).encode(), Reason.UNKNOWN_TYPE
    if kind == 3:
        broken.pop(rng.choice(["event_id", "user_id", "session_id", "ts"]))
        return json.dumps(broken).encode(), Reason.SCHEMA_VIOLATION
    if kind == 4:
        broken[rng.choice(["user_id", "event_id", "session_id"])] = rng.choice([None, 42, [], {}])
        return json.dumps(broken).encode(), Reason.SCHEMA_VIOLATION
    if kind == 5:
        broken["ts"] = rng.choice([str(valid["ts"]), valid["ts"] + 0.5, None, True])
        return json.dumps(broken).encode(), Reason.SCHEMA_VIOLATION
    if kind == 6:
        broken["ts"] = rng.choice([ts_bounds[0] - 1, 0, -5, ts_bounds[1] + DAY_MS * 365 * 100])
        return json.dumps(broken).encode(), Reason.BAD_TIMESTAMP
    if kind == 7:
        broken["padding"] = "x" * max_bytes
        return json.dumps(broken).encode(), Reason.OVERSIZED
    if kind == 8:
        broken["schema_version"] = rng.choice([0, 2, 99, "1"])
        return json.dumps(broken).encode(), Reason.UNSUPPORTED_SCHEMA_VERSION
    if kind == 9:
        return json.dumps(rng.choice([[valid], "event", 17, None])).encode(), Reason.NOT_AN_OBJECT
    if kind == 10:
        broken["user_id"] = rng.choice(["nul\u0000byte", "lone\ud800surrogate"])
        return json.dumps(broken).encode(), Reason.INVALID_TEXT
    broken["event_id"] = "x" * 129  # longer than the contract allows
    return json.dumps(broken).encode(), Reason.SCHEMA_VIOLATION


def with_hostile_records(
    events: list[dict], rate: float, seed: int, ts_bounds: tuple[int, int], max_bytes: int = 65_536
) -> Iterator[tuple[str | None, bytes, Reason | None]]:
    """Serialize events, mixing in hostile records at `rate`.

    Yields (key, bytes, expected reason): valid events are keyed by user and have no reason;
    hostile records have no key.
    """
    rng = random.Random(seed ^ 0x5EED)
    for event in events:
        if rate and rng.random() < rate:
            yield None, *hostile_record(rng, event, ts_bounds, max_bytes)
        yield event["user_id"], json.dumps(event, separators=(",", ":")).encode(), None
