"""The event contract: typed events, their versioned JSON Schemas and the parser.

`EventParser.parse(raw, source)` turns the bytes of one Kafka record into an `Event`, or into a
`DeadLetter` that says why it was refused and keeps the original bytes and where they came from.
It never raises for bad input, so one bad record cannot stop a job.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema

from udfs.privacy import Context, kept_of_refused, minimize_context, normalize_query

SUPPORTED_SCHEMA_VERSIONS = (1,)
SCHEMA_BASE_URI = "https://behavior-engine/schemas/"


class EventType(StrEnum):
    PAGE_VIEW = "page_view"
    SEARCH = "search"
    PRODUCT_VIEW = "product_view"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    WISHLIST_ADD = "wishlist_add"
    WISHLIST_REMOVE = "wishlist_remove"
    COUPON_ATTEMPT = "coupon_attempt"
    CONTENT_INTERACTION = "content_interaction"
    EMAIL_OPEN = "email_open"
    EMAIL_CLICK = "email_click"
    EMAIL_REPLY = "email_reply"
    APP_CLICK = "app_click"
    CHECKOUT_START = "checkout_start"
    PURCHASE = "purchase"
    OFFER_RESPONSE = "offer_response"
    CONSENT_UPDATE = "consent_update"
    ERASURE_REQUEST = "erasure_request"
    ACTION_REQUEST = "action_request"


class Reason(StrEnum):
    """Why a record went to the dead-letter topic."""

    OVERSIZED = "oversized"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    SCHEMA_VIOLATION = "schema_violation"
    BAD_TIMESTAMP = "bad_timestamp"
    INVALID_TEXT = "invalid_text"
    UNMAPPED_EVENT = "unmapped_event"
    LATE = "late"  # valid, but further behind the watermark than the allowed lateness


# ------------------------------------------------------------------ typed payloads

Attributes = Mapping[str, str | float | bool]


@dataclass(frozen=True, slots=True)
class PageView:
    url: str
    category: str
    dwell_ms: int
    scroll_depth: float


@dataclass(frozen=True, slots=True)
class Search:
    query: str
    filters: Attributes


@dataclass(frozen=True, slots=True)
class ProductView:
    product_id: str
    category: str
    price: float
    attributes: Attributes


@dataclass(frozen=True, slots=True)
class CartChange:
    """add_to_cart or remove_from_cart."""

    product_id: str
    quantity: int
    price: float


@dataclass(frozen=True, slots=True)
class WishlistChange:
    """wishlist_add or wishlist_remove."""

    product_id: str


@dataclass(frozen=True, slots=True)
class CouponAttempt:
    code: str
    success: bool


@dataclass(frozen=True, slots=True)
class ContentInteraction:
    content_id: str
    kind: str  # banner | recommendation | help_tip


@dataclass(frozen=True, slots=True)
class EmailEngagement:
    """email_open, email_click or email_reply."""

    campaign_id: str


@dataclass(frozen=True, slots=True)
class AppClick:
    feature: str


@dataclass(frozen=True, slots=True)
class CheckoutStart:
    cart_value: float | None


@dataclass(frozen=True, slots=True)
class PurchaseItem:
    product_id: str
    quantity: int
    price: float
    category: str | None


@dataclass(frozen=True, slots=True)
class Purchase:
    order_id: str
    total: float
    items: tuple[PurchaseItem, ...]


@dataclass(frozen=True, slots=True)
class OfferResponse:
    action_id: str
    response: str  # accepted | dismissed | ignored


@dataclass(frozen=True, slots=True)
class ConsentUpdate:
    purposes: Mapping[str, bool]


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    request_id: str


@dataclass(frozen=True, slots=True)
class ActionRequest:
    action: str
    request_id: str


Payload = (
    PageView
    | Search
    | ProductView
    | CartChange
    | WishlistChange
    | CouponAttempt
    | ContentInteraction
    | EmailEngagement
    | AppClick
    | CheckoutStart
    | Purchase
    | OfferResponse
    | ConsentUpdate
    | ErasureRequest
    | ActionRequest
)


def _purchase(d: dict) -> Purchase:
    items = tuple(
        PurchaseItem(i["product_id"], int(i["quantity"]), float(i["price"]), i.get("category"))
        for i in d["items"]
    )
    return Purchase(d["order_id"], float(d["total"]), items)


PAYLOAD_BUILDERS: dict[EventType, Callable[[dict], Payload]] = {
    EventType.PAGE_VIEW: lambda d: PageView(
        d["url"], d["category"], int(d["dwell_ms"]), float(d["scroll_depth"])
    ),
    EventType.SEARCH: lambda d: Search(normalize_query(d["query"]), d["filters"]),
    EventType.PRODUCT_VIEW: lambda d: ProductView(
        d["product_id"], d["category"], float(d["price"]), d["attributes"]
    ),
    EventType.ADD_TO_CART: lambda d: CartChange(
        d["product_id"], int(d["quantity"]), float(d["price"])
    ),
    EventType.REMOVE_FROM_CART: lambda d: CartChange(
        d["product_id"], int(d["quantity"]), float(d["price"])
    ),
    EventType.WISHLIST_ADD: lambda d: WishlistChange(d["product_id"]),
    EventType.WISHLIST_REMOVE: lambda d: WishlistChange(d["product_id"]),
    EventType.COUPON_ATTEMPT: lambda d: CouponAttempt(d["code"], d["success"]),
    EventType.CONTENT_INTERACTION: lambda d: ContentInteraction(d["content_id"], d["kind"]),
    EventType.EMAIL_OPEN: lambda d: EmailEngagement(d["campaign_id"]),
    EventType.EMAIL_CLICK: lambda d: EmailEngagement(d["campaign_id"]),
    EventType.EMAIL_REPLY: lambda d: EmailEngagement(d["campaign_id"]),
    EventType.APP_CLICK: lambda d: AppClick(d["feature"]),
    EventType.CHECKOUT_START: lambda d: CheckoutStart(
        float(d["cart_value"]) if "cart_value" in d else None
    ),
    EventType.PURCHASE: _purchase,
    EventType.OFFER_RESPONSE: lambda d: OfferResponse(d["action_id"], d["response"]),
    EventType.CONSENT_UPDATE: lambda d: ConsentUpdate(d["purposes"]),
    EventType.ERASURE_REQUEST: lambda d: ErasureRequest(d["request_id"]),
    EventType.ACTION_REQUEST: lambda d: ActionRequest(d["action"], d["request_id"]),
}

ENVELOPE_FIELDS = ("event_id", "user_id", "session_id", "type", "ts", "schema_version")


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    user_id: str
    session_id: str
    type: EventType
    ts: int  # event time, epoch milliseconds
    schema_version: int
    data: Payload
    context: Context | None = None  # minimized (udfs/privacy.py)

    def properties(self) -> dict[str, Any]:
        """The type-specific fields as plain JSON-ready values (absent optionals left out)."""
        return _plain(self.data)


def _plain(value: Any) -> Any:
    # A direct walk over the slots: dataclasses.asdict deep-copies and costs as much as parsing.
    if hasattr(value, "__dataclass_fields__"):
        return {
            name: _plain(item)
            for name in value.__slots__
            if (item := getattr(value, name)) is not None
        }
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value  # str, numbers, bools, and JSON mappings taken as parsed


# ------------------------------------------------------------------ dead letters


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a record came from: a Kafka topic/partition/offset, or a file and line."""

    topic: str
    partition: int
    offset: int

    @property
    def record_id(self) -> str:
        return f"{self.topic}-{self.partition}-{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: Reason
    detail: str
    raw: bytes
    source: SourceRef

    @property
    def dead_letter_id(self) -> str:
        """Deterministic: the same bad record always gets the same id, even after a replay."""
        return self.source.record_id

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "dead_letter_id": self.dead_letter_id,
                "reason": self.reason.value,
                "detail": self.detail,
                "source": {
                    "topic": self.source.topic,
                    "partition": self.source.partition,
                    "offset": self.source.offset,
                },
                "raw_size": len(self.raw),
                "raw_base64": base64.b64encode(self.raw).decode("ascii"),
            },
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def from_json(value: bytes) -> DeadLetter:
        d = json.loads(value)
        source = SourceRef(d["source"]["topic"], d["source"]["partition"], d["source"]["offset"])
        return DeadLetter(
            Reason(d["reason"]), d["detail"], base64.b64decode(d["raw_base64"]), source
        )


