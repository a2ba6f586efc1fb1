import json
import random
import uuid
from contextlib import contextmanager

import psycopg
import psycopg.sql
import pytest

from conf import settings as settings_module
from conf import stack
from jobs.local_run import read_dead_letters
from jobs.publish import Publisher, PublishReport, iter_topic
from udfs.events import DeadLetter

TEST_DATABASE = "behavior_test"


@pytest.fixture(scope="session")
def local_stack(settings):
    """The real broker and PostgreSQL (started when nothing answers), with a fresh database of
    the tests' own so earlier runs and the project's `behavior` database never interfere."""
    stack.up(settings)
    p = settings.postgres.parts
    test_settings = settings_module.load(
        "local",
        {"postgres.dsn": f"postgresql://{p['user']}@{p['host']}:{p['port']}/{TEST_DATABASE}"},
    )
    admin = settings.postgres.conninfo(settings.postgres.admin_database)
    with psycopg.connect(admin, autocommit=True) as conn:
        # The tests' databases, with those of single tests an interrupted run left behind.
        for (name,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
            (TEST_DATABASE, f"{TEST_DATABASE}\\_%"),
        ).fetchall():
            drop_database(conn, name)
    stack.ensure_database(test_settings)
    stack.apply_migrations(test_settings)
    return test_settings


@pytest.fixture
def own_outputs(local_stack):
    """The test stack with output topics, transactional ids and a database of this test's own.
    The local broker never times a transaction out, so one left open on a shared topic by
    another job would hold this test's read_committed reads back for good; and a test that
    compares its tables with its topics must not see another test's rows."""
    with outputs_of_own(local_stack) as own:
        yield own


@pytest.fixture
def reference_outputs(local_stack):
    """A second set of own outputs: for a reference run the test compares with."""
    with outputs_of_own(local_stack) as own:
        yield own


@contextmanager
def outputs_of_own(local_stack):
    tag = uuid.uuid4().hex[:8]
    p = local_stack.postgres.parts
    dsn = f"postgresql://{p['user']}@{p['host']}:{p['port']}/{TEST_DATABASE}_{tag}"
    postgres = local_stack.postgres.model_copy(update={"dsn": dsn})
    own = local_stack.with_own_topics(tag).model_copy(update={"postgres": postgres})
    stack.ensure_topics(own)
    stack.ensure_database(own)
    stack.apply_migrations(own)
    try:
        yield own
    finally:
        admin = own.postgres.conninfo(own.postgres.admin_database)
        with psycopg.connect(admin, autocommit=True) as conn:
            drop_database(conn, own.postgres.parts["dbname"])


def drop_database(conn, name: str) -> None:
    conn.execute(
        psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            psycopg.sql.Identifier(name)
        )
    )


def publish(settings, records):
    """records: iterable of (key or None, bytes). Returns the PublishReport of this batch."""
    topic = settings.kafka.topics.events
    publisher = Publisher(
        settings.kafka.bootstrap_servers, topic.name, topic.partitions, label="test"
    )
    for key, value in records:
        publisher.send(key, value)
    return publisher.close()


def archived(settings, batch: PublishReport) -> list[tuple]:
    """(event_id, source_partition, source_offset) rows whose source lies in this batch."""
    rows = []
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        for partition, stop in batch.end_offsets.items():
            rows += conn.execute(
                "SELECT event_id, source_partition, source_offset FROM events"
                " WHERE source_topic = %s AND source_partition = %s"
                " AND source_offset >= %s AND source_offset < %s",
                (batch.topic, partition, batch.start_offsets[partition], stop),
            ).fetchall()
    return rows


def archived_ids(settings, event_ids) -> set[str]:
    """Which of these event ids the archive holds."""
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        found = conn.execute(
            "SELECT event_id FROM events WHERE event_id = ANY(%s)", (list(event_ids),)
        ).fetchall()
    return {event_id for (event_id,) in found}


def dead_letters(settings, source_topic, contains) -> list[DeadLetter]:
    """Every committed dead letter whose source satisfies `contains(partition, offset)`."""
    return list(read_dead_letters(settings, source_topic, contains).values())


@pytest.fixture
def seeded_rng():
    return random.Random(2024)


def user_key(raw: bytes) -> str | None:
    try:
        key = json.loads(raw)["user_id"]
        key.encode("utf-8")
        return key
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def topic_records(settings, topic=None, isolation="read_committed") -> list:
    """Every record of a topic (default: profiles) a reader with this isolation level gets, in
    offset order per partition. End offsets cannot be trusted on the local broker, so the test
    reads everything (the end is 15 s without a record: the local broker can pause for seconds
    when the machine is busy) and picks its own records by event time."""
    topic = topic or settings.kafka.topics.profiles
    return list(iter_topic(settings.kafka.bootstrap_servers, topic.name, isolation))
