"""Flink SQL over every topic and table (sql/catalog.py registers them at start): an interactive
shell (`make sql`), a script (`make sql FILE=...`), or a script submitted to the standalone
cluster, where a streaming INSERT runs as a long-running job (`make submit JOB=sql FILE=...`).

The shell runs on PyFlink's own TableEnvironment: the same SQL engine and planner as Flink's
SQL client, which the PyPI package cannot start (its SQL gateway jar is not shipped). It starts
in batch mode: topics are read up to their latest offsets and queries print their final
result. `SET 'execution.runtime-mode' = 'streaming';` switches to continuous queries, whose
changes print as they come (op +I, -U, +U, -D) until Ctrl-C. A script's INSERT statements run
together as one job; in streaming mode that job runs until it is cancelled."""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from pathlib import Path

import psycopg
import sqlparse
from pyflink.common import Configuration
from pyflink.table import EnvironmentSettings, TableEnvironment
from pyflink.table.table_result import TableResult

from conf import settings as settings_module
from conf.settings import Settings, redact_secrets
from sql import catalog

RUNTIME_MODE = "execution.runtime-mode"
HELP = """Tables: SHOW TABLES; (PostgreSQL tables), SHOW TABLES FROM kafka; (topics),
USE CATALOG pg; (Flink's JDBC catalog). Statements end with ';'. Example queries: sql/queries/.
SET 'execution.runtime-mode' = 'streaming'; (or 'batch') starts a session in that mode.
QUIT; leaves."""


class Session:
    """A TableEnvironment with everything registered; `batch`: bounded reads of the topics."""

    def __init__(self, config: Settings, batch: bool, group: str | None = None):
        self.config, self.batch = config, batch
        self.group = group or f"sql-{uuid.uuid4().hex[:8]}"
        conf = Configuration()
        conf.set_string("parallelism.default", str(config.flink.parallelism))
        if not batch:
            # Kafka sinks commit their transactions on checkpoints.
            conf.set_string(
                "execution.checkpointing.interval", f"{config.flink.checkpoint_interval_ms} ms"
            )
        mode = EnvironmentSettings.new_instance()
        mode = mode.in_batch_mode() if batch else mode.in_streaming_mode()
        self.t_env = TableEnvironment.create(mode.with_configuration(conf).build())
        with psycopg.connect(config.postgres.conninfo(), connect_timeout=10) as conn:
            views = catalog.view_columns(conn)
        catalog.register(self.t_env, config, views, group=self.group, bounded=batch)

    def execute(self, statement: str) -> TableResult:
        return self.t_env.execute_sql(statement)

    def rows(self, statement: str) -> tuple[list[str], list[tuple]]:
        """A bounded query's column names and rows."""
        result = self.execute(statement)
        with result.collect() as results:
            rows = [tuple(row) for row in results]
        return result.get_table_schema().get_field_names(), rows


def statements(text: str) -> list[str]:
    """The statements of a script, without comments or the trailing ';'."""
    out = []
    for raw in sqlparse.split(text):
        stripped = sqlparse.format(raw, strip_comments=True).strip().rstrip(";").strip()
        if stripped:
            out.append(stripped)
    return out


def keyword(statement: str) -> str:
    return statement.split(None, 1)[0].upper()


def runtime_mode(statement: str) -> str | None:
    """'batch' or 'streaming' for a SET of the runtime mode, else None."""
    if keyword(statement) != "SET" or RUNTIME_MODE not in statement:
        return None
    value = statement.split("=", 1)[1].strip().strip("'\"").lower()
    if value not in ("batch", "streaming"):
        raise ValueError(f"{RUNTIME_MODE} is 'batch' or 'streaming', not {value!r}")
    return value


# ------------------------------------------------------------------ printing results


def cell(value) -> str:
    return "NULL" if value is None else str(value)


def print_result(result: TableResult, streaming: bool, out=sys.stdout) -> int:
    """Print a query's rows as a table; in streaming mode each row as it comes, with its change
    kind. Returns the number of rows."""
    names = result.get_table_schema().get_field_names()
    rows = 0
    with result.collect() as results:
        if streaming:
            header = ["op", *names]
            print(" | ".join(header), file=out, flush=True)
            for row in results:
                print(" | ".join([row.get_row_kind().short_string(), *map(cell, row)]), file=out)
                out.flush()
                rows += 1
            return rows
        table = [[cell(v) for v in row] for row in results]
    widths = [max([len(n), *(len(r[i]) for r in table)]) for i, n in enumerate(names)]
    rule = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    print(rule, file=out)
    print(
        "| " + " | ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)) + " |", file=out
    )
    print(rule, file=out)
    for r in table:
        cells = (justified(v, w) for v, w in zip(r, widths, strict=True))
        print("| " + " | ".join(cells) + " |", file=out)
    print(rule, file=out)
    print(f"{len(table)} row{'s' if len(table) != 1 else ''}", file=out)
    return len(table)


