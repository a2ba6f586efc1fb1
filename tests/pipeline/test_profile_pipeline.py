"""The profile job on a local Flink MiniCluster, parallelism 2, with a collection source and
collecting sinks passed into the same builder the production job uses."""

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from pyflink.common import Duration, Row, Types, WatermarkStrategy
from pyflink.common.types import RowKind
from pyflink.common.watermark_strategy import TimestampAssigner

from conf import settings as settings_module
from jobs import profile as job
from jobs import runtime
from jobs.control import MODELS, ControlRecord, first_records, read_sources
from models.generator import EventGenerator
from models.registry import Registry
from tests.conftest import assert_nearly_equal, event_bytes, without_ranked_items
from tests.pipeline import graph_uids
from udfs.timeunits import HOUR_MS

OUTPUT = Types.TUPLE([Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING()])
HOUR = HOUR_MS
ROOT = Path(__file__).resolve().parents[2]


class CollectingSinks:
    """Tags every output (kind, key, version, JSON) and unions them for execute_and_collect.
    Every output must be consumed: build-profiles cannot emit to a side output nothing reads.

    The side outputs are rebalanced first: PyFlink would otherwise fuse each collecting map
    into the side-output operator before it, and the fused pair's uid collides with that one."""

    def __init__(self):
        self.output = None

    def write(self, outputs: job.ProfileOutputs):
        profiles = (
            outputs.profiles.map(
                lambda r: (
                    "profile",
                    r.user_id,
                    -1 if r.get_row_kind() is RowKind.DELETE else r.version,
                    (r.record or b"null").decode(),
                ),
                output_type=OUTPUT,
            )
            .name("collect-profiles")
            .uid("collect-profiles")
        )
        sessions = (
            outputs.sessions.rebalance()
            .map(
                lambda r: ("session", f"{r.user_id}/{r.session_id}", r.events, json.dumps(list(r))),
                output_type=OUTPUT,
            )
            .name("collect-sessions")
            .uid("collect-sessions")
        )
        letters = (
            outputs.dead_letters.rebalance()
            .map(
                lambda r: ("dead", r.key.decode(), 0, json.loads(r.value)["reason"]),
                output_type=OUTPUT,
            )
            .name("collect-dead-letters")
            .uid("collect-dead-letters")
        )
        archived = (
            outputs.archive.rebalance()
            .map(lambda r: ("archived", r.user_id, r.source_offset, r.event_id), OUTPUT)
            .name("collect-archive")
            .uid("collect-archive")
        )
        scored = [
            outputs.scores.rebalance()
            .map(
                lambda r: (
                    "score",
                    r.user_id,
                    r.model_version or 0,
                    (r.record or b"null").decode(),
                ),
                output_type=OUTPUT,
            )
            .name("collect-scores")
            .uid("collect-scores"),
            outputs.cohort_moves.rebalance()
            .map(
                lambda r: ("move", r.user_id, r.ts, r.record.decode()),
                output_type=OUTPUT,
            )
            .name("collect-moves")
            .uid("collect-moves"),
            outputs.leads.rebalance()
            .map(
                lambda r: (
                    "lead",
                    r.user_id,
                    -1 if r.get_row_kind() is RowKind.DELETE else r.ts,
                    json.dumps({k: v for k, v in r.as_dict().items() if k != "record"}),
                ),
                output_type=OUTPUT,
            )
            .name("collect-leads")
            .uid("collect-leads"),
            *(
                stream.rebalance()
                .map(lambda r, kind=kind: (kind, r.user_id, 0, r.record.decode()), OUTPUT)
                .name(f"collect-{kind}s")
                .uid(f"collect-{kind}s")
                for kind, stream in (
                    ("action", outputs.actions.union(outputs.offers)),
                    ("outcome", outputs.outcomes),
                    ("lead-outcome", outputs.lead_outcomes),
                    ("erasure", outputs.erasures),
                )
            ),
            outputs.recommendations.rebalance()
            .map(
                lambda r: (
                    "recommendation",
                    r.user_id,
                    -1 if r.get_row_kind() is RowKind.DELETE else r.ts,
                    (r.record or b"null").decode(),
                ),
                output_type=OUTPUT,
            )
            .name("collect-recommendations")
            .uid("collect-recommendations"),
        ]
        self.output = profiles.union(sessions, letters, archived, *scored)


