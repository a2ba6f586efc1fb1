"""Events through the real broker, the ingest job (local Flink) and the real PostgreSQL."""

import json
from collections import Counter

from jobs import ingest
from models.generator import EventGenerator, hostile_record
from tests.integration.conftest import archived, dead_letters, publish, rows_for_ids, user_key

HOSTILE = 10_000
DUPLICATES = 300


def test_every_event_arrives_once_and_every_malformed_record_is_dead_lettered(
    own_outputs, seeded_rng
):
    settings = own_outputs
    history = EventGenerator(settings.generator, users=120, days=3, seed=404).generate()
    events = history.events
    bounds = (settings.events.min_ts_ms, events[-1]["ts"] + settings.events.max_future_skew_ms)
    records, expected_reason = [], []
    for i in range(max(len(events), HOSTILE)):
        if i < len(events):
            raw = json.dumps(events[i]).encode()
            records.append((events[i]["user_id"], raw))
            expected_reason.append(None)
        if i < HOSTILE:
            raw, reason = hostile_record(seeded_rng, events[i % len(events)], bounds)
            records.append((user_key(raw), raw))
            expected_reason.append(reason.value)
    # The producer retries: some valid events arrive twice with the same event_id.
    for event in seeded_rng.sample(events, DUPLICATES):
        records.append((event["user_id"], json.dumps(event).encode()))
        expected_reason.append(None)

    batch = publish(settings, records)
    start, stop = batch.bounds()
    ingest.run(settings, start, stop)

    sent_ids = {e["event_id"] for e in events}
    per_id = rows_for_ids(settings, sent_ids)
    assert set(per_id) == sent_ids, "every valid event is archived"
    assert set(per_id.values()) == {1}, "exactly once by event_id"
    rows = archived(settings, batch)
    assert len(rows) == len(sent_ids)

    letters = dead_letters(settings, batch.topic, batch.contains)
    by_id = {letter.dead_letter_id: letter for letter in letters}
    assert len(by_id) == HOSTILE
    assert all(letter.reason.value and letter.detail for letter in by_id.values())
    # count in = valid rows + duplicate sends + dead letters
    assert batch.sent == len(rows) + DUPLICATES + len(by_id)
    assert Counter(r.reason.value for r in by_id.values()) == Counter(
        r for r in expected_reason if r is not None
    )
    print(
        f"\n  sent {batch.sent:,}: {len(rows):,} archived, {DUPLICATES} duplicates folded, "
        f"{len(by_id):,} dead-lettered"
    )
