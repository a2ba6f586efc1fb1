"""Each analyst query in sql/queries/ runs through the SQL session of `make sql` (batch mode)
against the stream run's outputs, and its result equals the same figures computed here in
Python from the Kafka topics (the queries read PostgreSQL tables or the topics)."""

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from conf.settings import OUTPUT_TOPICS
from jobs import sql
from tests.integration.conftest import config_file
from udfs import outputs
from udfs.pseudonyms import configured_subject
from udfs.timeunits import DAY_MS, HOUR_MS

QUERIES = Path(__file__).resolve().parents[2] / "sql" / "queries"


@pytest.fixture(scope="module")
def session(stream_run):
    return sql.Session(stream_run.settings, batch=True)


def run_query(session, name: str, edits: dict[str, str] | None = None) -> list[dict]:
    """The query file's rows, with the `edits` its comment asks for (text -> replacement)."""
    [statement] = sql.statements((QUERIES / f"{name}.sql").read_text())
    for text, replacement in (edits or {}).items():
        assert text in statement
        statement = statement.replace(text, replacement)
    names, rows = session.rows(statement)
    return [dict(zip(names, row, strict=True)) for row in rows]


def values(records) -> list[dict]:
    return [json.loads(r.value) for r in records if r.value is not None]


def hour_text(ms: int) -> str:
    return datetime.fromtimestamp(ms // HOUR_MS * HOUR_MS / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def ms(moment: datetime) -> int:
    return round(moment.replace(tzinfo=UTC).timestamp() * 1000)


def test_the_shell_starts_with_every_topic_and_table_registered(stream_run, tmp_path):
    commands = "SHOW TABLES FROM kafka;\nSHOW TABLES;\nSELECT COUNT(*) AS n FROM\n user_sessions;\n"
    shell = subprocess.run(
        [sys.executable, "-m", "jobs.sql"],
        input=commands + "QUIT;\n",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BEHAVIOR_CONFIG": config_file(stream_run.settings, tmp_path)},
        check=True,
    )
    listed = set(re.findall(r"^\| (\w+) +\|$", shell.stdout, re.MULTILINE))
    assert {"events", *OUTPUT_TOPICS} <= listed  # the kafka database
    tables = {o.table for o in outputs.DECLARED if o.table}
    assert tables | {"cohorts", "model_registry", "ground_truth_users"} <= listed
    with psycopg.connect(stream_run.settings.postgres.conninfo()) as conn:
        sessions = conn.execute("SELECT count(*) FROM user_sessions").fetchone()[0]
    assert sessions > 0 and re.search(rf"^\| +{sessions} \|$", shell.stdout, re.MULTILINE)


def test_every_query_file_is_tested():
    tested = {n.removeprefix("test_") for n in globals() if n.startswith("test_")}
    assert {p.stem for p in QUERIES.glob("*.sql")} <= tested


def test_top_abandonment_last_day(session, stream_topics):
    scores = values(stream_topics["scores"])
    since = max(s["ts"] for s in scores) - DAY_MS
    peak, last = {}, {}
    for s in scores:
        if s["abandonment"] is not None and s["ts"] >= since:
            peak[s["user_id"]] = max(peak.get(s["user_id"], 0.0), s["abandonment"])
            last[s["user_id"]] = max(last.get(s["user_id"], 0), s["ts"])
    expected = sorted(peak, key=lambda u: (-peak[u], u))[:10]
    rows = run_query(session, "top_abandonment_last_day")
    assert expected, "the run has no open carts in its last day"
    assert [r["user_id"] for r in rows] == expected
    assert [r["peak_abandonment"] for r in rows] == [peak[u] for u in expected]
    assert [ms(r["last_scored"]) for r in rows] == [last[u] for u in expected]


def test_cohort_flows_per_hour(session, stream_topics):
    moves = Counter(
        (hour_text(m["ts"]), m["from_cohort_name"] or "(new)", m["to_cohort_name"])
        for m in values(stream_topics["cohort_moves"])
    )
    rows = run_query(session, "cohort_flows_per_hour")
    assert moves
    assert {(r["hour"], r["from_cohort"], r["to_cohort"]): r["moves"] for r in rows} == moves
    order = [(r["hour"], -r["moves"]) for r in rows]
    assert order == sorted(order)


def test_action_funnel_by_variant(session, stream_topics):
    outcomes = {o["decision_id"]: o for o in values(stream_topics["action_outcomes"])}
    funnel = defaultdict(lambda: Counter(revenue=0.0))
    users = defaultdict(set)
    for a in values(stream_topics["actions"]):
        if a["experiment"] is None:
            continue
        arm = (a["experiment"], a["variant"])
        users[arm].add(a["user_id"])
        f = funnel[arm]
        f["decisions"] += 1
        f["delivered"] += a["delivered"]
        outcome = outcomes.get(a["decision_id"])
        if outcome is not None:
            f["with_outcome"] += 1
            f["converted"] += outcome["converted"]
            f["revenue"] += outcome["revenue"]
    rows = run_query(session, "action_funnel_by_variant")
    assert funnel, "the run made no experiment decisions"
    assert [(r["experiment"], r["variant"]) for r in rows] == sorted(funnel)
    for r in rows:
        f = funnel[r["experiment"], r["variant"]]
        counted = ("decisions", "delivered", "with_outcome", "converted")
        assert {k: r[k] for k in counted} == {k: f[k] for k in counted}
        assert r["users"] == len(users[r["experiment"], r["variant"]])
        assert float(r["revenue"]) == pytest.approx(f["revenue"], abs=0.006)


def test_dead_letters_per_reason_per_hour(session, stream_topics, stream_run):
    letters = Counter()
    sizes = Counter()
    for record in stream_topics["events_dlq"]:
        letter = json.loads(record.value)
        key = (hour_text(record.timestamp), letter["reason"])
        letters[key] += 1
        sizes[key] += letter["raw_size"]
    rows = run_query(session, "dead_letters_per_reason_per_hour")
    assert {(r["hour"], r["reason"]): r["letters"] for r in rows} == letters
    assert {(r["hour"], r["reason"]): r["raw_bytes"] for r in rows} == sizes
    # And the dead letters are exactly the hostile records the run mixed in.
    by_reason = Counter()
    for r in rows:
        by_reason[r["reason"]] += r["letters"]
    assert by_reason == {reason.value: n for reason, n in stream_run.hostile.items()}


def test_scores_of_one_user(session, stream_topics, stream_run):
    user = configured_subject(stream_run.settings.privacy)("u000007")
    mine = sorted(
        (s for s in values(stream_topics["scores"]) if s["user_id"] == user),
        key=lambda s: s["profile_version"],
    )
    rows = run_query(session, "scores_of_one_user", {"p-0123456789abcdef0123456789abcdef": user})
    assert mine
    assert [ms(r["event_time"]) for r in rows] == [s["ts"] for s in mine]
    for column in ("profile_version", "cohort_name", "purchase", "abandonment", "drift"):
        assert [r[column] for r in rows] == [s[column] for s in mine], column
