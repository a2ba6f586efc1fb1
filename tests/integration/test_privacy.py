"""Consent, erasure and minimization end to end: the profile job over generated events that all
carry a tracker's context (full IP addresses, user agents, referrers with the user in their
query), on the real broker and PostgreSQL, then jobs/erasure.py. One user is erased by a
revocation of analytics sent to the `consent` topic (as a consent platform would), another by
an erasure request in the event stream; the generator's own consent updates refuse marketing
or personalization for some users.

Checked: an erased user's id and pseudonym are in no table and no compacted topic's latest
records, only a receipt (without either) says they were erased; no analytical table or topic
holds any user's own id; no offer for users who refused marketing, no recommendation or content
action for those who refused personalization, and the outputs that name users by their id do
so only under their purpose; no table and no topic the job writes holds a full IP address or
user agent."""

import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import psycopg.sql
import pytest
from psycopg.rows import dict_row

from conf.policy import load_policy
from conf.settings import OUTPUT_TOPICS
from jobs import erasure
from jobs import profile as profile_job
from jobs import release as release_job
from jobs.publish import Publisher
from models.generator import EventGenerator
from tests.integration.conftest import (
    allowing,
    output_topic_records,
    outputs_of_own,
    policy_offering_recommendations_over,
    publish,
)
from udfs import contracts, outputs, pseudonyms
from udfs.dp import BudgetExceeded
from udfs.pseudonyms import configured_subject
from udfs.timeunits import HOUR_MS, MINUTE_MS

START_TS_MS = 1_790_812_800_000  # 2026-10-01T00:00:00Z: this test's own stretch of event time
# Topics whose records are a user's latest state: an erased user's latest is a tombstone.
COMPACTED = ("profiles", "scores", "lead_scores", "recommendations")


@dataclass
class PrivacyRun:
    settings: object
    events: list[dict]
    via_consent_topic: str  # erased by a revocation on the consent topic
    by_request: str  # erased by an erasure request
    ips: set[str]
    user_agents: set[str]
    erased: erasure.Tally

    def subject(self, user: str) -> str:
        """How the analytical outputs name the user."""
        return configured_subject(self.settings.privacy)(user)


@pytest.fixture(scope="module")
def privacy_run(local_stack, trained, tmp_path_factory):
    with outputs_of_own(local_stack, ("events", *OUTPUT_TOPICS, "control", "consent")) as own:
        folder = tmp_path_factory.mktemp("privacy")
        actions_file = policy_offering_recommendations_over(own.actions.actions_file, 0.04, folder)
        generator = own.generator.model_copy(
            update={
                "start_ts_ms": START_TS_MS,
                "context_rate": 1.0,
                "out_of_order_rate": 0.0,
                "late_rate": 0.0,
            }
        )
        settings = own.model_copy(
            update={
                "models": own.models.model_copy(
                    update={"directory": str(trained.registry.directory)}
                ),
                "generator": generator,
                "actions": own.actions.model_copy(update={"actions_file": actions_file}),
            }
        )
        events = EventGenerator(generator, users=60, days=3, seed=5150).generate().events
        last = {}
        for e in events:
            last[e["user_id"]] = e
        via_consent_topic, by_request = sorted(last)[:2]
        request = {
            **{k: last[by_request][k] for k in ("user_id", "session_id", "schema_version")},
            "event_id": "erasure-request-1",
            "type": "erasure_request",
            "ts": last[by_request]["ts"] + MINUTE_MS,
            "request_id": "dsr-2026-0042",
        }
        revocation = {
            **{k: last[via_consent_topic][k] for k in ("user_id", "session_id", "schema_version")},
            "event_id": "consent-platform-1",
            "type": "consent_update",
            "ts": last[via_consent_topic]["ts"] + MINUTE_MS,
            "purposes": {"analytics": False},
        }
        events = [*events, request]
        consent = settings.kafka.topics.consent
        platform = Publisher(settings.kafka.bootstrap_servers, consent.name, consent.partitions)
        platform.send(revocation["user_id"], json.dumps(revocation).encode())
        platform.close()
        batch = publish(settings, [(e["user_id"], json.dumps(e).encode()) for e in events])
        profile_job.run(settings, *batch.bounds())
        tally = erasure.Executor(settings).run(idle_exit_s=5, report=print)
        contexts = [e["context"] for e in events if "context" in e]
        yield PrivacyRun(
            settings,
            [*events, revocation],
            via_consent_topic,
            by_request,
            {c["ip"] for c in contexts if "ip" in c},
            {c["user_agent"] for c in contexts if "user_agent" in c},
            tally,
        )


