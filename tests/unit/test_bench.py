"""The benchmark's pieces that decide its figures: the per-event work outside Flink, the
sustained rate and the checkpoint figures read from Flink's log."""

import dataclasses
import json

from bench.measure import Run, checkpoints
from bench.plain import PlainProfiler
from jobs.live_models import scoring_settings
from tests.conftest import TEST_NOW_MS
from udfs.events import DeadLetter, SourceRef


def profiler(settings):
    # Model-free and without a database: the unit tier has neither.
    scoring = dataclasses.replace(scoring_settings(settings), registry_dir=None, conninfo=None)
    return PlainProfiler(settings, scoring, now_ms=lambda: TEST_NOW_MS)


def test_plain_profiler_emits_per_user_and_dead_letters_bad_records(settings, small_history):
    plain = profiler(settings)
    events = small_history.events
    outputs = []
    for offset, event in enumerate(events):
        raw = json.dumps(event).encode()
        outputs += plain.process(raw, SourceRef("t", 0, offset))
    by_user = {}
    for key, value in outputs:
        by_user.setdefault(key.decode(), []).append(json.loads(value))
    assert set(by_user) == {e["user_id"] for e in events}
    ids = {e["event_id"]: e["user_id"] for e in events}
    assert all(ids[r["event_id"]] == user for user, rs in by_user.items() for r in rs)
    assert len(plain.profiles) == len(by_user)

    again = plain.process(json.dumps(events[0]).encode(), SourceRef("t", 0, len(events)))
    assert again == [], "a repeated event id is processed once"
    [(key, value)] = plain.process(b'{"event_id": "x", "user_', SourceRef("t", 0, 10**6))
    letter = DeadLetter.from_json(value)
    assert letter.reason == "invalid_json" and key == letter.dead_letter_id.encode()


def test_a_revocation_drops_the_users_state(settings, small_history):
    plain = profiler(settings)
    first = small_history.events[0]
    plain.process(json.dumps(first).encode(), SourceRef("t", 0, 0))
    revoke = {
        **{k: first[k] for k in ("user_id", "session_id", "schema_version")},
        "event_id": "revoke-1",
        "type": "consent_update",
        "ts": first["ts"] + 1,
        "purposes": {"analytics": False},
    }
    out = plain.process(json.dumps(revoke).encode(), SourceRef("t", 0, 1))
    assert out == [(first["user_id"].encode(), b"")]
    assert first["user_id"] not in plain.profiles


def test_sustained_rate_spans_the_first_to_the_last_output():
    run = Run("x", events=1000, wall_s=60.0)
    assert run.sustained_rate() == 0.0, "no output, no rate"
    run.first_output_ms, run.last_output_ms = 10_000, 14_000
    assert run.sustained_rate() == 250.0


def test_checkpoint_figures_come_from_the_log(tmp_path):
    log = tmp_path / "flink.log"
    line = (
        "INFO CheckpointCoordinator [] - Completed checkpoint {} for job 1f"
        " ({} bytes, checkpointDuration={} ms, finalizationTime=1 ms)."
    )
    log.write_text("\n".join(line.format(*x) for x in [(1, 500, 40), (2, 900, 10), (3, 700, 30)]))
    assert checkpoints(log) == {
        "count": 3,
        "duration_ms_median": 30,
        "duration_ms_max": 40,
        "size_bytes_last": 700,
        "size_bytes_max": 900,
    }


def test_a_result_records_its_commit_machine_arguments_and_whole_config(settings, monkeypatch):
    import argparse
    import re

    from bench.run import RESULT_SCHEMA, run_record
    from conf.settings import Settings

    dsn = "postgresql://bench:Pa55-word@127.0.0.1:5432/behavior_bench"
    config = settings.model_copy(
        update={"postgres": settings.postgres.model_copy(update={"dsn": dsn})}
    )
    args = argparse.Namespace(users=5000, events=40000, skip="quix")
    record = run_record("20261130-000000", args, config)
    assert record["schema"] == RESULT_SCHEMA
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"])
    assert isinstance(record["uncommitted_changes"], bool)
    assert record["args"] == {"users": 5000, "events": 40000, "skip": "quix"}
    assert record["machine"]["cores"] >= 1 and record["machine"]["memory_bytes"] > 2**30
    # The whole configuration, enough to run it again, with the password left out.
    assert "Pa55-word" not in json.dumps(record)
    again = Settings.model_validate(record["config"])
    assert again.model_dump(exclude={"postgres"}) == config.model_dump(exclude={"postgres"})
