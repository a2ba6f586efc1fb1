"""`make replay FILE=... MAPPING=conf/mappings/<name>.yaml`: publish an external event log.

A mapping (validated YAML) says which columns of a CSV or JSONL log hold the user, the event
name, the timestamp and, optionally, the session and value fields, and which contract type each
event name becomes. Rows are published to the events topic in event-time order. Rows whose event
name has no mapping, or whose mapped event breaks the contract, go to the dead-letter topic with
the reason, the original line and its file/line number. Event ids are derived from the file's
line, so replaying the same file twice yields the same ids (and the same archive rows).

In field templates a string `$column` (or `$column:int|float|bool`) takes the row's value;
anything else is a literal. The optional `context` template maps columns to the event's context
(docs/event-contract.md); a column that is missing or empty in a row leaves its field out. A
refused row's dead letter keeps the row with its context columns minimized (docs/privacy.md).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conf import settings as settings_module
from conf.settings import Settings
from jobs.progress import Progress
from jobs.publish import Publisher, PublishReport
from udfs import privacy
from udfs.events import (
    DeadLetter,
    Event,
    EventParser,
    EventType,
    Reason,
    SourceRef,
    event_to_dict,
)
from udfs.timeunits import MINUTE_MS

REPLAY_NAMESPACE = uuid.UUID("6f1c1f7e-8d55-4f6c-9a57-1d2b4a0c9e31")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimestampMapping(_Strict):
    column: str
    unit: Literal["ms", "s", "iso8601"] = "ms"


class SessionMapping(_Strict):
    column: str | None = None  # when absent, sessions are cut at an inactivity gap
    gap_minutes: float = Field(30.0, gt=0)


class EventMapping(_Strict):
    type: EventType
    fields: dict[str, Any] = {}


class LogMapping(_Strict):
    name: str
    format: Literal["csv", "jsonl"] = "csv"
    user: str
    event_name: str
    timestamp: TimestampMapping
    session: SessionMapping = SessionMapping()
    events: dict[str, EventMapping]
    context: dict[str, Any] = {}  # context field -> `$column` (geo: a mapping of its own)

    @staticmethod
    def load(path: Path) -> LogMapping:
        try:
            return LogMapping.model_validate(yaml.safe_load(path.read_text()))
        except (ValidationError, yaml.YAMLError) as exc:
            raise settings_module.ConfigError(f"invalid mapping {path}: {exc}") from None


@dataclass(frozen=True)
class LogRow:
    line: int  # 1-based line number in the file (data lines for CSV count from 2)
    raw: bytes
    values: dict[str, Any]


def read_rows(path: Path, fmt: str) -> Iterator[LogRow]:
    """The log's rows in file order; a `.gz` file is read through gzip."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        if fmt == "csv":
            reader = csv.DictReader(handle)
            for row in reader:
                raw = ",".join(row.get(c) or "" for c in reader.fieldnames or []).encode(
                    "utf-8", "surrogateescape"
                )
                yield LogRow(reader.line_num, raw, row)
        else:
            for number, line in enumerate(handle, start=1):
                raw = line.rstrip("\n").encode("utf-8", "surrogateescape")
                try:
                    values = json.loads(line)
                except json.JSONDecodeError:
                    values = None
                yield LogRow(number, raw, values if isinstance(values, dict) else {})


def _cast(value: Any, kind: str) -> Any:
    if kind == "int":
        return int(float(value))
    if kind == "float":
        return float(value)
    if kind == "bool":
        return str(value).strip().lower() in ("1", "true", "yes", "y")
    return value


