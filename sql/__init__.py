"""SQL: Flink DDL templates (`sql/flink/`) filled from config, and PostgreSQL migrations."""

from __future__ import annotations

from importlib import resources
from string import Template


def flink_statement(name: str, **params: str) -> str:
    """Render `sql/flink/<name>.sql`; every ${placeholder} must be given (KeyError otherwise)."""
    text = resources.files("sql").joinpath("flink", f"{name}.sql").read_text()
    return Template(text).substitute(params)


def with_options(options: dict[str, str]) -> str:
    """Render a connector WITH clause body, quoting values for Flink SQL."""
    return ",\n  ".join(
        f"'{key}' = '{str(value).replace(chr(39), chr(39) * 2)}'" for key, value in options.items()
    )


def flink_table(
    table: str,
    columns: list[tuple[str, str]],
    key: tuple[str, ...],
    options: str,
    extra: list[str] | tuple[str, ...] = (),
) -> str:
    """A temporary table of `columns` (name, Flink SQL type) with primary key `key`; `extra`:
    further lines of the schema (computed and metadata columns, a watermark)."""
    lines = [f"  `{name}` {sql_type}" for name, sql_type in columns]
    lines += [f"  {line}" for line in extra]
    if key:
        lines.append(f"  PRIMARY KEY ({', '.join(f'`{k}`' for k in key)}) NOT ENFORCED")
    body = ",\n".join(lines)
    return f"CREATE TEMPORARY TABLE {table} (\n{body}\n) WITH (\n  {options}\n)"
