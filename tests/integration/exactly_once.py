"""Checks that a run's outputs hold every event exactly once: its PostgreSQL tables and Kafka
topics against those of a reference run of the same input without a failure.

- PostgreSQL: all eight output tables equal the reference's, row for row.
- Kafka: every output record carries a deterministic id (RECORD_IDS). Real Kafka hides the
  records of aborted attempts from read_committed readers, so there the topics hold exactly the
  reference's records, none twice. The local broker shows them (README, "The local broker"):
  there every record is one of the reference's, every reference record is there, and an id
  seen more than once is the same record again each time.
- Recommendations depend on what the ranking step knew of the catalogue when it ranked (summaries
  reach it alongside the requests), so a run after a failure may rank otherwise: the item ids of
  an offer's payload are left out of the comparison, and the recommendations table must hold a
  list for the same users as the reference's.
- Order kept and nothing lost: a user's profile records count the user's events (`events`);
  in the order the topic holds them they never go back (records between significant changes
  are coalesced, so they may skip) except to start again after a purge, and they end at the
  user's number of events."""

import json
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from jobs.publish import iter_topic
from models.generator import EventGenerator
from tests.conftest import without_ranked_items
from tests.integration.conftest import publish
from tests.integration.job_process import exit_code, job_process
from udfs.pseudonyms import configured_subject

TABLES = {
    "events": "event_id",
    "user_profiles": "user_id",
    "user_sessions": "user_id, session_id",
    "user_scores": "user_id",
    "cohort_moves": "move_id",
    "leads": "user_id",
    "actions": "decision_id",
    "action_outcomes": "decision_id",
    "lead_outcomes": "user_id, profile_version",
}
# The id of a record of each output topic (a tombstone's is its key).
RECORD_IDS = {
    "events_dlq": lambda v: v["dead_letter_id"],
    "profiles": lambda v: (v["user_id"], v["version"]),
    "scores": lambda v: (v["user_id"], v["profile_version"]),
    "lead_scores": lambda v: (v["user_id"], v["profile_version"]),
    "cohort_moves": lambda v: v["move_id"],
    "actions": lambda v: v["decision_id"],
    "action_outcomes": lambda v: v["decision_id"],
    "lead_outcomes": lambda v: (v["user_id"], v["profile_version"]),
}


# Where each event was read from: the same only when two runs read the same offsets.
SOURCE_COLUMNS = ("source_topic", "source_partition", "source_offset")


def tables(settings, same_offsets: bool = True) -> dict[str, list[dict]]:
    with psycopg.connect(settings.postgres.conninfo(), row_factory=dict_row) as conn:
        found = {
            name: conn.execute(f"SELECT * FROM {name} ORDER BY {key}").fetchall()
            for name, key in TABLES.items()
        }
        found["recommendations"] = conn.execute(
            "SELECT user_id FROM recommendations ORDER BY user_id"
        ).fetchall()
    for row in found["actions"]:
        row["payload"] = without_ranked_items(row["payload"])
    if not same_offsets:
        for row in found["events"]:
            for column in SOURCE_COLUMNS:
                del row[column]
    return found


def first_difference(expected: list[dict], got: list[dict]) -> str:
    """The first row that differs, as the columns that differ."""
    if len(expected) != len(got):
        return f"{len(got)} rows where the reference has {len(expected)}"
    for want, have in zip(expected, got, strict=True):
        if want != have:
            return str({c: (want[c], have.get(c)) for c in want if want[c] != have.get(c)})
    return "none"


