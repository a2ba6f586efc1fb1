"""The local stack: idempotent set-up, migrations, topics, and the embedded PostgreSQL fallback."""

import socket

import psycopg
import pytest
from kafka import KafkaAdminClient

from conf import settings as settings_module
from conf import stack


def test_up_twice_changes_nothing_the_second_time(local_stack, capsys):
    stack.up(local_stack)
    out = capsys.readouterr().out
    assert f"all {len(settings_module.TOPIC_NAMES)} topics exist" in out
    assert "migrations applied" in out and "applied migrations:" not in out
    assert "started" not in out


def test_topics_exist_with_configured_partitions(local_stack):
    admin = KafkaAdminClient(bootstrap_servers=local_stack.kafka.bootstrap_servers)
    described = {
        t["name"]: len(t["partitions"])
        for t in admin.describe_topics([t.name for t in local_stack.kafka.topics.all()])
    }
    admin.close()
    assert described == {t.name: t.partitions for t in local_stack.kafka.topics.all()}


@pytest.fixture
def scratch_database(local_stack):
    """A throwaway database so migration tests never touch the project's own."""
    name = "behavior_migration_test"
    admin = local_stack.postgres.conninfo(local_stack.postgres.admin_database)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
    p = local_stack.postgres.parts
    scratch = settings_module.load(
        "local", {"postgres.dsn": f"postgresql://{p['user']}@{p['host']}:{p['port']}/{name}"}
    )
    stack.ensure_database(scratch)
    yield scratch
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migrations_apply_once_and_refuse_edited_history(scratch_database, tmp_path):
    (tmp_path / "001_first.sql").write_text("CREATE TABLE t1 (id int PRIMARY KEY);")
    # Views for Flink SQL of t1 and schema_migrations, remade after every run.
    applied = stack.apply_migrations(scratch_database, tmp_path)
    assert applied == "applied migrations: 001_first.sql; 2 views for Flink SQL"
    assert stack.apply_migrations(scratch_database, tmp_path) == (
        "all 1 migrations applied; 2 views for Flink SQL"
    )
    # A migration may change a column a view reads: the views are out of its way, then remade.
    (tmp_path / "002_second.sql").write_text(
        "ALTER TABLE t1 ALTER COLUMN id TYPE bigint, ADD COLUMN at timestamptz;"
    )
    assert stack.apply_migrations(scratch_database, tmp_path).startswith(
        "applied migrations: 002_second.sql;"
    )
    with psycopg.connect(scratch_database.postgres.conninfo()) as conn:
        view = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'flink_sql' AND table_name = 't1' ORDER BY ordinal_position"
        ).fetchall()
    assert view == [("id", "bigint"), ("at", "timestamp without time zone")]
    (tmp_path / "001_first.sql").write_text("CREATE TABLE t1 (id bigint PRIMARY KEY);")
    with pytest.raises(stack.StackError, match="001_first.sql changed after it was applied"):
        stack.apply_migrations(scratch_database, tmp_path)


def test_project_migrations_create_the_archive_table(scratch_database):
    stack.apply_migrations(scratch_database)
    with psycopg.connect(scratch_database.postgres.conninfo()) as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'events'"
            )
        }
    assert {"event_id", "user_id", "ts_ms", "ts", "properties", "source_offset"} <= columns


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_embedded_postgres_starts_when_nothing_answers(tmp_path):
    port = _free_port()
    settings = settings_module.load(
        "local",
        {
            "postgres.dsn": f"postgresql://postgres@127.0.0.1:{port}/behavior",
            "postgres.local_server": "embedded",
            "local.state_dir": str(tmp_path / "state"),
        },
    )
    assert not stack.postgres_answers(settings)
    try:
        assert "embedded PostgreSQL" in stack.ensure_postgres(settings)
        assert stack.ensure_database(settings) == "created database behavior"
        assert stack.apply_migrations(settings).startswith("applied migrations: 001_events.sql")
        assert stack.ensure_postgres(settings).startswith("PostgreSQL answers")
    finally:
        stack.stop_postgres(settings)
    assert not stack.postgres_answers(settings)


def test_unreachable_service_that_may_not_be_started_is_a_clear_error():
    settings = settings_module.load(
        "local",
        {
            "postgres.dsn": f"postgresql://postgres@127.0.0.1:{_free_port()}/behavior",
            "postgres.local_server": "none",
        },
    )
    with pytest.raises(stack.StackError, match=r"PostgreSQL at postgresql://postgres@127\.0\.0\.1"):
        stack.ensure_postgres(settings)
