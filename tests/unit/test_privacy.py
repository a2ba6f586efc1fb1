"""Data minimization where events are parsed (udfs/privacy.py), and the contract's `context`:
an additive change that every event of the previous contract still meets."""

import gzip
import json
from pathlib import Path

import pytest

from bench.in_memory import InMemoryPipeline
from tests.conftest import TEST_NOW_MS
from tests.unit.test_bench import in_memory
from udfs import outputs
from udfs.events import DeadLetter, Event, EventParser, Reason, SourceRef, event_to_dict
from udfs.privacy import (
    Context,
    device_class,
    minimize_context,
    normalize_query,
    origin,
    scrubbed,
    truncate_ip,
)

SOURCE = SourceRef("events", 0, 1)
# Events the contract took before it had a `context`, as the generator of that release wrote
# them (40 users over 3 days, seed 77, every event type).
BEFORE_CONTEXT = Path(__file__).parents[1] / "data" / "events_before_context.jsonl.gz"

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
FULL_CONTEXT = {
    "device_type": None,
    "platform": "web",
    "app_version": "4.2.1",
    "channel": "email",
    "campaign": "spring-02",
    "referrer": "https://jo:secret@mail.example.com:8443/open?to=jo%40example.com#x",
    "locale": "de-DE",
    "geo": {"country": "DE", "region": "BE", "city": "Berlin", "lat": 52.52, "lon": 13.4},
    "ip": "83.12.45.200",
    "user_agent": IPHONE,
    "screen": "1170x2532",
}


@pytest.fixture
def parser():
    return EventParser(now_ms=lambda: TEST_NOW_MS)


def event(**context):
    doc = {
        "event_id": "e1",
        "user_id": "u1",
        "session_id": "s1",
        "type": "app_click",
        "ts": TEST_NOW_MS - 1000,
        "schema_version": 1,
        "feature": "dark_mode",
    }
    if context:
        doc["context"] = {k: v for k, v in context.items() if v is not None}
    return doc


@pytest.mark.parametrize(
    "address, network",
    [
        ("83.12.45.200", "83.12.45.0"),
        ("10.0.0.1", "10.0.0.0"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ("::ffff:83.12.45.200", "::"),
    ],
)
def test_an_ip_address_keeps_its_network_part_only_and_truncating_again_changes_nothing(
    address, network
):
    assert truncate_ip(address) == network
    assert truncate_ip(network) == network


@pytest.mark.parametrize(
    "user_agent, expected",
    [
        (IPHONE, "mobile"),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko)"
            " Chrome/124.0.0.0 Mobile Safari/537.36",
            "mobile",
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
            " Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            "tablet",
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko)"
            " Chrome/124.0.0.0 Safari/537.36",
            "tablet",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
            " Chrome/124.0.0.0 Safari/537.36",
            "desktop",
        ),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "desktop"),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
        (
            "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/538.1 (KHTML, like Gecko)"
            " Version/6.0 TV Safari/538.1",
            "tv",
        ),
        ("curl-ish/0.1", "other"),
    ],
)
def test_a_user_agent_is_reduced_to_its_device_class(user_agent, expected):
    assert device_class(user_agent) == expected


def test_a_referrer_keeps_its_scheme_and_host_only():
    assert origin(FULL_CONTEXT["referrer"]) == "https://mail.example.com"
    assert origin("android-app://com.example.shop/path") == "android-app://com.example.shop"
    assert origin("not a url") is None


def test_a_search_query_keeps_normalized_terms_without_emails_or_long_numbers():
    query = "Red  NIKE shoes size 42, call +49 1512 3456789 or mail jo.doe@example.com red"
    assert normalize_query(query) == "red nike shoes size 42 call 49 or mail"
    assert normalize_query("Ｓｃｈｕｈｅ grün 👟 “quoted”") == "schuhe grün quoted"
    assert len(normalize_query(" ".join(f"w{i}" for i in range(50))).split()) == 10