def topic_contents(settings, name: str) -> list[tuple[str, object, bytes | None]]:
    """(key, id, value) of every record of an output topic, in offset order per partition: the
    committed ones on real Kafka; on the local broker those of aborted attempts as well."""
    isolation = "read_uncommitted" if settings.kafka.start_local_broker else "read_committed"
    topic = getattr(settings.kafka.topics, name)
    out = []
    for r in iter_topic(settings.kafka.bootstrap_servers, topic.name, isolation, 5.0):
        key = r.key.decode()
        value = r.value
        if value is None:
            record_id = ("tombstone", key)
        else:
            record = json.loads(value)
            record_id = RECORD_IDS[name](record)
            if name == "actions":
                record["payload"] = without_ranked_items(record["payload"])
                value = json.dumps(record, sort_keys=True).encode()
        out.append((key, record_id, value))
    return out


def first_copies(records):
    """Each distinct record once, at its first place."""
    seen, out = set(), []
    for record in records:
        if record not in seen:
            seen.add(record)
            out.append(record)
    return out


def sequence_faults(profiles, expected_events: Counter) -> list[str]:
    """Users whose profile records go back or end short of their events."""
    faults, last, counted = [], {}, Counter()
    for user, _, value in first_copies(profiles):
        if value is None:
            last[user] = 0  # purged: the next update counts from one again
            continue
        events = json.loads(value)["events"]
        before = last.get(user, 0)
        if events < before:
            faults.append(f"{user}: {before} then {events}")
        counted[user] += events - before if events > before else 0
        last[user] = events
    faults += [
        f"{user}: {counted[user]} of {n} events in its updates"
        for user, n in expected_events.items()
        if counted[user] != n
    ]
    return faults


def reference_run(reference, folder: Path, users: int, seed: int):
    """Generates four days of events in event-time order per user with no late ones (why: the
    tests' docstrings), publishes them, and runs the job over them without a failure into
    `reference`'s outputs. Returns (events, start offsets, stop offsets)."""
    generator = reference.generator.model_copy(update={"late_rate": 0, "out_of_order_rate": 0})
    events = EventGenerator(generator, users=users, days=4, seed=seed).generate().events
    records = [(e["user_id"], json.dumps(e).encode()) for e in events]
    start, stop = publish(reference, records).bounds()
    config_file = folder / "reference.yaml"
    with job_process(reference, config_file, start, stop) as job:
        assert exit_code(job.process, config_file, 600) == 0, "the reference run failed"
    return events, start, stop


def assert_same_outputs(reference, run, events: list[dict], same_offsets: bool = True) -> list[str]:
    """Asserts that `run`'s outputs hold `events` exactly once, as `reference`'s do; returns
    what was compared, one line each. `same_offsets`: both read the same input records (else
    the archive's source coordinates are left out)."""
    report = []
    expected_tables = tables(reference, same_offsets)
    got_tables = tables(run, same_offsets)
    for name in (*TABLES, "recommendations"):
        want, have = expected_tables[name], got_tables[name]
        assert have == want, f"table {name} differs: {first_difference(want, have)}"
    assert len(expected_tables["events"]) == len(events), "events missing"
    counts = ", ".join(f"{n} {len(r)}" for n, r in expected_tables.items())
    report.append(f"tables equal: {counts}")

    for name in RECORD_IDS:
        expected, got = topic_contents(reference, name), topic_contents(run, name)
        copies = defaultdict(set)
        for _, record_id, value in got:
            copies[record_id].add(value)
        differing = [i for i, values in copies.items() if len(values) > 1]
        assert not differing, f"{name}: ids with different records: {differing[:3]}"
        if run.kafka.start_local_broker:
            assert set(got) == set(expected), f"{name}: records missing or unknown"
        else:
            assert Counter(got) == Counter(expected), f"{name}: records missing or twice"
        repeated = len(got) - len(set(got))
        report.append(f"{name}: {len(set(got))} records as in the reference, {repeated} again")
        if name == "profiles":
            subject = configured_subject(run.privacy)  # profiles name users by pseudonym
            per_user = Counter(
                subject(e["user_id"]) for e in events if e["type"] != "consent_update"
            )
            faults = sequence_faults(got, per_user)
            assert not faults, f"{len(faults)} users with a gap: {faults[:5]}"
    return report