class ClaimedTime(TimestampAssigner):
    """What KafkaRawSource does in SQL: the JSON `ts` of a record, 0 when it has none."""

    def extract_timestamp(self, value, record_timestamp):
        try:
            return int(json.loads(value.record.payload)["ts"])
        except (ValueError, KeyError, TypeError):
            return 0


def claimed_user(raw: bytes) -> str:
    """What KafkaRawSource reads as the user key: the JSON `user_id`, '' when there is none."""
    try:
        user = json.loads(raw).get("user_id")
    except (ValueError, AttributeError):
        return ""
    return "" if user is None else str(user)


def collection_source(payloads, out_of_orderness_ms=10_000):
    """Records in the given order, stamped with event time, watermarks trailing by the bound.
    Stamped in one subtask, as a Kafka partition is read by one: the records of a user then
    arrive in the order given, out of order by no more than the bound when the input is."""

    def source(env):
        rows = [
            Row(claimed_user(raw), Row(raw, "events", i % 4, i)) for i, raw in enumerate(payloads)
        ]
        strategy = WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_millis(out_of_orderness_ms)
        ).with_timestamp_assigner(ClaimedTime())
        records = env.from_collection(rows, type_info=runtime.KEYED_RAW_RECORD).name("test-events")
        stamped = records.uid("test-events").assign_timestamps_and_watermarks(strategy)
        # PyFlink's timestamp steps have no uid of their own; the graph test wants one on each.
        strip = stamped._j_data_stream.getTransformation()
        generate = strip.getInputs().get(0)
        for transformation, name in (
            (strip, "test-strip-time"),
            (generate, "test-watermarks"),
            (generate.getInputs().get(0), "test-extract-time"),
        ):
            transformation.setName(name)
            transformation.setUid(name)
            transformation.setParallelism(1)
        return stamped

    return source


def fixed_control(settings, later=()) -> job.FixedControl:
    """The registered models and the policy files in force from the start (no database here,
    so no cohort modifiers), then `later` control records."""
    return job.FixedControl(first_records(read_sources(settings, modifiers=False)), later)


def run(settings, payloads, parallelism=2):
    env = runtime.create_environment(settings)
    env.set_parallelism(parallelism)  # 2 catches keying bugs
    sinks = CollectingSinks()
    job.build_pipeline(env, settings, collection_source(payloads), sinks, fixed_control(settings))
    with sinks.output.execute_and_collect() as results:
        return list(results)


def latest_profiles(out):
    latest = {}
    for kind, user, version, value in out:
        if kind == "profile" and version >= latest.get(user, (-2, None))[0]:
            latest[user] = (version, json.loads(value))
    return latest


def local_settings(overrides: dict | None = None):
    """The local settings with every output naming users by their ids, as these tests name
    them (pseudonyms have tests of their own: tests/unit/test_pseudonyms.py)."""
    return settings_module.load("local", {"privacy.pseudonymize": False, **(overrides or {})})


@pytest.fixture(scope="module")
def profile_settings():
    return local_settings()


def test_out_of_order_duplicated_input_gives_the_profiles_of_an_in_order_replay(
    profile_settings,
):
    base = profile_settings.generator.model_copy(update={"late_rate": 0.0})
    events = EventGenerator(base, users=24, days=3, seed=21).generate().events
    rng = random.Random(3)
    arrived = []
    for e in events:  # emission order: some events up to 10 s out of order
        arrived.append(event_bytes(e))
        if rng.random() < 0.1:
            arrived.append(event_bytes(e))  # a producer retry
    ordered = [event_bytes(e) for e in sorted(events, key=lambda e: (e["ts"], e["event_id"]))]
    assert len(arrived) > len(ordered)

    messy, clean = run(profile_settings, arrived), run(profile_settings, ordered)

    assert [o for o in messy if o[0] == "dead"] == []
    # Every record is archived once, retries included (their rows upsert by event id).
    assert sorted(o[2] for o in messy if o[0] == "archived") == list(range(len(arrived)))
    expected = latest_profiles(clean)
    actual = latest_profiles(messy)
    assert set(actual) == set(expected) and len(expected) >= 20
    for user, (version, profile) in expected.items():
        assert actual[user][0] == version
        assert_nearly_equal(actual[user][1], profile, path=user)
    sessions = sorted(o[1:] for o in messy if o[0] == "session")
    assert sessions == sorted(o[1:] for o in clean if o[0] == "session")
    assert len(sessions) == len({(e["user_id"], e["session_id"]) for e in events})


