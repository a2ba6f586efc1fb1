"""What a Flink SQL session sees (`make sql`, `make submit JOB=sql`, the metrics job): every
topic and every PostgreSQL table, registered at start.

- `kafka.<topic>`: a Kafka table per topic (`kafka.scores`, `kafka.events_dlq`, ...), JSON,
  with the columns of the output's declaration (udfs/outputs.py; the events topic: the event
  contract's fields), an `event_time` attribute and a watermark. Read `read_committed` from the
  earliest offset; in batch mode bounded by the latest offsets at start.
- `<table>` (default database): every PostgreSQL table of the project, read through Flink's
  JDBC connector. Declared outputs get their DDL from the declaration, with `event_time`; the
  other tables from PostgreSQL's own description. They read views of schema `flink_sql`
  (created by `make up`) that cast what Flink's JDBC connector cannot read: jsonb (to text)
  and timestamptz (to UTC timestamp).
- catalog `pg`: Flink's JDBC catalog over the database, so tables added later are there without
  any DDL (it cannot read tables with jsonb or timestamptz columns).

Times are epoch milliseconds in the tables, `event_time` a TIMESTAMP in UTC, the session's
time zone."""

from __future__ import annotations

import json
from importlib import resources

from conf.settings import Settings, Topic
from sql import flink_table, with_options
from udfs import contracts, outputs

TIME_ZONE = "UTC"
KAFKA_DATABASE = "kafka"
VIEW_SCHEMA = "flink_sql"
JSON_SQL_TYPES = {"string": "STRING", "integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN"}
# PostgreSQL column types the views pass through, and their Flink SQL type; any other type is
# cast in the view (see `view_column`).
POSTGRES_SQL_TYPES = {
    "text": "STRING",
    "character varying": "STRING",
    "character": "STRING",
    "integer": "INT",
    "smallint": "SMALLINT",
    "bigint": "BIGINT",
    "double precision": "DOUBLE",
    "real": "FLOAT",
    "boolean": "BOOLEAN",
    "timestamp without time zone": "TIMESTAMP(6)",
    "date": "DATE",
    "bytea": "BYTES",
}


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# ------------------------------------------------------------------ PostgreSQL side


def view_column(name: str, pg_type: str) -> tuple[str, str]:
    """(SQL expression, the view column's type) for a column of a PostgreSQL table."""
    ident = '"' + name.replace('"', '""') + '"'
    if pg_type in POSTGRES_SQL_TYPES:
        return ident, pg_type
    if pg_type == "timestamp with time zone":
        return f"({ident} AT TIME ZONE 'UTC') AS {ident}", "timestamp without time zone"
    if pg_type in ("numeric", "decimal"):
        return f"{ident}::double precision AS {ident}", "double precision"
    return f"{ident}::text AS {ident}", "text"


def drop_views(conn) -> None:
    conn.execute(f"DROP SCHEMA IF EXISTS {VIEW_SCHEMA} CASCADE")


def create_views(conn) -> int:
    """(Re)create schema `flink_sql` with a view of every table of schema public that Flink's
    JDBC connector can read; returns how many. Run by `make up` after the migrations."""
    rows = conn.execute(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
        " ORDER BY c.table_name, c.ordinal_position"
    ).fetchall()
    tables: dict[str, list[str]] = {}
    for table, column, pg_type in rows:
        tables.setdefault(table, []).append(view_column(column, pg_type)[0])
    with conn.transaction():
        drop_views(conn)
        conn.execute(f"CREATE SCHEMA {VIEW_SCHEMA}")
        for table, columns in tables.items():
            conn.execute(
                f'CREATE VIEW {VIEW_SCHEMA}."{table}" AS SELECT {", ".join(columns)}'
                f' FROM public."{table}"'
            )
    return len(tables)


def view_columns(conn) -> dict[str, list[tuple[str, str]]]:
    """Table -> its view's (column, Flink SQL type), in order."""
    rows = conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        (VIEW_SCHEMA,),
    ).fetchall()
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, pg_type in rows:
        tables.setdefault(table, []).append((column, POSTGRES_SQL_TYPES[pg_type]))
    return tables


def jdbc_options(config: Settings, table: str) -> dict[str, str]:
    return {
        "connector": "jdbc",
        "table-name": f"{VIEW_SCHEMA}.{table}",
        **config.postgres.jdbc_options(),
        "scan.fetch-size": "2000",
    }


def declared_columns(output: outputs.Output) -> list[tuple[str, str]]:
    return [(n, outputs.FLINK_SQL_TYPES[t]) for n, t in output.columns]


def event_time_column(column_or_expression: str) -> str:
    """The `event_time` attribute from epoch ms: a TIMESTAMP (UTC, the session's zone), not a
    TIMESTAMP_LTZ, which PyFlink cannot collect into Python."""
    ms = column_or_expression
    if ms.isidentifier():
        ms = quoted(ms)
    return f"{quoted('event_time')} AS CAST(TO_TIMESTAMP_LTZ({ms}, 3) AS TIMESTAMP(3))"


