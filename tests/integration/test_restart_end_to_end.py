"""A decision is never emitted twice across a job restart: the profile job (local Flink,
checkpointing on, started from its command line as a user would) is stopped with SIGTERM once a
checkpoint covers the first half of its input, which stops it with a savepoint; the second half
arrives while it is down, and it is started again with `--restore latest`. The decisions made
before the stop stay as they were, every decision is in `actions` and in PostgreSQL the same,
with one outcome each, in Kafka and in PostgreSQL.

(Whether the decisions equal those of a run without the stop depends on timing here: with idle
partitions, event time advances at moments that depend on how fast each partition is read.)

Real Kafka hides the records of an aborted attempt from read_committed readers, so there no
decision id may appear twice. The local broker shows them (README, "The local broker"): there
every repeated id must be the same record again."""

import json
import signal
import time

import psycopg
from psycopg.rows import dict_row

from jobs import profile, runtime
from models.generator import EventGenerator
from tests.integration.conftest import publish, topic_records, without_recommendations
from tests.integration.job_process import exit_code, job_process, job_settings

START_TS_MS = 1_780_272_000_000  # 2026-06-01T00:00:00Z: this test's own stretch of event time


def decisions(settings, topic) -> dict[str, list[dict]]:
    """Every record of an output topic of this test, by decision id. Real Kafka: the committed
    ones. The local broker shows a `read_committed` reader the records of aborted transactions
    anyway, and holds committed ones back while a transaction on the partition stays open
    (README, "The local broker"), so there this reads them all."""
    isolation = "read_uncommitted" if settings.kafka.start_local_broker else "read_committed"
    found: dict[str, list[dict]] = {}
    for record in topic_records(settings, topic, isolation):
        value = json.loads(record.value)
        if value.get("ts", value.get("decided_ts", 0)) >= START_TS_MS:
            found.setdefault(value["decision_id"], []).append(value)
    return found


def decision_table(settings) -> dict[str, dict]:
    with psycopg.connect(settings.postgres.conninfo(), row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM actions WHERE ts >= %s", (START_TS_MS,)).fetchall()
    return {r["decision_id"]: r for r in rows}


def outcome_table(settings) -> set[str]:
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT decision_id FROM action_outcomes WHERE decided_ts >= %s", (START_TS_MS,)
        ).fetchall()
    return {decision_id for (decision_id,) in rows}


def test_no_decision_is_emitted_twice_across_a_restart(own_outputs, trained, tmp_path, figures):
    restarted = without_recommendations(
        job_settings(own_outputs, trained, tmp_path / "checkpoints", START_TS_MS)
    )
    history = EventGenerator(restarted.generator, users=150, days=4, seed=404).generate()
    records = [(e["user_id"], json.dumps(e).encode()) for e in history.events]
    half = len(records) // 2

    # The job runs unbounded, as a service does, over the first half of the input, and is
    # stopped once a checkpoint covers all of it; the second half arrives while it is down.
    first = publish(restarted, records[:half])
    start, first_stop = first.bounds()
    config_file = tmp_path / "restarted.yaml"
    with job_process(restarted, config_file, start, None) as job:
        deadline = time.monotonic() + 300
        while runtime.stop_offsets_ahead(restarted, profile.SOURCE_GROUP, first_stop):
            assert job.process.poll() is None, "the job ended before it could be stopped"
            assert time.monotonic() < deadline, "the job did not read the first half"
            time.sleep(0.5)
        job.process.send_signal(signal.SIGTERM)
        stopped = exit_code(job.process, config_file, 180)
        assert stopped == 0, "the job did not stop with a savepoint"
    second = publish(restarted, records[half:])
    _, second_stop = second.bounds()
    stop = {p: max(first_stop[p], second_stop[p]) for p in first_stop}
    before_stop = decision_table(restarted)
    with job_process(restarted, config_file, start, stop, "--restore", "latest") as job:
        assert exit_code(job.process, config_file, 600) == 0, "the restarted job failed"
    after_restart = decision_table(restarted)
    assert before_stop, "the first half led to no decisions"
    assert len(after_restart) > len(before_stop), "the restarted job made no decisions"
    # What was decided before the stop is kept as it was (state and offsets restored).
    assert {d: after_restart.get(d) for d in before_stop} == before_stop

    topics = restarted.kafka.topics
    emitted = {}
    for name in ("actions", "action_outcomes"):
        got = decisions(restarted, getattr(topics, name))
        repeated = {d: copies for d, copies in got.items() if len(copies) > 1}
        if restarted.kafka.start_local_broker:
            assert all(c == copies[0] for copies in repeated.values() for c in copies), name
        else:
            assert not repeated, f"{name}: {len(repeated)} decisions emitted twice"
        emitted[name] = {d: copies[0] for d, copies in got.items()}
        figures(
            f"{name}: {len(got)} decisions, {len(before_stop)} of them before the stop; "
            f"{len(repeated)} ids shown again, each identical"
        )
    assert emitted["actions"] == after_restart, "Kafka and PostgreSQL hold the same decisions"
    assert set(emitted["action_outcomes"]) == set(after_restart), "one outcome per decision"
    assert outcome_table(restarted) == set(after_restart), "and in PostgreSQL the same"
