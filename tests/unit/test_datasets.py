"""Point-in-time training sets: labels from the future, features from the past only."""

import random

from conf import settings as settings_module
from models import datasets
from tests.unit.profile_events import DAY, MINUTE, T0, cart, page, purchase, view
from tests.unit.test_profile import generated_events

CONFIG = settings_module.load("local")
S, M = CONFIG.profile, CONFIG.models


def labels(samples, kind):
    return [(x.ts, x.labels) for x in samples if x.kind == kind]


def test_a_cart_abandoned_or_bought_labels_every_cart_moment_of_its_session():
    events = [
        page(T0, session="a"),
        cart(T0 + MINUTE, session="a"),
        view(T0 + 2 * MINUTE, session="a"),  # abandoned: no purchase follows
        page(T0 + DAY, session="b"),
        cart(T0 + DAY + MINUTE, session="b"),
        purchase(T0 + DAY + 2 * MINUTE, session="b"),
    ]
    samples = datasets.user_samples(events, S, M, end_ts=T0 + 100 * DAY)
    assert labels(samples, "cart") == [
        (T0 + MINUTE, {"abandonment": 1}),
        (T0 + 2 * MINUTE, {"abandonment": 1}),
        (T0 + DAY + MINUTE, {"abandonment": 0}),
    ]


def test_drift_and_purchase_labels_look_one_window_ahead_of_a_session_end():
    horizon = int(M.labels.purchase_horizon_days * DAY)
    busy = [page(T0 + d * DAY, dwell_ms=600_000, session=f"s{d}") for d in range(0, 14)]
    quiet_then_buy = [purchase(T0 + 20 * DAY, session="late")]
    samples = datasets.user_samples(busy + quiet_then_buy, S, M, end_ts=T0 + 60 * DAY)
    ends = {x.ts: x.labels for x in samples if x.kind == "session_end"}
    last_busy = T0 + 13 * DAY + S.session_gap_ms
    # After the last busy day nothing happens for a horizon but a purchase: engagement drops.
    assert ends[last_busy] == {"drift": 1, "purchase": int(horizon >= 20 * DAY - 13 * DAY)}
    # In the middle of the busy stretch the next horizon is as busy as the last.
    assert ends[T0 + 3 * DAY + S.session_gap_ms]["drift"] == 0


def test_samples_near_the_end_of_the_log_get_no_future_labels():
    events = [page(T0, session="a")]
    samples = datasets.user_samples(events, S, M, end_ts=T0 + DAY)
    assert [x.labels for x in samples] == [{}]


def test_no_leakage_future_events_do_not_change_past_features():
    _, events = generated_events(users=12, days=6, seed=3)
    cutoff = min(e.ts for e in events) + 3 * DAY
    end = max(e.ts for e in events)
    rng = random.Random(4)
    future = [e for e in events if e.ts > cutoff]
    # Rewrite the future: shuffle which user did what, and when, after the cutoff.
    times = [e.ts for e in future]
    rng.shuffle(times)
    users = [e.user_id for e in future]
    rng.shuffle(users)
    rewritten = [
        e.__class__(e.event_id, user, e.session_id + "x", e.type, ts, e.schema_version, e.data)
        for e, user, ts in zip(future, users, times, strict=True)
    ]
    past = [e for e in events if e.ts <= cutoff]
    original = datasets.build(events, S, M, end)
    altered = datasets.build(past + rewritten, S, M, end)

    def features_before_cutoff(samples):
        return {(x.user_id, x.kind, x.ts): x.features for x in samples if x.ts <= cutoff}

    before = features_before_cutoff(original)
    assert len(before) > 50
    assert features_before_cutoff(altered) == before


def test_a_user_first_seen_after_the_split_has_no_cohort_vector_before_it():
    late = [page(T0 + 10 * DAY, session="a"), view(T0 + 10 * DAY + MINUTE, session="a")]
    early = [page(T0, session="a"), page(T0 + 10 * DAY, session="b")]
    split = T0 + 5 * DAY
    assert datasets.replay_user(late, S, M, T0 + 20 * DAY, split).cohort_before is None
    replayed = datasets.replay_user(early, S, M, T0 + 20 * DAY, split)
    assert replayed.cohort_before is not None and replayed.cohort_at_end is not None
