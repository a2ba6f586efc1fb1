import json
import random
from collections import Counter, defaultdict

from conf.settings import Incident
from models.generator import ARCHETYPES, EventGenerator, hostile_record, with_hostile_records
from tests.conftest import TEST_NOW_MS, event_bytes
from udfs.events import DeadLetter, Event, EventParser, SourceRef
from udfs.timeunits import DAY_MS


def parse_all(events):
    parser = EventParser(now_ms=lambda: TEST_NOW_MS)
    return [parser.parse(event_bytes(e), SourceRef("events", 0, i)) for i, e in enumerate(events)]


def test_same_seed_gives_the_same_history(settings):
    a = EventGenerator(settings.generator, users=12, days=2, seed=5).generate()
    b = EventGenerator(settings.generator, users=12, days=2, seed=5).generate()
    c = EventGenerator(settings.generator, users=12, days=2, seed=6).generate()
    assert a.events == b.events and a.sessions == b.sessions
    assert a.events != c.events


def test_every_generated_event_satisfies_the_contract(small_history):
    results = parse_all(small_history.events)
    bad = [r for r in results if isinstance(r, DeadLetter)]
    assert bad == []
    assert len({r.event_id for r in results}) == len(results)


def test_history_covers_archetypes_and_event_types(small_history):
    assert {u.archetype for u in small_history.users} == set(ARCHETYPES)
    types = Counter(e["type"] for e in small_history.events)
    for expected in (
        "page_view",
        "search",
        "product_view",
        "add_to_cart",
        "checkout_start",
        "purchase",
        "coupon_attempt",
        "email_open",
        "app_click",
        "consent_update",
    ):
        assert types[expected] > 0, expected


def test_event_time_starts_at_the_configured_epoch(settings, small_history):
    first = min(e["ts"] for e in small_history.events)
    assert settings.generator.start_ts_ms <= first < settings.generator.start_ts_ms + 3 * 86_400_000


def test_some_events_arrive_out_of_order_but_each_user_stays_mostly_ordered(small_history):
    ts = [e["ts"] for e in small_history.events]
    inversions = sum(1 for a, b in zip(ts, ts[1:], strict=False) if b < a)
    assert 0 < inversions < 0.2 * len(ts)


def test_abandonment_truth_matches_the_events(small_history):
    by_session = defaultdict(list)
    for e in small_history.events:
        by_session[e["session_id"]].append(e["type"])
    assert any(s.abandoned for s in small_history.sessions)
    for s in small_history.sessions:
        types = by_session[s.session_id]
        assert s.added_to_cart == ("add_to_cart" in types)
        assert s.purchased == ("purchase" in types)
        assert s.abandoned == (s.added_to_cart and not s.purchased)


def test_cart_abandoners_abandon_more_than_impulse_buyers(settings):
    history = EventGenerator(settings.generator, users=120, days=7, seed=3).generate()
    archetype = {u.user_id: u.archetype for u in history.users}
    rate = {}
    for name in ("cart_abandoner", "impulse_buyer"):
        carts = [s for s in history.sessions if archetype[s.user_id] == name and s.added_to_cart]
        rate[name] = sum(s.abandoned for s in carts) / len(carts)
    assert rate["cart_abandoner"] > rate["impulse_buyer"] + 0.2


def test_drifters_are_less_active_after_their_drift_starts(settings):
    history = EventGenerator(settings.generator, users=120, days=14, seed=3).generate()
    drifters = [u for u in history.users if u.drifted]
    assert drifters and all(u.drift_start_ms for u in drifters)
    before = after = 0.0
    end = settings.generator.start_ts_ms + 14 * 86_400_000
    for u in drifters:
        sessions = [s for s in history.sessions if s.user_id == u.user_id]
        start = settings.generator.start_ts_ms
        before += sum(s.start_ms < u.drift_start_ms for s in sessions) / (u.drift_start_ms - start)
        after += sum(s.start_ms >= u.drift_start_ms for s in sessions) / (end - u.drift_start_ms)
    assert after < 0.6 * before


def test_each_hostile_record_is_refused_with_the_reason_it_was_built_for(small_history):
    rng = random.Random(99)
    parser = EventParser(now_ms=lambda: TEST_NOW_MS)
    bounds = (parser.min_ts_ms, TEST_NOW_MS + parser.max_future_skew_ms)
    seen = Counter()
    for i in range(3000):
        raw, reason = hostile_record(
            rng, small_history.events[i % len(small_history.events)], bounds
        )
        result = parser.parse(raw, SourceRef("events", 0, i))
        assert isinstance(result, DeadLetter), raw[:200]
        assert result.reason is reason, (raw[:200], result.detail)
        seen[reason] += 1
    assert len(seen) >= 9


def test_hostile_mix_keeps_every_valid_event(small_history):
    mixed = list(with_hostile_records(small_history.events, 0.3, 1, (0, 2**62)))
    valid = [raw for _, raw, reason in mixed if reason is None]
    assert all((key is None) == (reason is not None) for key, _, reason in mixed)
    assert len(valid) == len(small_history.events)
    assert 0.15 * len(valid) < len(mixed) - len(valid) < 0.45 * len(valid)
    assert all(isinstance(r, Event) for r in parse_all([json.loads(v) for v in valid]))


def test_a_site_without_support_pages_has_none(small_history):
    urls = {e["url"] for e in small_history.events if e["type"] == "page_view"}
    assert all(u.startswith("/c/") for u in urls)
    assert small_history.incidents == []


def test_a_payment_outage_fails_checkouts_and_sends_users_to_error_and_support_pages(settings):
    generator = settings.generator.model_copy(
        update={"support_page_rate": 0.03, "incident": Incident(start_day=2, days=2)}
    )
    history = EventGenerator(generator, users=300, days=6, seed=5).generate()
    [outage] = history.incidents
    assert (outage.kind, outage.end_ms - outage.start_ms) == ("payment_outage", 2 * DAY_MS)
    during = lambda e: outage.start_ms <= e["ts"] < outage.end_ms  # noqa: E731
    counts = {True: Counter(), False: Counter()}
    for e in history.events:
        c = counts[during(e)]
        c[e["type"]] += 1
        if e["type"] == "page_view":
            c["support"] += e["url"].startswith(("/help/", "/error/"))
            c["error"] += e["url"] == "/error/payment"
    inside, outside = counts[True], counts[False]
    assert outside["error"] == 0 and inside["error"] > 0
    share = {k: c["support"] / c["page_view"] for k, c in counts.items()}
    assert 0.02 < share[False] < 0.04
    assert share[True] > 4 * share[False]
    conversion = {k: c["purchase"] / c["checkout_start"] for k, c in counts.items()}
    assert conversion[True] < 0.5 * conversion[False]
