"""Bad input at volume: 100,000 hostile records (truncated JSON, binary garbage, wrong types,
nulls, missing fields, unknown types, far-past and far-future timestamps, oversized records,
unsupported schema versions, NUL bytes and lone surrogates, over-long ids) mixed at random
into valid traffic, some of it in non-Latin scripts and emoji, through the real broker, the
profile job (local Flink) and the real PostgreSQL. The job runs to the end of its input, every
hostile record is in `events.dlq` as the bytes that were sent (a context in them minimized) with
the reason it was built for, and every valid event is archived and counted in its user's
profile."""

import json
import random
from collections import Counter

import psycopg

from jobs import profile as job
from models.generator import EventGenerator, hostile_record
from tests.integration.conftest import dead_letters, publish, without_recommendations
from udfs.privacy import kept_of_refused
from udfs.pseudonyms import configured_subject

HOSTILE = 100_000
# Oversized records are just over this limit: a small one keeps 100k records light.
MAX_BYTES = 4_096
START_TS_MS = 1_777_593_600_000  # 2026-05-01T00:00:00Z: this test's own stretch of event time
SCRIPTS = ("Ünïcödé ✓", "ユーザー検索", "поиск товаров", "بحث", "🛒🔥 offer", "e\u0301te\u0301")


def with_text_in_every_script(event: dict, rng: random.Random) -> dict:
    """A valid event whose search query or page URL is written in another script."""
    out = dict(event)
    if "query" in out:
        out["query"] = rng.choice(SCRIPTS)
    elif "url" in out:
        out["url"] = f"/{rng.choice(SCRIPTS)}"
    return out


def events_per_profile(events: list[dict]) -> dict[str, int]:
    """What each user's profile counts at the end: the events since its last purge (a consent
    update that withdraws analytics), in the order they arrive."""
    counts: dict[str, int] = {}
    for e in events:
        if e["type"] != "consent_update":
            counts[e["user_id"]] = counts.get(e["user_id"], 0) + 1
        elif e["purposes"].get("analytics") is False:
            counts.pop(e["user_id"], None)
    return counts


def test_hostile_records_at_volume_are_dead_lettered_and_valid_traffic_flows(
    own_outputs, trained, figures
):
    models = own_outputs.models.model_copy(update={"directory": str(trained.registry.directory)})
    events_settings = own_outputs.events.model_copy(update={"max_bytes": MAX_BYTES})
    settings = own_outputs.model_copy(update={"models": models, "events": events_settings})
    settings = without_recommendations(settings)
    # No late events: those are dead-lettered too, for a reason of their own.
    generator = settings.generator.model_copy(update={"start_ts_ms": START_TS_MS, "late_rate": 0})
    history = EventGenerator(generator, users=80, days=3, seed=606).generate()
    rng = random.Random(606)
    valid = [with_text_in_every_script(e, rng) for e in history.events]
    bounds = (settings.events.min_ts_ms, valid[-1]["ts"] + settings.events.max_future_skew_ms)
    # Valid events keep their order; hostile records land between them at random, each made
    # from the event it precedes, as bad records are produced alongside good ones (its event
    # time, where it has a plausible one, is that of its place in the stream).
    places = sorted(rng.randrange(len(valid) + 1) for _ in range(HOSTILE))
    hostile = [
        hostile_record(rng, valid[min(place, len(valid) - 1)], bounds, MAX_BYTES)
        for place in places
    ]
    records, next_valid = [], 0
    for place, (raw, _) in zip(places, hostile, strict=True):
        records += [(e["user_id"], json.dumps(e).encode()) for e in valid[next_valid:place]]
        next_valid = place
        records.append((None, raw))
    records += [(e["user_id"], json.dumps(e).encode()) for e in valid[next_valid:]]

    batch = publish(settings, records)
    job.run(settings, *batch.bounds())

    letters = dead_letters(settings, batch.topic, batch.contains)
    expected = Counter((kept_of_refused(raw), reason) for raw, reason in hostile)
    got = Counter((letter.raw, letter.reason) for letter in letters)
    assert got == expected, (
        f"{len(letters):,} dead letters for {HOSTILE:,} hostile records; "
        f"missing {sum((expected - got).values()):,}, unexpected {sum((got - expected).values())}"
    )
    ids = [e["event_id"] for e in valid]
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        archived = conn.execute(
            "SELECT count(*) FROM events WHERE event_id = ANY(%s)", (ids,)
        ).fetchone()[0]
        counted = dict(
            conn.execute(
                "SELECT user_id, events FROM user_profiles WHERE as_of_ts >= %s", (START_TS_MS,)
            ).fetchall()
        )
    assert archived == len(valid), f"{archived:,} of {len(valid):,} valid events archived"
    subject = configured_subject(settings.privacy)
    expected = {subject(user): n for user, n in events_per_profile(valid).items()}
    assert counted == expected, "each profile counts all of its user's events"
    reasons = Counter(reason.value for _, reason in hostile)
    figures(
        f"{HOSTILE:,} hostile records among {len(valid):,} valid events: every one "
        f"dead-lettered with its reason ({', '.join(f'{r} {n:,}' for r, n in reasons.items())}); "
        f"{archived:,} valid events archived, {len(counted)} profiles"
    )