def test_an_events_context_is_minimized_where_it_is_parsed(parser):
    parsed = parser.parse(json.dumps(event(**FULL_CONTEXT)).encode(), SOURCE)
    assert isinstance(parsed, Event)
    assert parsed.context == Context(
        device_type="mobile",
        platform="web",
        app_version="4.2.1",
        channel="email",
        campaign="spring-02",
        referrer="https://mail.example.com",
        locale="de-DE",
        country="DE",
        region="BE",
        ip="83.12.45.0",
    )
    # The wire and archive forms are contract input too: parsing them again changes nothing.
    again = parser.parse(json.dumps(event_to_dict(parsed)).encode(), SOURCE)
    assert again == parsed
    archived = outputs.archived(parsed, SOURCE, parsed.user_id)
    stored = dict(zip(outputs.ARCHIVE.names, archived.values, strict=True))
    assert json.loads(stored["context"]) == parsed.context.to_json()


def test_a_device_type_the_tracker_sends_wins_over_the_user_agent():
    assert minimize_context({"device_type": "tablet", "user_agent": IPHONE}).device_type == "tablet"
    assert minimize_context({"screen": "1x1"}) is None


@pytest.mark.parametrize(
    "context, field",
    [
        ({"ip": "83.12.45.999"}, "ip"),
        ({"device_type": "fridge"}, "device_type"),
        ({"geo": {"country": "Germany"}}, "country"),
        ({"locale": "x"}, "locale"),
        ({"user_agent": "u" * 2000}, "user_agent"),
    ],
)
def test_an_invalid_context_is_a_schema_violation_naming_the_field(parser, context, field):
    parsed = parser.parse(json.dumps(event(**context)).encode(), SOURCE)
    assert isinstance(parsed, DeadLetter)
    assert parsed.reason is Reason.SCHEMA_VIOLATION
    assert field in parsed.detail


def test_a_refused_record_keeps_no_full_ip_address_or_user_agent(parser):
    raw = json.dumps({**event(**FULL_CONTEXT), "ts": "yesterday"}).encode()
    letter = parser.parse(raw, SOURCE)
    assert isinstance(letter, DeadLetter)
    kept = letter.raw.decode()
    assert "83.12.45.200" not in kept and IPHONE not in kept and "jo%40example" not in kept
    assert json.loads(kept)["context"]["ip"] == "83.12.45.0"
    # Not even JSON: addresses masked, user agents removed from the text.
    broken = b'{"ip": "83.12.45.200", "v6": "2001:db8:85a3::8a2e:370:7334", "user_agent": "Moz'
    broken += b'illa/5.0 (X11)", "context": '
    text = scrubbed(broken).decode()
    assert "83.12.45.200" not in text and "8a2e:370:7334" not in text and "X11" not in text
    assert "83.12.45.0" in text


def previous_contract_events() -> list[dict]:
    with gzip.open(BEFORE_CONTEXT, "rt") as lines:
        return [json.loads(line) for line in lines]


def test_every_event_of_the_previous_contract_parses_as_it_did(parser):
    docs = previous_contract_events()
    assert {d["type"] for d in docs} >= {"purchase", "consent_update", "search", "offer_response"}
    for doc in docs:
        parsed = parser.parse(json.dumps(doc).encode(), SOURCE)
        assert isinstance(parsed, Event), parsed
        assert parsed.context is None
        expected = {**doc, "query": normalize_query(doc["query"])} if "query" in doc else doc
        assert event_to_dict(parsed) == expected


def test_a_context_changes_no_profile_score_or_decision(settings):
    """The previous contract's events through the job's per-user pipeline, as they were and
    with a context on each: every output but the archive's context column is the same."""

    def run(pipeline: InMemoryPipeline, docs: list[dict]) -> list:
        out = []
        for offset, doc in enumerate(docs):
            raw = json.dumps(doc).encode()
            out += pipeline.process(raw, SourceRef("events", 0, offset), doc["user_id"])
        pipeline.advance(2**63 - 1, out)
        return [
            (
                e.output.name,
                e.values[:7] + e.values[8:] if e.output is outputs.ARCHIVE else e.values,
            )
            for e in out
        ]

    docs = previous_contract_events()
    with_context = [{**d, "context": FULL_CONTEXT | {"device_type": "desktop"}} for d in docs]
    plain, contextual = run(in_memory(settings), docs), run(in_memory(settings), with_context)
    assert {"archive", "profiles", "sessions"} <= {name for name, _ in plain}
    assert contextual == plain