# ------------------------------------------------------------------ schemas and parsing


def _schema_text(version: int, name: str) -> str:
    return resources.files("udfs").joinpath("schemas", f"v{version}", f"{name}.json").read_text()


def _resolve_local(uri: str) -> dict:
    """fastjsonschema ref handler: schemas come from the package, never from the network."""
    if not uri.startswith(SCHEMA_BASE_URI):
        raise ValueError(f"refusing to resolve remote schema {uri}")
    version_dir, name = uri[len(SCHEMA_BASE_URI) :].split("/", 1)
    return json.loads(_schema_text(int(version_dir.lstrip("v")), name.removesuffix(".json")))


@cache
def schema(version: int, event_type: EventType) -> dict:
    return json.loads(_schema_text(version, event_type.value))


@cache
def validator(version: int, event_type: EventType) -> Callable[[Any], Any]:
    return fastjsonschema.compile(schema(version, event_type), handlers={"https": _resolve_local})


def _bad_text(value: Any) -> str | None:
    """NUL and unpaired surrogates are legal JSON escapes, but no database or JVM string takes
    them."""
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired surrogate"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _bad_text(key) or _bad_text(item)
            if problem:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _bad_text(item)
            if problem:
                return problem
    return None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


_TYPES = {t.value: t for t in EventType}


