"""`make erasures`: carries out the erasures the profile job asks for (Kafka `erasures`): deletes
the user's rows, under their id or their pseudonym (udfs/pseudonyms.py), from every PostgreSQL
table with a `user_id` column (the event archive, sessions, profiles, scores, leads, cohort
moves, actions, outcomes, recommendations and any table added later) and writes a receipt to
`erasure_receipts`: when, why, how many rows of each table, and never the user's id or
pseudonym (docs/privacy.md).

The profile job has already removed the user from its state and deleted their rows of the
upserted outputs (tombstones on the compacted topics). The rest waits for this service because
an erasure record is committed with the job's checkpoint, after every row the job wrote before
it: deleting earlier could race a sink still flushing them.

Reads committed records only; commits its offsets after the deletes and the receipt are
committed, so a crash hands a record again; a receipt is keyed by the record's coordinates, so
carrying one out twice deletes nothing more and keeps the first receipt. Runs as a service, or
`--idle-exit-s N` stops after N seconds without a record (tests, `make run`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field

import psycopg
import psycopg.sql
from kafka import KafkaConsumer, TopicPartition

from conf import settings as settings_module
from conf.settings import Settings

log = logging.getLogger(__name__)

GROUP = "erasure"
RECEIPTS = "erasure_receipts"


def erasable_tables(conn: psycopg.Connection) -> list[str]:
    """Every table of the schema with a `user_id` column (views excluded: they read tables)."""
    rows = conn.execute(
        "SELECT c.table_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = current_schema() AND c.column_name = 'user_id'"
        " AND t.table_type = 'BASE TABLE' ORDER BY c.table_name"
    ).fetchall()
    return [name for (name,) in rows]


def erase_user(conn: psycopg.Connection, names: list[str], tables: list[str]) -> dict[str, int]:
    """Deletes the user's rows, under any of their `names` (their id, their pseudonym), from
    `tables` (in the caller's transaction): rows per table."""
    deleted = {}
    for table in tables:
        statement = psycopg.sql.SQL("DELETE FROM {} WHERE user_id = ANY(%s)").format(
            psycopg.sql.Identifier(table)
        )
        deleted[table] = conn.execute(statement, (names,)).rowcount
    return deleted


@dataclass
class Tally:
    erased: int = 0
    repeated: int = 0  # records carried out before (their receipt exists)
    invalid: list[str] = field(default_factory=list)  # records that are not an erasure


class Executor:
    def __init__(self, config: Settings):
        self.config = config
        self.tally = Tally()

    def handle(self, conn: psycopg.Connection, receipt_id: str, value: bytes | None) -> None:
        """One erasure record, in one transaction with its receipt."""
        try:
            request = json.loads(value)
            user_id, ts, reason = request["user_id"], int(request["ts"]), request["reason"]
            # The analytical tables name the user by `subject` (absent from contract v1).
            names = [user_id, request.get("subject") or user_id]
            if not all(isinstance(name, str) and name for name in names):
                raise ValueError("no user_id")
        except (TypeError, ValueError, KeyError) as exc:
            # Never the record itself in the log: it names a user.
            self.tally.invalid.append(receipt_id)
            log.error("erasure record %s is not an erasure (%s): skipped", receipt_id, exc)
            return
        with conn.transaction():
            done = conn.execute(
                f"SELECT 1 FROM {RECEIPTS} WHERE receipt_id = %s", (receipt_id,)
            ).fetchone()
            if done:
                self.tally.repeated += 1
                return
            deleted = erase_user(conn, sorted(set(names)), erasable_tables(conn))
            conn.execute(
                f"INSERT INTO {RECEIPTS} (receipt_id, reason, request_id, requested_ts, rows)"
                " VALUES (%s, %s, %s, %s, %s)",
                (receipt_id, reason, request.get("request_id"), ts, json.dumps(deleted)),
            )
        self.tally.erased += 1

    def run(self, idle_exit_s: float = 0, report=print) -> Tally:
        """Carries out erasure records as they are committed; with `idle_exit_s`, until none
        has come for that long (0: forever)."""
        kafka, topic = self.config.kafka, self.config.kafka.topics.erasures
        consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=f"{kafka.consumer_group}-{GROUP}",
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        # Partitions assigned, not subscribed: one executor per deployment, no group join.
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(partitions)
        last_record = time.monotonic()
        try:
            with psycopg.connect(self.config.postgres.conninfo(), autocommit=True) as conn:
                while not idle_exit_s or time.monotonic() - last_record < idle_exit_s:
                    batches = consumer.poll(timeout_ms=1000)
                    for tp, records in batches.items():
                        for record in records:
                            receipt = f"{tp.topic}-{tp.partition}-{record.offset}"
                            self.handle(conn, receipt, record.value)
                    if batches:
                        last_record = time.monotonic()
                        consumer.commit()  # after the receipts: a crash hands records again
        finally:
            consumer.close()
        t = self.tally
        report(
            f"[erasure] {t.erased} users erased, {t.repeated} carried out before,"
            f" {len(t.invalid)} records that are no erasure"
        )
        return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.erasure",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--idle-exit-s", type=float, default=0, help="stop after this long without a record"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tally = Executor(settings_module.load_or_exit()).run(args.idle_exit_s)
    return 1 if tally.invalid else 0


if __name__ == "__main__":
    sys.exit(main())