@pytest.fixture(scope="module")
def tables(privacy_run) -> dict[str, list[str]]:
    """Every text, JSON or array column of every table, by table (text to search in)."""
    with psycopg.connect(privacy_run.settings.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
            " AND c.data_type IN ('text', 'jsonb', 'json', 'ARRAY', 'character varying')"
        ).fetchall()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return columns


def tables_holding(settings, tables: dict[str, list[str]], pattern: str) -> dict[str, int]:
    """Rows per table with a text column matching the POSIX regular expression."""
    found = {}
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        for table, columns in tables.items():
            where = psycopg.sql.SQL(" OR ").join(
                psycopg.sql.SQL("{}::text ~ %(p)s").format(psycopg.sql.Identifier(c))
                for c in columns
            )
            query = psycopg.sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                psycopg.sql.Identifier(table), where
            )
            count = conn.execute(query, {"p": pattern}).fetchone()[0]
            if count:
                found[table] = count
    return found


@pytest.fixture(scope="module")
def topics(privacy_run) -> dict[str, list]:
    return output_topic_records(privacy_run.settings)


def word(text: str) -> str:
    return rf"(^|[^A-Za-z0-9]){re.escape(text)}([^A-Za-z0-9]|$)"


def test_an_erased_user_is_in_no_table_and_only_a_receipt_says_so(privacy_run, tables, figures):
    run = privacy_run
    assert run.erased.erased == 2 and run.erased.invalid == []
    for user in (run.via_consent_topic, run.by_request):
        assert run.subject(user) != user
        for name in (user, run.subject(user)):
            assert tables_holding(run.settings, tables, word(name)) == {}, name
    with psycopg.connect(run.settings.postgres.conninfo(), row_factory=dict_row) as conn:
        receipts = conn.execute("SELECT * FROM erasure_receipts ORDER BY reason").fetchall()
        someone_else = conn.execute("SELECT count(DISTINCT user_id) FROM events").fetchone()
    assert [(r["reason"], r["request_id"]) for r in receipts] == [
        ("analytics_revoked", None),
        ("requested", "dsr-2026-0042"),
    ]
    # The request came after the user's events in their partition: their rows were written,
    # then deleted. The consent topic's revocation is applied when it arrives, which may be
    # before their events (then refused, never written): its receipt may count no rows.
    requested = receipts[1]["rows"]
    assert requested["events"] > 0 and requested["user_sessions"] > 0
    for receipt, user in itertools.product(receipts, (run.via_consent_topic, run.by_request)):
        assert user not in json.dumps(receipt, default=str)
        assert run.subject(user) not in json.dumps(receipt, default=str)
    assert someone_else["count"] > 40, "the others are kept"
    figures(
        "erased: " + "; ".join(f"{r['reason']}: {sum(r['rows'].values())} rows" for r in receipts)
    )


def test_an_erased_users_latest_record_on_every_compacted_topic_is_a_tombstone(privacy_run, topics):
    declared = contracts.topic_outputs()
    for name in COMPACTED:
        latest = {}
        for record in topics[name]:
            latest[record.key.decode()] = record.value
        for person in (privacy_run.via_consent_topic, privacy_run.by_request):
            pseudonymized = declared[name].names_user == outputs.PSEUDONYM
            user = privacy_run.subject(person) if pseudonymized else person
            if name == "profiles":
                assert user in latest, f"{user} never had a profile: the test proves nothing"
            if user in latest:
                assert latest[user] is None, f"{name}: {user} still has a record"


def test_erasure_records_meet_their_contract(privacy_run, topics):
    key_valid, value_valid = contracts.validators("erasures")
    records = topics["erasures"]
    assert {r.key.decode() for r in records} == {
        privacy_run.via_consent_topic,
        privacy_run.by_request,
    }
    for record in records:
        key_valid(record.key.decode())
        value = json.loads(record.value)
        value_valid(value)
        assert value["subject"] == privacy_run.subject(value["user_id"])


