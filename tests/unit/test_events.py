import json

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.conftest import TEST_NOW_MS, event_bytes
from udfs.events import (
    CartChange,
    DeadLetter,
    Event,
    EventParser,
    EventType,
    Purchase,
    Reason,
    SourceRef,
    event_to_dict,
    schema,
)

SOURCE = SourceRef("events", 3, 1017)
ENVELOPE = {
    "event_id": "e-1",
    "user_id": "u-1",
    "session_id": "s-1",
    "ts": 1_767_225_600_000,
    "schema_version": 1,
}
EXAMPLES = {
    "page_view": {"url": "/c/books", "category": "books", "dwell_ms": 1200, "scroll_depth": 0.4},
    "search": {"query": "red shoes", "filters": {"max_price": 50}},
    "product_view": {
        "product_id": "p1",
        "category": "fashion",
        "price": 19.9,
        "attributes": {"brand": "acme"},
    },
    "add_to_cart": {"product_id": "p1", "quantity": 2, "price": 19.9},
    "remove_from_cart": {"product_id": "p1", "quantity": 1, "price": 19.9},
    "wishlist_add": {"product_id": "p1"},
    "wishlist_remove": {"product_id": "p1"},
    "coupon_attempt": {"code": "SAVE10", "success": False},
    "content_interaction": {"content_id": "c1", "kind": "help_tip"},
    "email_open": {"campaign_id": "cmp-1"},
    "email_click": {"campaign_id": "cmp-1"},
    "email_reply": {"campaign_id": "cmp-1"},
    "app_click": {"feature": "dark_mode"},
    "checkout_start": {"cart_value": 39.8},
    "purchase": {
        "order_id": "o1",
        "total": 39.8,
        "items": [{"product_id": "p1", "quantity": 2, "price": 19.9}],
    },
    "offer_response": {"action_id": "a1", "response": "accepted"},
    "consent_update": {"purposes": {"marketing": False, "analytics": True}},
    "erasure_request": {"request_id": "dsr-2026-0042"},
    "action_request": {"action": "discount_offer", "request_id": "checkout-7f3a"},
}


@pytest.fixture
def parser():
    return EventParser(now_ms=lambda: TEST_NOW_MS)


def doc(event_type, **changes):
    return {**ENVELOPE, "type": event_type, **EXAMPLES[event_type], **changes}


def test_every_event_type_has_a_schema_and_an_example():
    assert set(EXAMPLES) == {t.value for t in EventType}
    for t in EventType:
        assert schema(1, t)["title"] == t.value


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_valid_event_of_each_type_parses_to_a_typed_event(parser, event_type):
    result = parser.parse(event_bytes(doc(event_type)), SOURCE)
    assert isinstance(result, Event), result
    assert result.type.value == event_type
    assert result.ts == ENVELOPE["ts"]
    assert event_to_dict(result) == doc(event_type)


def test_payloads_are_typed(parser):
    cart = parser.parse(event_bytes(doc("add_to_cart")), SOURCE)
    assert cart.data == CartChange("p1", 2, 19.9)
    purchase = parser.parse(event_bytes(doc("purchase")), SOURCE)
    assert isinstance(purchase.data, Purchase)
    assert purchase.data.items[0].quantity == 2


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (b'{"event_id": "e', Reason.INVALID_JSON, "char"),
        (b"\xff\xfe", Reason.INVALID_ENCODING, "UTF-8"),
        (b"[1, 2]", Reason.NOT_AN_OBJECT, "list"),
        (b'{"a": NaN}', Reason.INVALID_JSON, "NaN"),
        (event_bytes(doc("page_view", type="page_veiw")), Reason.UNKNOWN_TYPE, "page_veiw"),
        (event_bytes(doc("page_view", schema_version=2)), Reason.UNSUPPORTED_SCHEMA_VERSION, "2"),
        (
            event_bytes(doc("page_view", schema_version=True)),
            Reason.UNSUPPORTED_SCHEMA_VERSION,
            "True",
        ),
        (event_bytes(doc("page_view", dwell_ms="12")), Reason.SCHEMA_VIOLATION, "dwell_ms"),
        (event_bytes(doc("page_view", scroll_depth=1.5)), Reason.SCHEMA_VIOLATION, "scroll_depth"),
        (
            event_bytes({k: v for k, v in doc("search").items() if k != "user_id"}),
            Reason.SCHEMA_VIOLATION,
            "user_id",
        ),
        (event_bytes(doc("purchase", items=[])), Reason.SCHEMA_VIOLATION, "items"),
        (event_bytes(doc("offer_response", response="maybe")), Reason.SCHEMA_VIOLATION, "response"),
        (event_bytes(doc("app_click", ts="1767225600000")), Reason.SCHEMA_VIOLATION, "ts"),
        (
            event_bytes(doc("app_click", ts=1_767_225_600)),
            Reason.BAD_TIMESTAMP,
            "epoch milliseconds",
        ),
        (
            event_bytes(doc("app_click", ts=TEST_NOW_MS + 2 * 86_400_000)),
            Reason.BAD_TIMESTAMP,
            "outside",
        ),
        (event_bytes(doc("app_click", user_id="a\u0000b")), Reason.INVALID_TEXT, "NUL"),
        (event_bytes(doc("app_click", feature="\ud83d")), Reason.INVALID_TEXT, "surrogate"),
        (event_bytes(doc("app_click", feature="x" * 70_000)), Reason.OVERSIZED, "65536"),
    ],
)
def test_invalid_record_becomes_a_dead_letter_with_its_reason(parser, raw, reason, detail):
    result = parser.parse(raw, SOURCE)
    assert isinstance(result, DeadLetter)
    assert result.reason is reason
    assert detail in result.detail
    assert result.raw == raw
    assert result.source == SOURCE


def test_unicode_text_is_valid(parser):
    result = parser.parse(event_bytes(doc("app_click", feature="Schuhe grün 👟 “quoted”")), SOURCE)
    assert isinstance(result, Event)
    assert result.data.feature == "Schuhe grün 👟 “quoted”"


def test_dead_letter_keeps_bytes_reason_and_coordinates_through_json(parser):
    letter = parser.parse(b"\x00garbage\xff", SOURCE)
    again = DeadLetter.from_json(letter.to_json())
    assert again == letter
    assert json.loads(letter.to_json())["dead_letter_id"] == "events-3-1017"


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_parser_never_raises_on_arbitrary_bytes(raw):
    result = EventParser(now_ms=lambda: TEST_NOW_MS).parse(raw, SOURCE)
    assert isinstance(result, Event | DeadLetter)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@hsettings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(EXAMPLES)),
    st.sampled_from(
        [
            "event_id",
            "user_id",
            "session_id",
            "ts",
            "type",
            "schema_version",
            "price",
            "items",
            "purposes",
            "query",
            "quantity",
        ]
    ),
    json_values,
)
def test_any_field_replaced_by_any_json_value_is_parsed_or_dead_lettered(event_type, field, value):
    raw = json.dumps({**doc(event_type), field: value}).encode()
    result = EventParser(now_ms=lambda: TEST_NOW_MS).parse(raw, SOURCE)
    if isinstance(result, DeadLetter):
        assert result.reason in set(Reason) and result.detail
    else:
        assert result.type.value == event_type