def test_rocksdb_state_with_incremental_checkpoints_gives_the_outputs_of_heap_state(
    profile_settings,
):
    events = EventGenerator(profile_settings.generator, users=12, days=2, seed=5).generate()
    payloads = [event_bytes(e) for e in events.events]
    rocksdb = local_settings(
        {"flink.state_backend": "rocksdb", "flink.incremental_checkpoints": True}
    )
    flink_options = runtime.create_environment(rocksdb)._j_stream_execution_environment
    flink_options = dict(flink_options.getConfiguration().toMap())
    assert flink_options["state.backend.type"] == "rocksdb"
    assert flink_options["execution.checkpointing.incremental"] == "true"

    on_disk, on_heap = run(rocksdb, payloads), run(profile_settings, payloads)

    assert sorted(timing_free(on_disk)) == sorted(timing_free(on_heap))
    assert len(on_heap) > len(payloads)


def timing_free(out):
    """The outputs that depend on the input alone: recommendations depend on what the ranking
    step knew of the catalogue when it ranked (tests/integration/exactly_once.py), so they are
    left out, and so are the item ids of an offer of them."""
    kept = []
    for kind, key, n, value in out:
        if kind == "recommendation":
            continue
        if kind == "action":
            record = json.loads(value)
            record["payload"] = without_ranked_items(record["payload"])
            value = json.dumps(record, sort_keys=True)
        kept.append((kind, key, n, value))
    return kept


def event(user, n, ts, **extra):
    """A search by `user` (its n-th event) at `ts`, in the session of that hour."""
    body = {"type": "search", "query": "q", "filters": {}} | extra
    return event_bytes(
        {
            "event_id": f"{user}-{n}",
            "user_id": user,
            "session_id": f"{user}-s{ts // HOUR}",
            "ts": ts,
            "schema_version": 1,
            **body,
        }
    )


def test_a_session_closes_before_the_users_next_event_wherever_the_watermark_is(
    profile_settings,
):
    # Read in one go, the four events come before any watermark: the close of the first
    # session is due by the third event's time, and comes before it, as in a run where the
    # watermark got there first.
    t0 = profile_settings.generator.start_ts_ms
    gap = profile_settings.profile.session_gap_ms
    payloads = [
        event("u", 1, t0),
        event("u", 2, t0 + 60_000),
        event("u", 3, t0 + 60_000 + gap + HOUR),
        event("u", 4, t0 + 60_000 + gap + HOUR + 60_000),
    ]
    out = [o for o in run(profile_settings, payloads, parallelism=1) if o[0] == "profile"]
    counted = [(version, json.loads(value)["events"]) for _, _, version, value in out]
    # Versions 1-2: the first two events; 3: their session closed; 4-5: the next two events;
    # 6: the second session closed at the end of input.
    assert counted == [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (6, 4)]


