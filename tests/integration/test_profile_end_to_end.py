"""Generated events through the real broker, the profile job (local Flink, checkpointing on,
scoring with a registered model version) and the real PostgreSQL: the committed Kafka profiles,
scores, lead scores and cohort moves equal the PostgreSQL rows, and name each user by their
pseudonym."""

import json
from collections import Counter

import psycopg
from psycopg.rows import dict_row

from jobs import profile as job
from models.generator import EventGenerator, with_hostile_records
from tests.integration.conftest import dead_letters, publish, topic_records
from udfs.profile import PROFILE_COLUMNS
from udfs.pseudonyms import configured_subject

REVOKING_USER = "u000003"
# This test's own stretch of event time, so profiles from other runs are told apart.
START_TS_MS = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def latest_by_user(records) -> dict[str, dict | None]:
    """The last record of each user of this test (a user's records share a partition); None
    when it is a tombstone (a purge)."""
    latest = {}
    for record in records:
        user = record.key.decode()
        if record.value is None:
            if user in latest:
                latest[user] = None
            continue
        value = json.loads(record.value)
        if value["ts"] >= START_TS_MS:
            latest[user] = value
    return latest


def rows_by(settings, sql: str, key: str) -> dict[str, dict]:
    with psycopg.connect(settings.postgres.conninfo(), row_factory=dict_row) as conn:
        return {r[key]: r for r in conn.execute(sql, (START_TS_MS,)).fetchall()}


def test_committed_kafka_outputs_equal_the_postgres_rows(own_outputs, trained):
    models = own_outputs.models.model_copy(update={"directory": str(trained.registry.directory)})
    settings = own_outputs.model_copy(update={"models": models})
    generator = settings.generator.model_copy(update={"start_ts_ms": START_TS_MS})
    history = EventGenerator(generator, users=60, days=4, seed=808).generate()
    events = history.events
    last = max(e["ts"] for e in events if e["user_id"] == REVOKING_USER)
    revoke = {
        "event_id": "revoke-analytics-1",
        "user_id": REVOKING_USER,
        "session_id": "consent",
        "type": "consent_update",
        "ts": last + 60_000,
        "schema_version": 1,
        "purposes": {"analytics": False},
    }
    bounds = (settings.events.min_ts_ms, events[-1]["ts"] + settings.events.max_future_skew_ms)
    records = list(with_hostile_records([*events, revoke], 0.02, seed=9, ts_bounds=bounds))
    hostile = sum(1 for _, _, reason in records if reason is not None)

    batch = publish(settings, [(key, raw) for key, raw, _ in records])
    job.run(settings, *batch.bounds())
    # The analytical outputs name users by pseudonym.
    subject = configured_subject(settings.privacy)
    revoking = subject(REVOKING_USER)

    latest = {}
    for record in topic_records(settings):
        user = record.key.decode()
        value = json.loads(record.value) if record.value is not None else None
        if value is None and user != revoking:
            continue
        if (
            value is not None
            and not START_TS_MS <= value.get("as_of_ts", 0) <= revoke["ts"] + 10**9
        ):
            continue
        version = value["version"] if value else float("inf")  # a tombstone comes last
        if version >= latest.get(user, (-1, None))[0]:
            latest[user] = (version, value)
    with psycopg.connect(settings.postgres.conninfo(), row_factory=dict_row) as conn:
        rows = {
            r["user_id"]: r
            for r in conn.execute(
                f"SELECT {', '.join(PROFILE_COLUMNS)}, details FROM user_profiles"
                " WHERE as_of_ts >= %s",
                (START_TS_MS,),
            ).fetchall()
        }
        sessions = {
            r["session_id"]: r
            for r in conn.execute("SELECT session_id, abandoned FROM user_sessions").fetchall()
        }

    active = {subject(e["user_id"]) for e in events} - {revoking}
    assert set(latest) == active | {revoking}
    assert latest[revoking][1] is None, "a purge is a tombstone in Kafka"
    assert set(rows) == active, "every user has a row, but the purged one"
    for user in active:
        assert latest[user][1] == rows[user], user

    # Every generated session was closed once, and abandonment matches the hidden truth.
    truth = {s.session_id: s for s in history.sessions if s.user_id != REVOKING_USER}
    assert set(truth) <= set(sessions)
    assert all(sessions[sid]["abandoned"] == truth[sid].abandoned for sid in truth)

    letters = dead_letters(settings, batch.topic, batch.contains)
    assert len(letters) == hostile

    # Scores and lead scores: the latest in Kafka is the PostgreSQL row, from model version 1.
    topics = settings.kafka.topics
    scores = latest_by_user(topic_records(settings, topics.scores))
    score_rows = rows_by(settings, "SELECT * FROM user_scores WHERE ts >= %s", "user_id")
    assert set(scores) == active | {revoking}
    assert scores[revoking] is None and set(score_rows) == active, "a purge deletes scores"
    for user, row in score_rows.items():
        assert scores[user] == row, user
        assert row["model_version"] == 1 and row["cohort_name"]
    leads = latest_by_user(topic_records(settings, topics.lead_scores))
    lead_rows = rows_by(settings, "SELECT * FROM leads WHERE ts >= %s", "user_id")
    assert leads.pop(revoking) is None and leads == lead_rows
    assert any(row["modifiers"] for row in lead_rows.values()), "a cohort modifier applied"

    # Cohort moves: the same set in both, every user entered a cohort once.
    moves = {
        m["move_id"]: m
        for m in map(json.loads, (r.value for r in topic_records(settings, topics.cohort_moves)))
        if m["ts"] >= START_TS_MS
    }
    move_rows = rows_by(settings, "SELECT * FROM cohort_moves WHERE ts >= %s", "move_id")
    assert moves == move_rows
    firsts = Counter(m["user_id"] for m in moves.values() if m["reason"] == "first")
    assert set(firsts.values()) == {1} and set(firsts) == active | {revoking}

    # Decisions and outcomes: the same in both, at most one outcome per decision, and the
    # control arm's decisions recorded but not delivered.
    def by_decision(topic):
        found = {}
        for r in topic_records(settings, topic):
            value = json.loads(r.value)
            if value.get("ts", value.get("decided_ts", 0)) >= START_TS_MS:
                found[value["decision_id"]] = value
        return found

    actions = by_decision(topics.actions)
    action_rows = rows_by(settings, "SELECT * FROM actions WHERE ts >= %s", "decision_id")
    assert actions == action_rows and len(actions) > 0
    outcomes = by_decision(topics.action_outcomes)
    outcome_rows = rows_by(
        settings, "SELECT * FROM action_outcomes WHERE decided_ts >= %s", "decision_id"
    )
    # The end of input moves event time past every window: each decision has its outcome.
    assert outcomes == outcome_rows and set(outcomes) == set(actions)
    control = [a for a in actions.values() if a["variant"] == "control"]
    assert control and not any(a["delivered"] for a in control)
    print(
        f"\n  {len(events):,} events, {hostile:,} malformed: {len(rows)} profiles, "
        f"{len(score_rows)} scores and lead scores, {len(moves)} cohort moves in Kafka and "
        f"PostgreSQL agree; {len(truth):,} sessions, 1 purge"
    )