def postgres_statements(config: Settings, views: dict[str, list[tuple[str, str]]]) -> list[str]:
    """DDL of a Flink table per PostgreSQL table (`views`: from `view_columns`)."""
    declared = {o.table: o for o in outputs.DECLARED if o.table}
    statements = []
    for table, columns in sorted(views.items()):
        options = with_options(jdbc_options(config, table))
        output = declared.get(table)
        if output is None:
            statements.append(flink_table(quoted(table), columns, (), options))
            continue
        extra = [event_time_column(output.event_time)] if output.event_time else []
        statements.append(
            flink_table(quoted(table), declared_columns(output), output.key, options, extra)
        )
    return statements


def catalog_statement(config: Settings) -> str:
    """Flink's JDBC catalog `pg` over the database. It insists on a password: with none
    configured (trust authentication) a placeholder goes, which such a server ignores."""
    p = config.postgres.parts
    options = {
        "type": "jdbc",
        "base-url": f"jdbc:postgresql://{p['host']}:{p['port']}/",
        "default-database": p["dbname"],
        "username": p["user"],
        "password": config.postgres.jdbc_options()["password"] or "unused",
    }
    return f"CREATE CATALOG pg WITH (\n  {with_options(options)}\n)"


# ------------------------------------------------------------------ Kafka side


def event_columns() -> list[tuple[str, str]]:
    """Every field of the event contract (v1): the envelope, then each type's fields; objects
    and arrays as JSON text."""
    folder = resources.files("udfs").joinpath("schemas", "v1")
    columns: dict[str, str] = {}
    names = [
        "envelope",
        *sorted(p.name[:-5] for p in folder.iterdir() if p.name != "envelope.json"),
    ]
    for name in names:
        schema = json.loads(folder.joinpath(f"{name}.json").read_text())
        for field, spec in schema.get("properties", {}).items():
            json_type = spec.get("type", "string")
            columns.setdefault(field, JSON_SQL_TYPES.get(json_type, "STRING"))
    return list(columns.items())


def kafka_source_options(config: Settings, topic: Topic, group: str, bounded: bool) -> dict:
    kafka = config.kafka
    options = {
        "connector": "kafka",
        "topic": topic.name,
        "properties.bootstrap.servers": kafka.bootstrap_servers,
        "properties.group.id": f"{kafka.consumer_group}-{group}",
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": "earliest-offset",
        "format": "json",
        # A record that is not JSON is skipped (the profile job dead-letters it).
        "json.ignore-parse-errors": "true",
    }
    if bounded:
        options["scan.bounded.mode"] = "latest-offset"
    return options


def topic_statements(config: Settings, group: str = "sql", bounded: bool = False) -> list[str]:
    """DDL of a Kafka table per topic in database `kafka`."""
    lag = f"INTERVAL '{config.profile.out_of_orderness_ms // 1000}' SECOND"
    topics = config.kafka.topics

    def table(name, columns, time_column, extra=()):
        options = with_options(kafka_source_options(config, getattr(topics, name), group, bounded))
        watermark = f"WATERMARK FOR {quoted('event_time')} AS {quoted('event_time')} - {lag}"
        columns_extra = [*extra, *([event_time_column(time_column)] if time_column else [])]
        return flink_table(
            f"{KAFKA_DATABASE}.{quoted(name)}", columns, (), options, [*columns_extra, watermark]
        )

    # A missing or implausible `ts` (outside [min_ts_ms, now + max_future_skew_ms]) counts as
    # time 0, as in the profile job's source: it never moves a watermark (the profile job
    # dead-letters such records).
    contract = config.events
    plausible = (
        f"CASE WHEN {quoted('ts')} BETWEEN {contract.min_ts_ms}"
        f" AND UNIX_TIMESTAMP() * 1000 + {contract.max_future_skew_ms}"
        f" THEN {quoted('ts')} ELSE 0 END"
    )
    statements = [table("events", event_columns(), None, [event_time_column(plausible)])]
    letter = contracts.DEAD_LETTER_VALUE["properties"]
    letter_columns = [
        (n, "BIGINT" if s.get("type") == "integer" else "STRING") for n, s in letter.items()
    ]
    # A dead letter has no event time of its own: it is placed at the time it was written.
    written = f"{quoted('event_time')} TIMESTAMP(3) METADATA FROM 'timestamp' VIRTUAL"
    statements.append(table("events_dlq", letter_columns, None, [written]))
    for name, output in contracts.topic_outputs().items():
        statements.append(table(name, declared_columns(output), output.event_time))
    return statements


# ------------------------------------------------------------------ the session


def configure(t_env, config: Settings) -> None:
    t_env.get_config().set("table.local-time-zone", TIME_ZONE)
    # A topic partition that stays quiet this long stops holding the watermark back.
    t_env.get_config().set("table.exec.source.idle-timeout", f"{config.profile.idleness_ms} ms")


def register(t_env, config: Settings, views, group: str = "sql", bounded: bool = False) -> None:
    """Register the catalog, the PostgreSQL tables and the topics in `t_env` (`views`: the
    PostgreSQL tables' columns, from `view_columns`)."""
    configure(t_env, config)
    t_env.execute_sql(catalog_statement(config))
    t_env.execute_sql(f"CREATE DATABASE IF NOT EXISTS {KAFKA_DATABASE}")
    for statement in [
        *postgres_statements(config, views),
        *topic_statements(config, group, bounded),
    ]:
        t_env.execute_sql(statement)
