"""The benchmark's pieces that decide its figures: the job's per-user pipeline outside Flink
(what the ceiling and both peers run), the sustained rate and the checkpoint figures read from
Flink's log."""

import dataclasses
import json

from bench.in_memory import InMemoryPipeline, kafka_records
from bench.measure import Run, checkpoints
from bench.workload import first_events_only
from jobs.control import scoring_settings
from tests.conftest import TEST_NOW_MS
from udfs import outputs
from udfs.events import DeadLetter, EventParser, SourceRef
from udfs.profile_state import UserState
from udfs.pseudonyms import configured


def in_memory(settings):
    # Model-free and without a database: the unit tier has neither.
    scoring = dataclasses.replace(scoring_settings(settings), registry_dir=None)
    c = settings.events
    parser = EventParser(c.max_bytes, c.min_ts_ms, c.max_future_skew_ms, now_ms=lambda: TEST_NOW_MS)
    return InMemoryPipeline(settings, 1, scoring, parser, control=[])


def send(pipeline, event: dict, offset: int):
    return pipeline.process(json.dumps(event).encode(), SourceRef("t", 0, offset), event["user_id"])


def test_the_in_memory_pipeline_runs_the_jobs_work_with_timers(settings, small_history):
    pipeline = in_memory(settings)
    events = small_history.events
    out = [o for offset, e in enumerate(events) for o in send(pipeline, e, offset)]
    by_output = {}
    for emitted in out:
        by_output.setdefault(emitted.output.name, []).append(emitted)
    assert len(by_output["archive"]) == len(events)
    users = {e["user_id"] for e in events}
    subject = configured(settings.privacy).of
    assert {e.values[0] for e in by_output["profiles"]} == {subject(u) for u in users}
    # Sessions closed by the watermark as it moved, each once.
    closed = [(e.values[0], e.values[1]) for e in by_output["sessions"]]
    assert closed and len(closed) == len(set(closed))
    analytical = [e for e in out if e.output.names_user == outputs.PSEUDONYM]
    assert {k for k, _ in kafka_records(analytical)} == {subject(u).encode() for u in users}
    assert not any(u.encode() in e.value for e in analytical if e.value for u in users)

    again = send(pipeline, events[-1], len(events))
    assert [e.output for e in again] == [outputs.ARCHIVE], "a repeat is archived, nothing else"
    assert pipeline.counts()["duplicate_events"] == 1
    [letter] = kafka_records(
        pipeline.process(b'{"event_id": "x", "user_', SourceRef("t", 0, 9), "?")
    )
    assert DeadLetter.from_json(letter[1]).reason == "invalid_json"
    assert letter[0] == b"t-0-9"


def test_a_revocation_keeps_only_consent_tombstones_the_records_and_asks_for_erasure(
    settings, small_history
):
    pipeline = in_memory(settings)
    first = small_history.events[0]
    send(pipeline, first, 0)
    revoke = {
        **{k: first[k] for k in ("user_id", "session_id", "schema_version")},
        "event_id": "revoke-1",
        "type": "consent_update",
        "ts": first["ts"] + 1,
        "purposes": {"analytics": False},
    }
    out = send(pipeline, revoke, 1)
    assert [e.output for e in out if e.delete] == [outputs.PROFILES, outputs.SCORES, outputs.LEADS]
    *tombstones, erasure = kafka_records(out)
    subject = configured(settings.privacy).of(first["user_id"])
    assert tombstones == [(subject.encode(), None)] * 3
    assert json.loads(erasure[1]) == {
        "user_id": first["user_id"],
        "ts": revoke["ts"],
        "reason": "analytics_revoked",
        "request_id": None,
        "subject": subject,
    }
    # Of the user only what they said remains: without it their next event would be profiled.
    kept = pipeline.users[first["user_id"]]
    assert kept == UserState(consent=kept.consent)
    assert kept.consent["analytics"] == (False, revoke["ts"])


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


def test_the_new_users_workload_keeps_each_users_first_few_events_in_order(small_history):
    events = small_history.events
    kept = first_events_only(events, seed=3)
    assert kept == first_events_only(events, seed=3)  # the same workload every run
    assert [e for e in kept if e["type"] == "consent_update"] == [
        e for e in events if e["type"] == "consent_update"
    ]
    behaviour = [e for e in events if e["type"] != "consent_update"]
    by_user: dict[str, list[dict]] = {}
    for e in kept:
        if e["type"] != "consent_update":
            by_user.setdefault(e["user_id"], []).append(e)
    for user, theirs in by_user.items():
        all_theirs = [e for e in behaviour if e["user_id"] == user]
        assert theirs == all_theirs[: len(theirs)]
        assert len(theirs) in (1, 2, 3, 20) or theirs == all_theirs
    assert sum(len(t) <= 3 for t in by_user.values()) > 0.8 * len(by_user)


def test_the_in_memory_watermark_is_the_least_of_the_partitions_as_in_the_job(settings):
    pipeline = in_memory(settings)
    pipeline.partitions = 2
    hours = 3_600_000
    e1 = {
        "event_id": "a",
        "user_id": "u1",
        "session_id": "s",
        "type": "page_view",
        "ts": TEST_NOW_MS - 10 * hours,
        "schema_version": 1,
        "url": "/",
        "category": "books",
        "dwell_ms": 1000,
        "scroll_depth": 0.5,
    }
    ahead = {**e1, "event_id": "b", "ts": TEST_NOW_MS}
    behind = {**e1, "event_id": "c", "ts": TEST_NOW_MS - 9 * hours}

    def send_to(partition, event, offset):
        raw = json.dumps(event).encode()
        return pipeline.process(raw, SourceRef("t", partition, offset), event["user_id"])

    send_to(0, ahead, 0)  # partition 0 reads far ahead of partition 1
    assert pipeline.watermark == -(2**63)  # not until every partition has had an event
    send_to(1, e1, 0)
    assert pipeline.watermark == e1["ts"] - settings.profile.out_of_orderness_ms
    late = [o for o in send_to(1, behind, 1) if o.output is outputs.DEAD_LETTERS]
    assert late == [], "an event behind another partition's is not late"