def test_purge_and_expiry_drop_a_users_state_so_it_starts_again(profile_settings):
    retention = {"profile.ttl_ms": 2 * HOUR, "profile.long_term_ttl_ms": 3 * HOUR}
    settings = local_settings({"profile.idleness_ms": 0, **retention})
    t0 = settings.generator.start_ts_ms

    revoke = {"type": "consent_update", "purposes": {"analytics": False}}
    grant = {"type": "consent_update", "purposes": {"analytics": True}}
    payloads = [
        event("purged", 1, t0),
        event("purged", 2, t0 + 60_000),
        event("purged", 3, t0 + 120_000, **revoke),
        event("purged", 4, t0 + 180_000),  # refused: analytics is revoked
        event("purged", 5, t0 + 240_000, **grant),
        event("purged", 6, t0 + 300_000),
        event("idle", 1, t0),
        event("idle", 2, t0 + 60_000),
        event("clock", 1, t0 + 5 * HOUR),  # moves the watermark past idle's two expiries
        # Quiet for longer than the short-term retention before the data ends at 6 h:
        # whatever watermark came last, the end of the input turns it dormant.
        event("tail", 1, t0 + 3 * HOUR),
        event("idle", 3, t0 + 6 * HOUR),
    ]
    # Parallelism 1 keeps arrival order, so the revocation comes between events 2 and 4, and
    # the grant between 4 and 6.
    out = [o for o in run(settings, payloads, parallelism=1) if o[0] == "profile"]
    purged = [(version, json.loads(value)) for _, user, version, value in out if user == "purged"]
    # -1 is the deletion (a Kafka tombstone); nothing of the refused event; then, granted
    # again, a fresh profile, its session's close, and both its expiries, due well before the
    # data ends.
    assert [v for v, _ in purged] == [1, 2, -1, 1, 2, 3, -1]
    assert purged[2][1] is None
    assert (purged[3][1]["events"], purged[5][1]["dormant"]) == (1, True)
    idle = [(version, json.loads(value)) for _, user, version, value in out if user == "idle"]
    # The first session closes (3), the short-term layers expire (4: dormant), then the rest
    # (-1: deleted); the third event starts afresh (1), and its session closes at the end of
    # input (2), which expires nothing. The same whether the watermark or the event itself
    # finds the state expired.
    assert [v for v, _ in idle] == [1, 2, 3, 4, -1, 1, 2]
    assert (idle[3][1]["dormant"], idle[3][1]["events"]) == (True, 2)
    assert (idle[-1][1]["dormant"], idle[-1][1]["events"]) == (False, 1)
    tail = [(version, json.loads(value)) for _, user, version, value in out if user == "tail"]
    # Its session closes (2) and its short-term layers expire (3) at the end of the input; its
    # long-term ones (due at 6 h) do not: the data ends 10 s of lateness bound before.
    assert [(v, p["dormant"]) for v, p in tail] == [(1, False), (2, False), (3, True)]


def operators(env):
    graph = env._generate_stream_graph(clear_transformations=False)
    return [
        (node.getOperatorName(), node.getTransformationUID())
        for node in graph.getStreamNodes().toArray()
    ]


def test_every_operator_has_a_stable_uid_and_name(profile_settings, small_history):
    env = runtime.create_environment(profile_settings)
    sinks = CollectingSinks()
    source = collection_source([event_bytes(small_history.events[0])])
    job.build_pipeline(env, profile_settings, source, sinks, fixed_control(profile_settings))
    nodes = operators(env)
    assert [name for name, uid in nodes if not uid or not name] == []
    uids = {uid for _, uid in nodes}
    assert "build-profiles" in uids


def test_the_production_graph_has_uids_on_connector_operators_too(profile_settings):
    env = runtime.create_environment(profile_settings)
    t_env = runtime.create_table_environment(env)
    source = runtime.KafkaRawSource(t_env, profile_settings, {0: 0}, {0: 1}, "profile")
    production = job.ProductionSinks(t_env, profile_settings)
    control = job.KafkaControl(profile_settings, bounded=True)
    job.build_pipeline(env, profile_settings, source, production, control)
    nodes = operators(env)  # built, never run: no broker or database needed
    assert [name for name, uid in nodes if not uid or not name] == []
    names = " ".join(name for name, _ in nodes)
    for table in ("events_archive", "dead_letters", "user_profiles_topic", "user_profiles_out"):
        assert table in names
    assert "ChangelogNormalize" not in names  # no second copy of every profile in state
    assert "Materializer" not in names  # nor of every upserted row (the changelog keeps its key)