def justified(text: str, width: int) -> str:
    """Numbers to the right, anything else to the left."""
    try:
        float(text)
    except ValueError:
        return text.ljust(width)
    return text.rjust(width)


QUERIES = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "VALUES")


# ------------------------------------------------------------------ script and shell


def run_script(
    config: Settings, text: str, batch: bool = True, detach: bool = False, out=sys.stdout
):
    """Run a script's statements in order: queries print their results, INSERTs run together
    as one job at the end, waited for unless `detach` (on a cluster, a streaming job then runs
    until it is cancelled). Returns that job's TableResult, if any."""
    session = Session(config, batch)
    inserts = []
    for statement in statements(text):
        mode = runtime_mode(statement)
        if mode is not None:
            if inserts:
                raise ValueError("set the runtime mode before any INSERT")
            session = Session(config, mode == "batch", session.group)
            continue
        if keyword(statement) == "INSERT":
            inserts.append(statement)
        elif keyword(statement) in QUERIES:
            print_result(session.execute(statement), streaming=not session.batch, out=out)
        else:
            session.execute(statement)
    if not inserts:
        return None
    job = session.t_env.create_statement_set()
    for statement in inserts:
        job.add_insert_sql(statement)
    result = job.execute()
    client = result.get_job_client()
    if client is not None:
        print(f"submitted job {client.get_job_id()}", file=out, flush=True)
    if not detach:
        result.wait()
    return result


def shell(config: Settings, batch: bool = True) -> int:
    import readline  # noqa: F401, PLC0415  (line editing and history for input())

    session = Session(config, batch)
    print(f"Flink SQL ({'batch' if batch else 'streaming'} mode). HELP; for help, QUIT; to leave.")
    buffer = ""
    while True:
        try:
            line = input("flink-sql> " if not buffer else "        -> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            buffer = ""
            continue
        buffer += line + "\n"
        if not buffer.strip().endswith(";"):
            continue
        for statement in statements(buffer):
            word = keyword(statement)
            if word in ("QUIT", "EXIT"):
                return 0
            if word == "HELP":
                print(HELP)
                continue
            try:
                mode = runtime_mode(statement)
                if mode is not None:
                    session = Session(config, mode == "batch")
                    print(f"[INFO] {mode} mode")
                elif word in QUERIES:
                    print_result(session.execute(statement), streaming=not session.batch)
                else:
                    result = session.execute(statement)
                    client = result.get_job_client()
                    print(f"[INFO] submitted job {client.get_job_id()}" if client else "[INFO] OK")
            except KeyboardInterrupt:
                print("\n[INFO] query cancelled")
            except Exception as exc:  # noqa: BLE001  (a bad statement must not end the shell)
                print(f"[ERROR] {first_line(exc)}")
        buffer = ""


JAVA_PREFIX = re.compile(r"^(Caused by: |: )?([\w.$]+(Exception|Error): )*")


def first_line(exc: Exception) -> str:
    """The useful part of a Flink error: the innermost message Java gave, without the names of
    the exception classes."""
    text = str(exc)
    causes = [line for line in text.splitlines() if line.startswith(("Caused by:", ": "))]
    line = causes[-1] if causes else text.splitlines()[0] if text else repr(exc)
    return JAVA_PREFIX.sub("", line.strip()) or line.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.sql", description=__doc__)
    parser.add_argument("--file", type=Path, help="run this script instead of the shell")
    parser.add_argument(
        "--streaming", action="store_true", help="start in streaming mode (default: batch)"
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="return once the script's INSERT job is submitted (with `make submit`)",
    )
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    if args.file is not None and not args.file.is_file():
        print(f"error: no such file {args.file}", file=sys.stderr)
        return 2
    try:
        if args.file is None:
            return shell(config, batch=not args.streaming)
        run_script(config, args.file.read_text(), batch=not args.streaming, detach=args.detach)
    except psycopg.OperationalError as exc:
        print(f"error: PostgreSQL does not answer: {redact_secrets(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001  (report Flink's reason, not a Java stack)
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