def test_no_analytical_table_or_topic_holds_a_users_own_id(privacy_run, tables, topics):
    """Analytical: every declared output that does not name users by their own id (profiles,
    sessions, scores, leads, cohort moves; metrics and alerts name none)."""
    run = privacy_run
    analytical = [o for o in outputs.DECLARED if o.names_user != outputs.PERSON]
    users = {e["user_id"] for e in run.events}
    ids = "|".join(word(u) for u in sorted(users))
    in_tables = {o.table: tables[o.table] for o in analytical if o.table}
    assert tables_holding(run.settings, in_tables, ids) == {}
    pseudonymized = [o for o in analytical if o.table and "user_id" in o.names]
    named = rf"^{re.escape(pseudonyms.PREFIX)}[0-9a-f]{{{pseudonyms.DIGITS}}}$"
    with psycopg.connect(run.settings.postgres.conninfo()) as conn:
        for output in pseudonymized:
            query = psycopg.sql.SQL("SELECT count(*), count(*) FILTER (WHERE user_id ~ %s) FROM {}")
            rows, named_rows = conn.execute(
                query.format(psycopg.sql.Identifier(output.table)), (named,)
            ).fetchone()
            assert rows > 0 and named_rows == rows, output.table
    pattern = re.compile(ids.encode())
    for output in (o for o in analytical if o.kafka):
        records = topics[output.topic]
        leaked = [r for r in records if pattern.search((r.key or b"") + b" " + (r.value or b""))]
        assert leaked == [], f"{output.topic}: {leaked[:1]}"
    assert all(topics[o.topic] for o in pseudonymized if o.kafka), "the topics were written"


def test_outputs_naming_users_by_their_id_do_so_only_under_their_purpose(privacy_run, topics):
    run = privacy_run
    allowed = {p: allowing(run.events, p, run.settings) for p in ("marketing", "personalization")}
    policy = load_policy(run.settings.actions.actions_file, run.settings.actions.experiments_file)
    purposes = {a.name: a.purposes for a in policy.actions}
    named = {
        name: [json.loads(r.value) for r in topics[name] if r.value is not None]
        for name in ("actions", "action_outcomes", "recommendations")
    }
    with psycopg.connect(run.settings.postgres.conninfo(), row_factory=dict_row) as conn:
        for table in ("actions", "action_outcomes"):
            named[table] += conn.execute(f"SELECT user_id, action FROM {table}").fetchall()
        named["recommendations"] += conn.execute("SELECT user_id FROM recommendations").fetchall()
    assert all(named.values()), "every operational output was written"
    for row in named["actions"] + named["action_outcomes"]:
        refused = [p for p in purposes[row["action"]] if row["user_id"] not in allowed[p]]
        assert refused == [], row
    assert {r["user_id"] for r in named["recommendations"]} <= allowed["personalization"]


def marketing_actions(settings) -> set[str]:
    policy = load_policy(settings.actions.actions_file, settings.actions.experiments_file)
    return {a.name for a in policy.actions if "marketing" in a.purposes}


def test_users_who_refused_marketing_were_offered_nothing(privacy_run, figures):
    run = privacy_run
    everyone = {e["user_id"] for e in run.events}
    refusing = everyone - allowing(run.events, "marketing", run.settings)
    marketing = marketing_actions(run.settings)
    with psycopg.connect(run.settings.postgres.conninfo()) as conn:
        offers = conn.execute(
            "SELECT user_id, action FROM actions WHERE action = ANY(%s)", (sorted(marketing),)
        ).fetchall()
    offered = {user for user, _ in offers}
    assert refusing and offered, "the run has users on both sides"
    assert offered.isdisjoint(refusing)
    figures(f"{len(refusing)} users refused marketing; {len(offers)} offers to the others")


def test_users_who_refused_personalization_have_no_recommendations(privacy_run):
    run = privacy_run
    everyone = {e["user_id"] for e in run.events}
    refusing = everyone - allowing(run.events, "personalization", run.settings)
    with psycopg.connect(run.settings.postgres.conninfo()) as conn:
        listed = {u for (u,) in conn.execute("SELECT user_id FROM recommendations").fetchall()}
        content = {
            u
            for (u,) in conn.execute(
                "SELECT user_id FROM actions WHERE action IN"
                " ('help_tip', 'content_personalization', 'proactive_chat', 'recommendation_offer')"
            ).fetchall()
        }
    assert refusing and listed
    assert listed.isdisjoint(refusing) and content.isdisjoint(refusing)


