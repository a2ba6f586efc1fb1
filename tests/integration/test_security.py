"""Security basics through the real broker, the profile job (local Flink) and the real
PostgreSQL: text that looks like SQL in every free-text field is stored as the text it is, and
the database password never reaches a log, a console or an output topic."""

import json
import uuid
from pathlib import Path

import psycopg
import pyflink

from jobs import profile as job
from jobs import report
from models.generator import EventGenerator
from tests.integration.conftest import publish, topic_records
from udfs.privacy import normalize_query
from udfs.pseudonyms import configured_subject

# Free-text fields of the contract (envelope and per-type), each given one of these.
TEXT_FIELDS = (  # the envelope's three first
    "event_id",
    "user_id",
    "session_id",
    "product_id",
    "feature",
    "content_id",
    "code",
    "campaign_id",
    "action_id",
    "url",
    "category",
    "order_id",
    "query",
)
INJECTIONS = (
    "'); DROP TABLE events; --",
    "' OR '1'='1",
    "\\'; DELETE FROM user_profiles; --",
    "$$; TRUNCATE actions; $$",
    '" OR ""="',
    "1; SELECT pg_sleep(30); --",
    "’; DROP TABLE user_sessions; --",
)
TABLES = ("events", "user_profiles", "user_sessions", "user_scores", "actions", "action_outcomes")
START_TS_MS = 1_775_001_600_000  # 2026-04-01T00:00:00Z: this test's own stretch of event time


def hostile_text(event: dict, salt: int) -> dict:
    """The event with an injection string appended to each of its free-text fields; the same
    user (and session) gets the same one everywhere, so profiles still group by user."""
    out = dict(event)
    for name in TEXT_FIELDS:
        value = out.get(name)
        if not isinstance(value, str):
            continue
        anchor = out["user_id"] if name in ("user_id", "session_id") else f"{value}{salt}"
        out[name] = value + INJECTIONS[sum(map(ord, anchor)) % len(INJECTIONS)]
    return out


def test_sql_in_every_text_field_is_stored_as_text_and_the_password_is_never_shown(
    own_outputs, trained, monkeypatch, capfd, figures
):
    models = own_outputs.models.model_copy(update={"directory": str(trained.registry.directory)})
    settings = own_outputs.model_copy(update={"models": models})
    # Local PostgreSQL trusts local connections and ignores it; the job still carries it.
    secret = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("POSTGRES_PASSWORD", secret)
    assert secret in settings.postgres.conninfo()
    generator = settings.generator.model_copy(update={"start_ts_ms": START_TS_MS})
    history = EventGenerator(generator, users=12, days=2, seed=515).generate()
    events = [hostile_text(e, i) for i, e in enumerate(history.events)]
    injected = sum(
        1 for e in events for name in TEXT_FIELDS if any(s in str(e.get(name)) for s in INJECTIONS)
    )
    assert injected > 3 * len(events)
    batch = publish(settings, [(e["user_id"], json.dumps(e).encode()) for e in events])
    start, stop = batch.bounds()
    job.run(settings, start, stop)

    with psycopg.connect(settings.postgres.conninfo()) as conn:
        for table in TABLES:
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] == table
        stored = {
            event_id: (user_id, session_id, properties)
            for event_id, user_id, session_id, properties in conn.execute(
                "SELECT event_id, user_id, session_id, properties FROM events"
                " WHERE event_id = ANY(%s)",
                ([e["event_id"] for e in events],),
            ).fetchall()
        }
        profiled = {
            user_id
            for (user_id,) in conn.execute(
                "SELECT user_id FROM user_profiles WHERE as_of_ts >= %s", (START_TS_MS,)
            ).fetchall()
        }
    assert len(stored) == len(events), "every event is archived under its own (hostile) id"
    for e in events:
        user_id, session_id, properties = stored[e["event_id"]]
        assert (user_id, session_id) == (e["user_id"], e["session_id"])
        for name in TEXT_FIELDS[3:]:  # the type's own text fields, kept in `properties`
            if isinstance(e.get(name), str):
                # A search query keeps its normalized terms only (docs/privacy.md).
                sent = normalize_query(e[name]) if name == "query" else e[name]
                assert properties.get(name) == sent, name
    subject = configured_subject(settings.privacy)
    assert profiled == {subject(e["user_id"]) for e in events}
    # The report's own query takes the experiment name as a parameter too.
    assert report.user_outcomes(settings, report.Run(INJECTIONS[0])) == []

    console = capfd.readouterr()
    logs = sorted((Path(pyflink.__file__).parent / "log").glob("*.log"))
    assert logs, "the Flink log exists"
    outputs = [
        r
        for name in ("profiles", "scores", "actions")
        for r in topic_records(settings, getattr(settings.kafka.topics, name))
    ]
    assert outputs
    for where, text in [
        ("stdout", console.out),
        ("stderr", console.err),
        *((str(log), log.read_text(errors="replace")) for log in logs),
        *(("output record", (r.value or b"").decode(errors="replace")) for r in outputs),
    ]:
        assert secret not in text, f"the password appears in {where}"
    figures(
        f"{len(events):,} events with {injected:,} injected text fields stored verbatim;"
        f" password absent from {len(logs)} logs, the console and {len(outputs):,} output records"
    )