@dataclass
class EventParser:
    """Parses raw event bytes. `now_ms` is injectable so tests never depend on the wall clock."""

    max_bytes: int = 65_536
    min_ts_ms: int = 946_684_800_000
    max_future_skew_ms: int = 86_400_000
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000)

    def parse(self, raw: bytes, source: SourceRef) -> Event | DeadLetter:
        parsed = self._parse(raw, source)
        if isinstance(parsed, DeadLetter):
            # A refused record keeps its bytes, but not a full IP address or user agent.
            return DeadLetter(parsed.reason, parsed.detail, kept_of_refused(raw), source)
        return parsed

    def _parse(self, raw: bytes, source: SourceRef) -> Event | DeadLetter:
        def dead(reason: Reason, detail: str) -> DeadLetter:
            return DeadLetter(reason, detail[:500], raw, source)

        if raw is None:
            return dead(Reason.INVALID_JSON, "record has no value (tombstone)")
        if len(raw) > self.max_bytes:
            return dead(Reason.OVERSIZED, f"{len(raw)} bytes exceeds the limit of {self.max_bytes}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return dead(Reason.INVALID_ENCODING, f"not UTF-8: {exc}")
        try:
            doc = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return dead(Reason.INVALID_JSON, str(exc))
        if not isinstance(doc, dict):
            return dead(Reason.NOT_AN_OBJECT, f"top level is {type(doc).__name__}, not an object")
        # Only escapes (\\u0000, \\ud800) can smuggle these in, so skip the walk without them.
        if "\\u" in text:
            problem = _bad_text(doc)
            if problem:
                return dead(Reason.INVALID_TEXT, f"a string {problem}")
        event_type = _TYPES.get(doc.get("type")) if isinstance(doc.get("type"), str) else None
        if event_type is None:
            return dead(Reason.UNKNOWN_TYPE, f"unknown event type {str(doc.get('type'))[:100]!r}")
        version = doc.get("schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
            return dead(
                Reason.UNSUPPORTED_SCHEMA_VERSION,
                f"schema_version {str(version)[:50]!r} is not one of {SUPPORTED_SCHEMA_VERSIONS}",
            )
        try:
            validator(version, event_type)(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            return dead(Reason.SCHEMA_VIOLATION, f"{event_type.value}: {exc.message}")
        ts = int(doc["ts"])
        latest = self.now_ms() + self.max_future_skew_ms
        if not self.min_ts_ms <= ts <= latest:
            return dead(
                Reason.BAD_TIMESTAMP,
                f"ts {ts} outside [{self.min_ts_ms}, {latest}] (epoch milliseconds expected)",
            )
        return Event(
            event_id=doc["event_id"],
            user_id=doc["user_id"],
            session_id=doc["session_id"],
            type=event_type,
            ts=ts,
            schema_version=version,
            data=PAYLOAD_BUILDERS[event_type](doc),
            context=minimize_context(doc["context"]) if "context" in doc else None,
        )


def event_to_dict(event: Event) -> dict[str, Any]:
    """The wire form of an event: envelope fields plus the type-specific fields, flat."""
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "session_id": event.session_id,
        "type": event.type.value,
        "ts": event.ts,
        "schema_version": event.schema_version,
        **event.properties(),
        **({"context": event.context.to_json()} if event.context is not None else {}),
    }