def test_no_table_or_topic_holds_a_full_ip_address_or_user_agent(privacy_run, tables, topics):
    run = privacy_run
    assert len(run.ips) > 40 and len(run.user_agents) > 5
    # What the tracker sent, minimized, reached the archive.
    with psycopg.connect(run.settings.postgres.conninfo()) as conn:
        kept = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE context ? 'device_type') FROM events"
            " WHERE context ? 'ip'"
        ).fetchone()
    assert kept[0] > 0 and kept[1] > 0
    patterns = [word(ip) for ip in run.ips] + [re.escape(ua) for ua in run.user_agents]
    found = tables_holding(run.settings, tables, "|".join(patterns))
    assert found == {}
    full = re.compile("|".join(patterns).encode())
    for name, records in topics.items():
        leaked = [r for r in records if r.value is not None and full.search(r.value)]
        assert leaked == [], f"{name}: {leaked[:1]}"


def test_releases_are_noised_recorded_and_refused_once_the_budget_is_spent(privacy_run):
    config = privacy_run.settings  # privacy.dp: 0.5 a release, 2.0 a day
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)

    def sizes(conn):
        return release_job.cohort_sizes(conn, config)

    with psycopg.connect(config.postgres.conninfo()) as conn:
        true = sizes(conn)
    assert sum(true.counts) > 40
    released = [release_job.release(config, 0.5, sizes, {}, now) for _ in range(4)]
    assert all(set(r["values"]) == set(true.bins) for r in released)
    assert all(r["noise_scale"] == 2.0 for r in released)
    assert len({tuple(r["values"].values()) for r in released}) > 1, "fresh noise each time"
    assert released[-1]["budget_left"] == 0
    with pytest.raises(BudgetExceeded, match="2 spent, 0 left"):
        release_job.release(config, 0.5, sizes, {}, now)
    tomorrow = now + timedelta(days=1)
    release_job.release(config, 0.5, sizes, {}, tomorrow)  # a new period, a new budget
    with psycopg.connect(config.postgres.conninfo()) as conn:
        ledger = conn.execute(
            "SELECT period_start, count(*), sum(epsilon) FROM dp_releases GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert [(n, total) for _, n, total in ledger] == [(4, 2.0), (1, 0.5)]


def test_window_counts_bound_each_users_contribution_before_the_noise(privacy_run):
    """The counts a release of active users or events per hour noises are those computed from
    the events, each user counted in their first `windows` hours, at most `per_window` events
    an hour."""
    run, windows, per_window = privacy_run, 3, 4
    erased = {run.via_consent_topic, run.by_request}
    archived = [
        e
        for e in run.events
        if e["user_id"] not in erased and e["type"] not in ("erasure_request",)
    ]
    per_user_hour: dict[tuple[str, int], int] = {}
    for e in archived:
        key = (e["user_id"], e["ts"] // HOUR_MS * HOUR_MS)
        per_user_hour[key] = per_user_hour.get(key, 0) + 1
    expected_users: dict[int, int] = {}
    expected_events: dict[int, int] = {}
    for user in {u for u, _ in per_user_hour}:
        hours = sorted(h for u, h in per_user_hour if u == user)[:windows]
        for h in hours:
            expected_users[h] = expected_users.get(h, 0) + 1
            expected_events[h] = expected_events.get(h, 0) + min(per_user_hour[user, h], per_window)
    lo = min(e["ts"] for e in archived)
    hi = max(e["ts"] for e in archived) + 1
    with psycopg.connect(run.settings.postgres.conninfo()) as conn:
        users = release_job.window_counts(conn, "hour", lo, hi, windows, None)
        events = release_job.window_counts(conn, "hour", lo, hi, windows, per_window)
    starts = release_job.window_starts("hour", lo, hi)
    assert users.counts == [expected_users.get(s, 0) for s in starts]
    assert events.counts == [expected_events.get(s, 0) for s in starts]
    assert (users.sensitivity, events.sensitivity) == (windows, windows * per_window)
