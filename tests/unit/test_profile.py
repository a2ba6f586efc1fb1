import math
import pickle
import statistics
from pathlib import Path

import pytest

from conf import settings as settings_module
from models.generator import EventGenerator
from tests.conftest import TEST_NOW_MS, assert_nearly_equal, event_bytes
from tests.unit.dataclass_fields import differences, fields_at_default
from tests.unit.profile_events import (
    DAY,
    HOUR,
    MINUTE,
    T0,
    cart,
    checkout,
    coupon,
    page,
    purchase,
    search,
    view,
)
from udfs import profile_state, state_legacy
from udfs.cohort_assignment import CohortState
from udfs.events import EventParser, EventType, SourceRef
from udfs.profile import UserProfile
from udfs.recommend import Shopper
from udfs.rfm import LifetimePurchases, RfmBreakpoints
from udfs.schedule import Schedule
from udfs.states import K

S = settings_module.load("local").profile
DATA = Path(__file__).resolve().parents[1] / "data"
NEVER = -(2**62)  # a watermark before everything


def replay(events, settings=S, out_of_orderness=10_000):
    """Feeds events in the given order with a watermark trailing the largest time seen, the way
    the job does, then closes everything (the end of input)."""
    profile = UserProfile.new(events[0].user_id, settings)
    top = NEVER
    for e in events:
        top = max(top, e.ts)
        watermark = top - out_of_orderness
        profile.close_sessions(watermark, settings)
        profile.apply(e, watermark, settings)
    profile.close_sessions(2**62, settings)
    return profile


def generated_events(users=30, days=3, seed=11):
    config = settings_module.load("local")
    history = EventGenerator(config.generator, users=users, days=days, seed=seed).generate()
    parser = EventParser(now_ms=lambda: TEST_NOW_MS)
    events = [
        parser.parse(event_bytes(e), SourceRef("events", 0, i))
        for i, e in enumerate(history.events)
    ]
    return history, [e for e in events if e.type is not EventType.CONSENT_UPDATE]


def test_every_event_and_every_closed_session_is_a_new_version():
    profile = replay([page(T0), view(T0 + MINUTE), page(T0 + 2 * HOUR, session="s2")])
    assert (profile.events, profile.baseline.n, profile.version) == (3, 2, 5)


def test_a_new_user_gets_the_prior_propensities_and_churn():
    settings = S.model_copy(update={"propensity_steps": 1})
    profile = UserProfile.new("u1", settings)
    profile.apply(page(T0), NEVER, settings)
    ranked = profile.propensities(settings)
    # churn: one session, no exposure yet: rate = (1 + 1) / (0 + 7) per day over 7 days
    assert ranked[0] == ("churn", pytest.approx(math.exp(-2.0)))
    assert ranked[1:] == [
        ("add_to_cart", pytest.approx(1 / K)),
        ("checkout_start", pytest.approx(1 / K)),
        ("purchase", pytest.approx(1 / K)),
    ]


def test_closing_a_session_refreshes_the_transition_model_and_the_propensities():
    settings = S.model_copy(update={"propensity_steps": 1})
    events = [page(T0), view(T0 + MINUTE), cart(T0 + 2 * MINUTE), purchase(T0 + 3 * MINUTE)]
    profile = replay(events, settings)
    # From the last state (purchase) the only move seen is to exit: the cart is 1/12 of the
    # prior's strength 2 over 2 + 1 counts.
    assert dict(profile.propensities(settings))["add_to_cart"] == pytest.approx((2 / 12) / 3)
    assert profile.reach is not None


def test_churn_grows_as_sessions_thin_out():
    regular = replay([page(T0 + d * DAY, session=f"s{d}") for d in range(10)])
    lapsed = replay([page(T0 + d * DAY, session=f"s{d}") for d in (0, 1, 2, 9)])
    assert lapsed.churn(S) > regular.churn(S)


