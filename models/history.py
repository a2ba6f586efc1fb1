"""Where `make train` learns from: the PostgreSQL event archive (the job's own history), an
external log through a replay mapping, or the synthetic generator.

Every source gives the same thing: its time span and its users one at a time, each with their
events in event-time order, parsed by the parser the jobs use. Reading user by user keeps memory
bounded by one user's events whatever the size of the history: the archive is read with a
server-side cursor ordered by (user, time); a log file is first spilled to a temporary SQLite
file indexed the same way.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import psycopg

from conf.settings import ConfigError, Settings
from jobs.replay import LogMapper, LogMapping, LogRow, check_not_too_old, read_rows
from models.generator import EventGenerator
from udfs.events import Event, EventParser, SourceRef
from udfs.timeunits import DAY_MS

ARCHIVE_COLUMNS = "event_id, user_id, session_id, type, ts_ms, schema_version, properties"
FETCH_ROWS = 5_000


@dataclass
class Span:
    first_ts: int
    last_ts: int
    events: int
    users: int


@dataclass
class Skipped:
    """Records of the source that are not training events, by reason (nothing is dropped
    silently: the report lists them)."""

    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def parser_for(config: Settings, now_ms: int | None = None) -> EventParser:
    c = config.events
    if now_ms is None:
        return EventParser(c.max_bytes, c.min_ts_ms, c.max_future_skew_ms)
    return EventParser(c.max_bytes, c.min_ts_ms, c.max_future_skew_ms, now_ms=lambda: now_ms)


def event_from_archive(row: tuple, parser: EventParser) -> Event:
    """An archived row back to the event the job parsed (the archive keeps only valid events)."""
    event_id, user_id, session_id, kind, ts, schema_version, properties = row
    document = {
        "event_id": event_id,
        "user_id": user_id,
        "session_id": session_id,
        "type": kind,
        "ts": ts,
        "schema_version": schema_version,
        **properties,
    }
    return parser.parse(json.dumps(document).encode(), SourceRef("archive", 0, 0))


class ArchiveHistory:
    """The PostgreSQL `events` archive, all of it or [from_ts, until_ts) in event time."""

    def __init__(self, config: Settings, from_ts: int | None = None, until_ts: int | None = None):
        self.config, self.from_ts, self.until_ts = config, from_ts, until_ts
        self.skipped = Skipped()
        self.description = "the event archive (PostgreSQL `events`)" + range_text(from_ts, until_ts)

    def _where(self) -> tuple[str, list[int]]:
        clauses, values = [], []
        if self.from_ts is not None:
            clauses.append("ts_ms >= %s")
            values.append(self.from_ts)
        if self.until_ts is not None:
            clauses.append("ts_ms < %s")
            values.append(self.until_ts)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values

    def span(self) -> Span | None:
        where, values = self._where()
        with psycopg.connect(self.config.postgres.conninfo()) as conn:
            row = conn.execute(
                "SELECT min(ts_ms), max(ts_ms), count(*), count(DISTINCT user_id)"
                f" FROM events{where}",
                values,
            ).fetchone()
        return Span(*row) if row[2] else None

    def users(self) -> Iterator[tuple[str, list[Event]]]:
        where, values = self._where()
        parser = parser_for(self.config)
        # A named cursor stays on the server: rows come FETCH_ROWS at a time.
        with (
            psycopg.connect(self.config.postgres.conninfo()) as conn,
            conn.cursor(name="training-history") as cursor,
        ):
            cursor.itersize = FETCH_ROWS
            cursor.execute(
                f"SELECT {ARCHIVE_COLUMNS} FROM events{where} ORDER BY user_id, ts_ms, event_id",
                values,
            )
            for user, rows in groupby(cursor, key=lambda row: row[1]):
                events = []
                for row in rows:
                    parsed = event_from_archive(row, parser)
                    if isinstance(parsed, Event):
                        events.append(parsed)
                    else:  # valid when archived, refused by today's contract settings
                        self.skipped.add(f"archived event now refused: {parsed.reason.value}")
                yield user, events


class LogHistory:
    """An external log (CSV or JSONL, `.gz` too) read through a replay mapping, with the same
    event ids and sessions `make replay` would give its rows."""

    def __init__(self, config: Settings, file: Path, mapping: Path):
        if not file.exists():
            raise ConfigError(f"no such file: {file}")
        self.config, self.file = config, file
        self.mapping = LogMapping.load(mapping)
        self.skipped = Skipped()
        self.description = f"{file} through the mapping {mapping}"
        self._spill: Path | None = None

    def _spilled(self) -> sqlite3.Connection:
        """The log's rows by user and time in a temporary SQLite file, written once."""
        if self._spill is None:
            folder = Path(tempfile.mkdtemp(prefix="train-log-"))
            self._spill = folder / "rows.sqlite"
            db = sqlite3.connect(self._spill)
            db.execute("CREATE TABLE rows (user TEXT, ts INTEGER, line INTEGER, raw BLOB, v TEXT)")
            mapper = LogMapper(self.mapping, parser_for(self.config), self.file.name)
            m = self.mapping
            batch = []
            for row in read_rows(self.file, m.format):
                ts, _ = mapper.sort_key(row)
                user = str(row.values.get(m.user) or "")
                batch.append((user, ts, row.line, row.raw, json.dumps(row.values)))
                if len(batch) == FETCH_ROWS:
                    db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?)", batch)
                    batch.clear()
            db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?)", batch)
            db.execute("CREATE INDEX rows_user_ts ON rows (user, ts, line)")
            db.commit()
            return db
        return sqlite3.connect(self._spill)

    def span(self) -> Span | None:
        db = self._spilled()
        # Rows whose time cannot be read count 0 and are dead letters: not part of the span.
        first, last, rows, users = db.execute(
            "SELECT min(ts), max(ts), count(*), count(DISTINCT user) FROM rows WHERE ts > 0"
        ).fetchone()
        floor = self.config.events.min_ts_ms
        (older,) = db.execute(
            "SELECT count(*) FROM rows WHERE ts > 0 AND ts < ?", (floor,)
        ).fetchone()
        db.close()
        check_not_too_old(first, older, self.config)
        return Span(first, last, rows, users) if rows else None

    def users(self) -> Iterator[tuple[str, list[Event]]]:
        db = self._spilled()
        mapper = LogMapper(self.mapping, parser_for(self.config), self.file.name)
        cursor = db.execute("SELECT user, line, raw, v FROM rows ORDER BY user, ts, line")
        for user, rows in groupby(cursor, key=lambda row: row[0]):
            log_rows = [LogRow(line, raw, json.loads(v)) for _, line, raw, v in rows]
            events = []
            for result in mapper.map_rows(log_rows):
                if isinstance(result, Event):
                    events.append(result)
                else:
                    self.skipped.add(result.reason.value)
            yield user, events
        db.close()