def fill_template(template: Any, values: dict[str, Any]) -> Any:
    if isinstance(template, str) and template.startswith("$"):
        column, _, kind = template[1:].partition(":")
        if column not in values or values[column] in (None, ""):
            raise KeyError(column)
        return _cast(values[column], kind)
    if isinstance(template, dict):
        return {k: fill_template(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_template(v, values) for v in template]
    return template


def fill_present(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The template filled from the row, leaving out the fields whose column is missing or
    empty (and a nested mapping left empty)."""
    filled = {}
    for key, item in template.items():
        try:
            value = (
                fill_present(item, values)
                if isinstance(item, dict)
                else fill_template(item, values)
            )
        except KeyError:
            continue
        if value != {}:
            filled[key] = value
    return filled


# How a refused row keeps a context column: the value as the engine would minimize it.
MINIMIZED_COLUMNS = {
    "ip": privacy.truncate_ip,
    "user_agent": privacy.device_class,
    "referrer": privacy.origin,
}


def _timestamp_ms(value: Any, unit: str) -> int:
    if unit == "iso8601":
        return int(datetime.fromisoformat(str(value)).timestamp() * 1000)
    number = float(value)
    return int(number * 1000) if unit == "s" else int(number)


class LogMapper:
    """Maps log rows to contract events (validated by the same parser the jobs use)."""

    def __init__(self, mapping: LogMapping, parser: EventParser, source_name: str):
        self.mapping, self.parser, self.source_name = mapping, parser, source_name
        self._last_seen: dict[str, tuple[int, str]] = {}  # user -> (last ts, session id)

    def _dead(self, row: LogRow, reason: Reason, detail: str) -> DeadLetter:
        return DeadLetter(reason, detail, self._kept(row), SourceRef(self.source_name, 0, row.line))

    def _kept(self, row: LogRow) -> bytes:
        """The row as its dead letter keeps it: without the full values of personal context
        columns (an IP address, a user agent, a referrer with its query)."""
        columns = {
            template[1:].partition(":")[0]: MINIMIZED_COLUMNS[key]
            for key, template in self.mapping.context.items()
            if key in MINIMIZED_COLUMNS and isinstance(template, str) and template.startswith("$")
        }
        present = [column for column in columns if row.values.get(column)]
        if not present:
            return row.raw
        values = dict(row.values)
        for column in present:
            try:
                values[column] = columns[column](str(values[column])) or ""
            except ValueError:
                values[column] = ""
        if self.mapping.format == "jsonl":
            return json.dumps(values).encode()
        return ",".join(str(v or "") for v in values.values()).encode("utf-8", "surrogateescape")

    def _session(self, user: str, ts: int, row: LogRow) -> str:
        s = self.mapping.session
        if s.column:
            return str(row.values.get(s.column) or "")
        last = self._last_seen.get(user)
        if last is None or ts - last[0] > s.gap_minutes * MINUTE_MS:
            session = str(uuid.uuid5(REPLAY_NAMESPACE, f"{self.source_name}:{user}:{ts}"))
        else:
            session = last[1]
        self._last_seen[user] = (ts, session)
        return session

    def map_rows(self, rows: list[LogRow]) -> Iterator[Event | DeadLetter]:
        """Rows in event-time order; the caller passes rows sorted by `sort_key`."""
        m = self.mapping
        for row in rows:
            name = row.values.get(m.event_name)
            event_mapping = m.events.get(str(name)) if name is not None else None
            if event_mapping is None:
                yield self._dead(
                    row,
                    Reason.UNMAPPED_EVENT,
                    f"event name {str(name)[:100]!r} has no mapping in {m.name}",
                )
                continue
            try:
                ts = _timestamp_ms(row.values[m.timestamp.column], m.timestamp.unit)
                user = str(row.values[m.user])
                fields = fill_template(event_mapping.fields, row.values)
                context = fill_present(m.context, row.values)
            except (KeyError, ValueError, TypeError) as exc:
                yield self._dead(row, Reason.SCHEMA_VIOLATION, f"cannot map row: {exc!r}")
                continue
            doc = {
                "event_id": str(uuid.uuid5(REPLAY_NAMESPACE, f"{self.source_name}:{row.line}")),
                "user_id": user,
                "session_id": self._session(user, ts, row),
                "type": event_mapping.type.value,
                "ts": ts,
                "schema_version": 1,
                **fields,
                **({"context": context} if context else {}),
            }
            result = self.parser.parse(
                json.dumps(doc).encode(), SourceRef(self.source_name, 0, row.line)
            )
            if isinstance(result, DeadLetter):
                yield DeadLetter(result.reason, result.detail, self._kept(row), result.source)
            else:
                yield result

    def sort_key(self, row: LogRow) -> tuple[int, int]:
        try:
            ts = _timestamp_ms(
                row.values.get(self.mapping.timestamp.column), self.mapping.timestamp.unit
            )
        except (ValueError, TypeError):
            ts = 0  # unparseable: goes first and is dead-lettered by map_rows
        return ts, row.line


def check_not_too_old(first_ts: int | None, older: int, settings: Settings) -> None:
    """Refuses a log with events before `events.min_ts_ms` (all of them would be dead-lettered
    as invalid), saying which setting to change."""
    floor = settings.events.min_ts_ms
    if first_ts is None or first_ts >= floor:
        return
    raise settings_module.ConfigError(
        f"{older:,} rows of the log are older than events.min_ts_ms ({floor}, "
        f"{iso_time(floor)}): it starts at {first_ts} ({iso_time(first_ts)}). Set "
        f"events.min_ts_ms (epoch milliseconds) at or below {first_ts} in "
        f"conf/{settings.environment}.yaml and run again; nothing was published."
    )


def iso_time(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")


@dataclass
class Replayed:
    """What a replay published: the events (their batch, ids and users) and the dead letters."""

    published: PublishReport
    rows: int
    dead_letters: Counter  # reason -> rows
    event_ids: list[str]
    users: set[str]

    @property
    def dead(self) -> int:
        return self.dead_letters.total()


def replay(settings: Settings, file: Path, mapping_path: Path) -> Replayed:
    mapping = LogMapping.load(mapping_path)
    c = settings.events
    mapper = LogMapper(
        mapping, EventParser(c.max_bytes, c.min_ts_ms, c.max_future_skew_ms), file.name
    )
    rows = sorted(read_rows(file, mapping.format), key=mapper.sort_key)
    # Unreadable times sort first as 0: they are dead letters, not the log's start.
    times = [t for t, _ in map(mapper.sort_key, rows) if t > 0]
    older = sum(1 for t in times if t < c.min_ts_ms)
    check_not_too_old(times[0] if times else None, older, settings)
    topics = settings.kafka.topics
    events = Publisher(
        settings.kafka.bootstrap_servers,
        topics.events.name,
        topics.events.partitions,
        label="replay",
        show_progress=False,
    )
    dead = Publisher(
        settings.kafka.bootstrap_servers,
        topics.events_dlq.name,
        topics.events_dlq.partitions,
        label="replay-dlq",
        show_progress=False,
    )
    letters, event_ids, users = Counter(), [], set()
    with Progress("[replay]", len(rows), "rows") as progress:
        for result in mapper.map_rows(rows):
            if isinstance(result, DeadLetter):
                dead.send(result.dead_letter_id, result.to_json())
                letters[result.reason.value] += 1
            else:
                events.send(result.user_id, json.dumps(event_to_dict(result)).encode())
                event_ids.append(result.event_id)
                users.add(result.user_id)
            progress.update()
    dead.close()
    return Replayed(events.close(), len(rows), letters, event_ids, users)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--mapping", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        settings = settings_module.load()
        if not args.file.exists():
            raise settings_module.ConfigError(f"no such file: {args.file}")
        replayed = replay(settings, args.file, args.mapping)
    except settings_module.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    published = replayed.published
    print(
        f"[replay] published {published.sent:,} events to {published.topic} in event-time order; "
        f"{replayed.dead:,} rows dead-lettered to {settings.kafka.topics.events_dlq.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