def test_the_production_graph_keeps_its_pinned_operator_uids():
    """A renamed uid, or an output that shifts the planner's numbering, would leave state in a
    savepoint that no operator claims. Re-pin on purpose with
    `python -m tests.pipeline.graph_uids --write` (and say in the change how savepoints move)."""
    built = subprocess.run(
        [sys.executable, "-m", "tests.pipeline.graph_uids"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    pinned = graph_uids.PINNED.read_text().splitlines()
    assert len(pinned) > 50 and "build-profiles" in pinned
    assert built.stdout.splitlines() == pinned


def throttled_source(payloads, delay_s, after: int, action):
    """collection_source, slowed down, running `action()` once a subtask has passed `after`
    records: a way to change something while the job runs, at a known point of the stream."""
    stamped = collection_source(payloads)

    def source(env):
        passed = {"n": 0}

        def slow(row):
            time.sleep(delay_s)
            passed["n"] += 1
            if passed["n"] == after:
                action()
            return row

        throttled = stamped(env).map(slow, output_type=runtime.KEYED_RAW_RECORD)
        return throttled.name("test-throttle").uid("test-throttle")

    return source


def published_when(flag: Path, in_force, later) -> job.FixedControl:
    """`in_force` from the start, then `later` control records once `flag` exists: records
    published to the control topic while the job runs, at a known point of the stream."""

    class Later(job.FixedControl):
        def __call__(self, env):
            def wait(text):
                while not flag.exists():
                    time.sleep(0.02)
                return text

            stream = super().__call__(env).map(wait, output_type=Types.STRING())
            return stream.name("test-wait").uid("test-wait")

    return Later(in_force, later)


def test_a_model_version_published_mid_stream_takes_over_with_no_event_lost(trained, tmp_path):
    registry = Registry(tmp_path)
    v1 = registry.write(1, list(trained.artifacts.values()), (0, 1))
    v2 = registry.write(2, list(trained.artifacts.values()), (0, 1))
    # No checkpoint while it runs: a barrier would wait in the held-back control record's
    # task, and the events behind it with it (exactly once aligns both inputs).
    overrides = {"models.directory": str(tmp_path), "flink.checkpoint_interval_ms": 3_600_000}
    settings = local_settings(overrides)
    history = EventGenerator(settings.generator, users=30, days=2, seed=5).generate()
    events = [e for e in history.events if e["type"] != "consent_update"]
    env = runtime.create_environment(settings)
    sinks = CollectingSinks()
    flag = tmp_path / "published"
    source = throttled_source([event_bytes(e) for e in events], 0.01, 150, flag.touch)
    control = published_when(flag, [ControlRecord(MODELS, 1, v1)], [ControlRecord(MODELS, 2, v2)])
    job.build_pipeline(env, settings, source, sinks, control)
    scores, moves, profiles = [], [], {}
    with sinks.output.execute_and_collect() as results:
        for kind, user, _, value in results:
            if kind == "score":
                scores.append(json.loads(value))
            elif kind == "move":
                moves.append(json.loads(value))
            elif kind == "profile":
                profiles[user] = max(profiles.get(user, 0), json.loads(value)["events"])

    by_event = Counter(s["event_id"] for s in scores if s["event_id"])
    assert set(by_event) == {e["event_id"] for e in events}  # every event was scored ...
    assert set(by_event.values()) == {1}  # ... once
    versions = Counter(s["model_version"] for s in scores)
    print(f"\n  {len(events)} events; {versions[1]} scores by v1, then {versions[2]} by v2")
    assert set(versions) == {1, 2} and versions[1] >= 100 and versions[2] >= 100
    # A user scored by both switched once (going back and forth would re-assign each time).
    scored_by = {v: {s["user_id"] for s in scores if s["model_version"] == v} for v in (1, 2)}
    switched = Counter(m["user_id"] for m in moves if m["reason"] == "model")
    assert set(switched) == scored_by[1] & scored_by[2] and set(switched.values()) == {1}
    # The profiles carried on: every user's last profile counts all of their events.
    assert profiles == Counter(e["user_id"] for e in events)