def test_out_of_order_arrival_gives_the_same_profile_as_event_time_order():
    _, events = generated_events()
    by_user = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    for user_events in list(by_user.values())[:10]:
        # Emission order has events up to an hour late; a watermark that waits two hours never
        # closes a session before its stragglers arrive.
        arrived = replay(user_events, out_of_orderness=2 * HOUR)
        ordered = replay(sorted(user_events, key=lambda e: (e.ts, e.event_id)), out_of_orderness=0)
        assert arrived.late_events == 0
        a, b = arrived.snapshot(S), ordered.snapshot(S)
        assert_nearly_equal(a.columns, b.columns)
        assert_nearly_equal(a.details, b.details)


def test_a_session_straggler_after_its_close_is_counted_late_but_still_profiled():
    profile = UserProfile.new("u1", S)
    profile.apply(page(T0), NEVER, S)
    profile.close_sessions(T0 + HOUR, S)
    profile.apply(view(T0 + MINUTE), T0 + HOUR, S)
    assert (profile.events, profile.late_events, profile.baseline.n) == (2, 1, 1)


def test_timers_are_the_open_session_closes_and_the_expiry():
    profile = UserProfile.new("u1", S)
    profile.apply(page(T0), NEVER, S)
    profile.apply(page(T0 + 5 * MINUTE, session="s2"), NEVER, S)
    assert profile.timers(S) == {
        T0 + S.session_gap_ms,
        T0 + 5 * MINUTE + S.session_gap_ms,
        T0 + 5 * MINUTE + S.ttl_ms,
    }
    profile.close_sessions(2**62, S)
    assert profile.timers(S) == {T0 + 5 * MINUTE + S.ttl_ms}


def every_field_set() -> profile_state.UserState:
    """A user state in which no field, at any depth, holds its default."""
    _, events = generated_events(users=6, days=2)
    profile = replay([e for e in events if e.user_id == events[0].user_id])
    t = profile.last_ts + DAY
    profile.apply(page(t, session="closed"), NEVER, S)
    profile.close_sessions(t + S.session_gap_ms, S)
    profile.apply(page(t + 1, session="closed"), NEVER, S)  # a straggler: late
    t += HOUR
    for i, make in enumerate([page, search, view, checkout, purchase, cart, coupon]):
        profile.apply(make(t + i * MINUTE, session="open"), NEVER, S)
    profile.session_starts.value = profile.recent_starts.value = 1.5  # kept even if unused
    profile.dormant_since = t - DAY  # inconsistent with the events, but a value to keep
    return profile_state.UserState(
        profile,
        Schedule(wake_at=t + S.session_gap_ms, last_emit=t, outcome_due=t + 7),
        CohortState(2, profile.first_ts, 1, 3, profile.last_ts, assessed_changes=4, dense=1),
        ledger='[{"offer":1},1,{}]',
        awaiting='{"d1":1}',
        seen={"e-last": t},
        last_lead=(0.25, "Cohort", (1, 2)),
        shopper=Shopper([["boo-0001", "purchase", t, "books", 12.5]], ["boo-0001"], 5, 2),
        consent={"analytics": (True, t - DAY), "marketing": (False, t)},
        awaiting_leads='[["7","lead_score",1,"e","v",true,null,[0.4,0.3]]]',
    )


def test_user_state_round_trips_through_a_pickle_with_every_field():
    user = every_field_set()
    assert fields_at_default(user) == [], "the fixture must set every field"
    states = profile_state.StateCodec(S)
    again = states.unpack(pickle.loads(pickle.dumps(states.pack(user))))
    assert differences(user, again) == []


def test_a_user_with_nothing_kept_unpacks_empty():
    assert profile_state.StateCodec(S).unpack(None) == profile_state.UserState()


def test_archetypes_are_visibly_different_in_the_features():
    history, events = generated_events(users=120, days=7, seed=5)
    archetype = {u.user_id: u.archetype for u in history.users}
    profiles = {}
    for e in events:
        profile = profiles.get(e.user_id) or UserProfile.new(e.user_id, S)
        profile.apply(e, e.ts - 10_000, S)
        profile.close_sessions(e.ts - 10_000, S)
        profiles[e.user_id] = profile

    def mean(kind, column):
        values = [
            p.snapshot(S).columns[column] for user, p in profiles.items() if archetype[user] == kind
        ]
        return statistics.mean(values)

    assert mean("researcher", "engagement_score") > mean("impulse_buyer", "engagement_score")
    assert mean("researcher", "intent_strength") < mean("impulse_buyer", "intent_strength")
    assert mean("price_sensitive", "price_sensitivity") > mean(
        "loyal_repeater", "price_sensitivity"
    )
    assert mean("loyal_repeater", "rfm_purchase_score") > mean(
        "cart_abandoner", "rfm_purchase_score"
    )