class GeneratedHistory:
    """The synthetic generator's history (in memory: it is generated whole)."""

    def __init__(self, config: Settings, users: int, days: float, seed: int):
        self.config = config
        self.generated = EventGenerator(config.generator, users=users, days=days, seed=seed)
        self.skipped = Skipped()
        self.description = f"generated history: {users} users over {days:g} days (seed {seed})"
        self.start = config.generator.start_ts_ms
        self.end = self.start + int(days * DAY_MS)
        self.history = None

    def _events(self) -> dict[str, list[Event]]:
        if self.history is None:
            self.history = self.generated.generate()
            parser = parser_for(self.config, now_ms=self.end)
            self.by_user: dict[str, list[Event]] = {}
            for i, document in enumerate(self.history.events):
                parsed = parser.parse(json.dumps(document).encode(), SourceRef("generated", 0, i))
                if isinstance(parsed, Event):
                    self.by_user.setdefault(parsed.user_id, []).append(parsed)
                else:  # the generator makes some records invalid on purpose
                    self.skipped.add(parsed.reason.value)
        return self.by_user

    def span(self) -> Span:
        by_user = self._events()
        return Span(self.start, self.end, sum(map(len, by_user.values())), len(by_user))

    def users(self) -> Iterator[tuple[str, list[Event]]]:
        for user in sorted(self._events()):
            yield user, sorted(self.by_user[user], key=lambda e: (e.ts, e.event_id))

    def archetypes(self) -> dict[str, str]:
        """The generator's hidden truth: each user's archetype."""
        self._events()
        return {u.user_id: u.archetype for u in self.history.users}


def range_text(from_ts: int | None, until_ts: int | None) -> str:
    parts = []
    if from_ts is not None:
        parts.append(f"from {from_ts}")
    if until_ts is not None:
        parts.append(f"until {until_ts}")
    return (", " + " ".join(parts)) if parts else ""
