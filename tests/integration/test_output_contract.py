"""Every output is declared once (udfs/outputs.py): its Flink row type, its Kafka JSON, its
Flink SQL tables and its topic contract are made from the declaration, and the PostgreSQL table
the migrations create must agree with it, column by column, type by type and in which columns
may be null."""

import psycopg
import pytest

from udfs import outputs

TABLE_OUTPUTS = [o for o in outputs.DECLARED if o.table is not None]
# Columns added to tables that already had rows: NULL in rows older than the column, always
# written since.
LEGACY_NULLABLE = {"user_scores": {"profile_version"}, "leads": {"profile_version"}}


def table_columns(conninfo: str, table: str) -> dict[str, tuple[str, bool, bool, bool]]:
    """name -> (type, generated, has a default, nullable) of a table's columns."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, is_generated = 'ALWAYS', column_default IS NOT NULL,"
            " is_nullable = 'YES'"
            " FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        ).fetchall()
    return {name: tuple(rest) for name, *rest in rows}


def primary_key(conninfo: str, table: str) -> tuple[str, ...]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = %s::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey, a.attnum)",
            (table,),
        ).fetchall()
    return tuple(name for (name,) in rows)


@pytest.mark.parametrize("output", TABLE_OUTPUTS, ids=[o.name for o in TABLE_OUTPUTS])
def test_the_postgres_table_has_the_declared_columns_types_and_key(local_stack, output):
    conninfo = local_stack.postgres.conninfo()
    columns = table_columns(conninfo, output.table)
    declared = {name: outputs.POSTGRES_TYPES[t] for name, t in output.columns}
    assert {n: columns.get(n, (None,))[0] for n in declared} == declared
    # Anything else in the table fills itself (generated from the columns, or a default).
    others = {n: c for n, c in columns.items() if n not in declared}
    assert all(generated or default for _, generated, default, _ in others.values()), others
    # What consumers are told may be null (the topic's contract) is what the table allows.
    nullable = {n for n in declared if columns[n][3] and n not in output.key}
    assert nullable - LEGACY_NULLABLE.get(output.table, set()) == set(output.optional)
    assert primary_key(conninfo, output.table) == output.key