def stored_states() -> dict:
    """One every_field_set() user as the job stored it before the state had schema versions
    (`before_versions`) and in schema version 1 (`version_1`), written once by the code of
    each."""
    return pickle.loads((DATA / "user_states.pickle").read_bytes())


def legacy_value() -> tuple:
    return stored_states()["before_versions"]


def test_states_stored_by_older_code_read_whole():
    states = profile_state.StateCodec(S)
    stored = stored_states()
    first_version = states.unpack(stored["version_1"])
    # New since: their defaults.
    assert fields_at_default(first_version) == [
        ".last_lead",
        ".shopper",
        ".consent",
        ".awaiting_leads",
    ]
    assert differences(first_version, states.unpack(stored["before_versions"])) == []


def test_a_state_stored_before_the_lifetime_counters_reads_with_them_at_zero():
    profile, *rest = legacy_value()
    old = (profile[: state_legacy.BEFORE_LIFETIME], *rest)
    again = profile_state.StateCodec(S).unpack(old).profile
    assert (again.lifetime, again.dormant_since) == (LifetimePurchases(), None)
    assert again.transitions.counts and again.baseline.n > 0


def test_seen_event_ids_are_bounded_oldest_first_and_forgotten_past_the_horizon():
    user = profile_state.UserState()
    for ts in (5, 3, 9, 7):
        user.remember(f"e{ts}", ts, limit=3)
    assert [user.has_seen(f"e{ts}") for ts in (3, 5, 7, 9)] == [False, True, True, True]
    user.forget_seen(before_ts=7)
    assert sorted(user.seen.values()) == [7, 9]
    user.seen["e1"] = 8  # an id as states stored before the digests keep it
    assert user.has_seen("e1") and not user.has_seen("e2")


def test_a_state_stored_before_the_seen_ids_moved_in_reads_with_none():
    states = profile_state.StateCodec(S)
    old = legacy_value()[:5]
    assert not states.holds_seen_ids(old) and states.unpack(old).seen == {}
    assert states.holds_seen_ids(legacy_value())
    assert states.holds_seen_ids(states.pack(every_field_set()))


def test_the_standard_rfm_columns_take_the_dynamic_weights():
    profile = UserProfile.new("u1", S)
    profile.apply(purchase(T0, total=100.0), NEVER, S)
    edges = RfmBreakpoints((1.0, 2.0, 3.0, 4.0), (1.0, 1.0, 2.0, 3.0), (10.0, 20.0, 30.0, 40.0))
    c = profile.snapshot(S, edges).columns
    weights = profile.snapshot(S).details["rfm_weights"]
    assert (c["rfm_r"], c["rfm_f"], c["rfm_m"]) == (5, 1, 5)
    assert c["rfm_standard_score"] == pytest.approx(5 * weights[0] + weights[1] + 5 * weights[2])
    assert profile.snapshot(S).columns["rfm_r"] is None  # no breakpoints registered


def test_the_scoring_snapshot_gives_the_same_features_without_the_record_only_details():
    profile = every_field_set().profile
    full, light = profile.snapshot(S), profile.snapshot(S, full=False)
    assert light.features.values == full.features.values
    assert light.columns == full.columns
    assert set(light.details) == {"propensities", "rfm_purchase", "session"}
    assert set(full.details) - set(light.details) == {
        "rfm_engagement",
        "trend_counts",
        "dwell_s",
        "scroll",
        "deviation_z",
        "current_state",
        "abandon_rate",
        "signature",
        "session_trend",
        "segment",
        "rfm_weights",
        "category_shares",
        "bigrams",
        "recent",
        "open_sessions",
        "late_events",
    }
