"""Profile job: Kafka `events` -> per-user behavioural profiles in keyed state -> Kafka
`profiles` (exactly once) and PostgreSQL `user_profiles` / `user_sessions`.

    source (raw bytes + topic/partition/offset)
      (event time and watermarks come from the source, per Kafka partition)
      -> parse_events              (as the ingest job: archive rows, dead letters)
      -> key_by(user_id)
      -> build_profiles            udfs.profile.UserProfile per user, de-duplicated by event_id
           |-> profile updates     -> Kafka `profiles` (key user) + PostgreSQL `user_profiles`
           |-> closed sessions     -> PostgreSQL `user_sessions`
           '-> events too late     -> Kafka `events.dlq` (reason `late`)
      valid events               -> PostgreSQL `events`; malformed -> `events.dlq`

Run locally with `python -m jobs.profile` or on a cluster with `make submit JOB=profile`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Protocol

from pyflink.common import Row, Types
from pyflink.common.types import RowKind
from pyflink.datastream import DataStream, KeyedStream, OutputTag, StreamExecutionEnvironment
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.table import DataTypes, Schema, StreamTableEnvironment
from pyflink.table.changelog_mode import ChangelogMode

from conf.settings import Profile as ProfileSettings
from conf.settings import Settings
from jobs import ingest, sinks
from udfs import profile_state
from udfs.events import (
    DeadLetter,
    Event,
    EventType,
    Reason,
    SourceRef,
    event_from_record,
    event_to_dict,
)
from udfs.profile import PROFILE_COLUMNS, ProfileSnapshot, UserProfile
from udfs.schedule import Schedule
from udfs.sessions import SessionSummary

LONG_COLUMNS = {"version", "as_of_ts", "events", "sessions"}
TEXT_COLUMNS = {"user_id", "top_category", "top_propensity"}


def column_types(name: str):
    """(Flink type, SQL type) of a profile column: text, bigint or double."""
    if name in TEXT_COLUMNS:
        sql = DataTypes.STRING().not_null() if name == "user_id" else DataTypes.STRING()
        return Types.STRING(), sql
    if name in LONG_COLUMNS:
        return Types.LONG(), DataTypes.BIGINT()
    return Types.DOUBLE(), DataTypes.DOUBLE()


PROFILE_ROW = Types.ROW_NAMED(
    [*PROFILE_COLUMNS, "details", "deleted"],
    [column_types(c)[0] for c in PROFILE_COLUMNS] + [Types.STRING(), Types.BOOLEAN()],
)
# What PostgreSQL gets: the columns and details, as an upsert changelog keyed by user_id.
POSTGRES_PROFILE_ROW = Types.ROW_NAMED(
    [*PROFILE_COLUMNS, "details"], [column_types(c)[0] for c in PROFILE_COLUMNS] + [Types.STRING()]
)


def postgres_profile_schema() -> Schema:
    schema = Schema.new_builder()
    for name in PROFILE_COLUMNS:
        schema = schema.column(name, column_types(name)[1])
    return schema.column("details", DataTypes.STRING()).primary_key("user_id").build()


SESSION_FIELDS = [
    ("user_id", Types.STRING()),
    ("session_id", Types.STRING()),
    ("start_ts", Types.LONG()),
    ("end_ts", Types.LONG()),
    ("events", Types.INT()),
    ("page_views", Types.INT()),
    ("product_views", Types.INT()),
    ("searches", Types.INT()),
    ("cart_adds", Types.INT()),
    ("checkouts", Types.INT()),
    ("purchases", Types.INT()),
    ("revenue", Types.DOUBLE()),
    ("mean_dwell_ms", Types.DOUBLE()),
    ("max_scroll", Types.DOUBLE()),
    ("abandoned", Types.BOOLEAN()),
]
SESSION_ROW = Types.ROW_NAMED([n for n, _ in SESSION_FIELDS], [t for _, t in SESSION_FIELDS])
SESSIONS = OutputTag("closed-sessions", SESSION_ROW)
LATE_EVENTS = OutputTag("late-events", ingest.KAFKA_RECORD_ROW)
# The timer and emission bookkeeping of one user: the one pending timer, when a profile was
# last emitted, and when a held-back update is due (emit_interval_ms > 0).
TIMER_ROW = Types.ROW_NAMED(
    ["wake_at", "last_emit", "emit_due"], [Types.LONG(), Types.LONG(), Types.LONG()]
)


# Row "classes": calling one builds a row with these field names.
PROFILE_RECORD = Row(*PROFILE_ROW.get_field_names())
SESSION_RECORD = Row(*SESSION_ROW.get_field_names())


def profile_row(snapshot: ProfileSnapshot) -> Row:
    c = snapshot.columns
    details = json.dumps(snapshot.details, separators=(",", ":"))
    return PROFILE_RECORD(*(c[name] for name in PROFILE_COLUMNS), details, False)


def deletion_row(user_id: str) -> Row:
    return PROFILE_RECORD(user_id, *([None] * (len(PROFILE_COLUMNS) - 1)), None, True)


def session_row(s: SessionSummary) -> Row:
    return SESSION_RECORD(*(getattr(s, name) for name, _ in SESSION_FIELDS))


def revokes_profiling(event) -> bool:
    return event.type is EventType.CONSENT_UPDATE and event.data.purposes.get("analytics") is False


class BuildProfiles(KeyedProcessFunction):
    """Thin adapter over UserProfile: loads and stores the typed state, de-duplicates by
    event_id, keeps a single timer per user (the earliest of its session closes, expiry and
    held-back emission) and emits. Consent revocation of `analytics` purges the user."""

    def __init__(self, settings: ProfileSettings):
        self.s = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.profile = runtime_context.get_state(
            ValueStateDescriptor("profile", profile_state.PROFILE_STATE)
        )
        self.seen = runtime_context.get_map_state(
            MapStateDescriptor("seen-event-ids", Types.STRING(), Types.LONG())
        )
        self.timer = runtime_context.get_state(ValueStateDescriptor("timer", TIMER_ROW))
        metrics = runtime_context.get_metrics_group()
        self.duplicates = metrics.counter("duplicate_events")
        self.late = metrics.counter("late_events_dead_lettered")
        self.purges = metrics.counter("profiles_purged")
        self.expiries = metrics.counter("profiles_expired")

    # ------------------------------------------------------------ events

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context):
        s = self.s
        watermark = ctx.timer_service().current_watermark()
        if row.ts_ms < watermark - s.allowed_lateness_ms:
            self.late.inc()
            yield LATE_EVENTS, late_dead_letter(row, watermark)
            return
        if self.seen.contains(row.event_id):
            self.duplicates.inc()
            return
        event = archived_event(row)
        stored = self.profile.value()
        profile = profile_state.from_row(stored, s) if stored else None
        if profile is not None and profile.expires_at(s) <= event.ts:
            # Expired, though the watermark has not yet fired its timer: do what it would do.
            yield from self.catch_up(profile, self.schedule(), event.ts, ctx)
            profile = None
        self.seen.put(row.event_id, row.ts_ms)
        if event.type is EventType.CONSENT_UPDATE:
            if revokes_profiling(event):
                self.purge(ctx)
                yield deletion_row(row.user_id)
            return
        profile = profile or UserProfile.new(row.user_id, s)
        profile.apply(event, watermark, s)
        yield from self.store_and_emit(profile, self.schedule(), event.ts, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        stored = self.profile.value()
        if stored is None:
            return
        schedule = self.schedule()
        schedule.wake_at = None  # this timer has fired
        yield from self.catch_up(profile_state.from_row(stored, self.s), schedule, timestamp, ctx)

    def catch_up(self, profile: UserProfile, schedule: Schedule, now: int, ctx):
        """Everything due by event time `now`: session closes, a held-back update, expiry."""
        s = self.s
        closed = profile.close_sessions(now, s)
        for summary in closed:
            yield SESSIONS, session_row(summary)
        self.forget_seen(now - s.allowed_lateness_ms)
        held_back = schedule.emit_due is not None and schedule.emit_due <= now
        yield from self.store_and_emit(profile, schedule, now, ctx, bool(closed) or held_back)
        if profile.expires_at(s) <= now:
            self.expiries.inc()
            self.clear(ctx)

    # ------------------------------------------------------------ state and timers

    def schedule(self) -> Schedule:
        row = self.timer.value()
        return Schedule(*row) if row is not None else Schedule()

    def store_and_emit(
        self, profile: UserProfile, schedule: Schedule, now: int, ctx, changed: bool = True
    ):
        """Stores the profile, emits it if it changed (unless held back by emit_interval_ms),
        and moves the user's single timer to the earliest time it is needed."""
        self.profile.update(profile_state.to_row(profile))
        if changed and schedule.should_emit(now, self.s.emit_interval_ms):
            yield profile_row(profile.snapshot(self.s))
        stale, wake_at = schedule.reschedule(profile.timers(self.s))
        if stale is not None:
            ctx.timer_service().delete_event_time_timer(stale)
        if wake_at is not None:
            ctx.timer_service().register_event_time_timer(wake_at)
        self.timer.update(Row(schedule.wake_at, schedule.last_emit, schedule.emit_due))

    def forget_seen(self, before_ts: int) -> None:
        """Event ids older than the lateness horizon: any copy of them is refused as late."""
        old = [event_id for event_id, ts in self.seen.items() if ts < before_ts]
        for event_id in old:
            self.seen.remove(event_id)

    def purge(self, ctx) -> None:
        self.purges.inc()
        self.clear(ctx)

    def clear(self, ctx) -> None:
        """Drops every piece of state of the current user and its pending timer."""
        wake_at = self.schedule().wake_at
        if wake_at is not None:
            ctx.timer_service().delete_event_time_timer(wake_at)
        self.profile.clear()
        self.seen.clear()
        self.timer.clear()


def archived_event(row: Row) -> Event:
    """The event behind an archive row (ingest.ARCHIVE_ROW) that parse-events produced."""
    return event_from_record(
        row.event_id,
        row.user_id,
        row.session_id,
        row.type,
        row.ts_ms,
        row.schema_version,
        row.properties,
    )


def late_dead_letter(row: Row, watermark: int) -> Row:
    event = archived_event(row)
    raw = json.dumps(event_to_dict(event), separators=(",", ":")).encode()
    source = SourceRef(row.source_topic, row.source_partition, row.source_offset)
    letter = DeadLetter(
        Reason.LATE,
        f"event time {row.ts_ms} is more than the allowed lateness behind watermark {watermark}",
        raw,
        source,
    )
    return ingest.KAFKA_RECORD(letter.dead_letter_id.encode(), letter.to_json())


# ------------------------------------------------------------------ pipeline


def set_uid(transformation, name: str) -> None:
    """Names and uids an operator PyFlink inserts implicitly (a Java transformation)."""
    transformation.setName(name)
    transformation.setUid(name)


def by_user(events: DataStream) -> KeyedStream:
    keyed = events.key_by(lambda row: row.user_id, key_type=Types.STRING())
    # The keyed stream is a partitioning (no operator); its input is PyFlink's key extractor.
    set_uid(keyed._j_data_stream.getTransformation().getInputs().get(0), "key-by-user")
    return keyed


def build_profiles(events: DataStream, s: ProfileSettings) -> tuple[DataStream, ...]:
    profiles = (
        by_user(events)
        .process(BuildProfiles(s), PROFILE_ROW)
        .name("build-profiles")
        .uid("build-profiles")
    )
    sessions = profiles.get_side_output(SESSIONS).name("closed-sessions").uid("closed-sessions")
    late = profiles.get_side_output(LATE_EVENTS).name("late-events").uid("late-events")
    return profiles, sessions, late


@dataclass
class ProfileOutputs:
    archive: DataStream  # ingest.ARCHIVE_ROW
    dead_letters: DataStream  # ingest.KAFKA_RECORD_ROW: malformed and late records
    profiles: DataStream  # PROFILE_ROW
    sessions: DataStream  # SESSION_ROW


class ProfileSinks(Protocol):
    def write(self, outputs: ProfileOutputs) -> None: ...


def build_pipeline(
    env: StreamExecutionEnvironment, config: Settings, source: ingest.RawSource, sinks: ProfileSinks
) -> None:
    # The source stamps records with their event time and emits watermarks (per Kafka partition
    # in production); parsing passes both through.
    archive, malformed = ingest.parse_events(source(env), config.events)
    profiles, sessions, late = build_profiles(archive, config.profile)
    sinks.write(ProfileOutputs(archive, malformed.union(late), profiles, sessions))


# ------------------------------------------------------------------ production connectors


def kafka_record(row: Row) -> Row:
    """Key = user id; value = the profile as JSON, or null (a tombstone) for a purged user."""
    if row.deleted:
        return ingest.KAFKA_RECORD(row.user_id.encode(), None)
    fields = {name: row[i] for i, name in enumerate(PROFILE_COLUMNS)}
    # `details` is JSON already: splice it in rather than parse and dump it again.
    head = json.dumps(fields, separators=(",", ":"))[:-1]
    return ingest.KAFKA_RECORD(row.user_id.encode(), f'{head},"details":{row.details}}}'.encode())


def postgres_change(row: Row) -> Row:
    """An upsert or a delete by user_id. Declared as a full changelog rather than an upsert
    one: an upsert source makes the planner keep every row in state to normalize it."""
    out = Row(*row[: len(PROFILE_COLUMNS) + 1])
    out.set_row_kind(RowKind.DELETE if row.deleted else RowKind.UPDATE_AFTER)
    return out


class ProductionSinks:
    def __init__(self, t_env: StreamTableEnvironment, config: Settings):
        self.t_env, self.config = t_env, config

    def write(self, outputs: ProfileOutputs) -> None:
        t, config = self.t_env, self.config
        statements = t.create_statement_set()
        ingest.add_event_sinks(
            statements, t, config, outputs.archive, outputs.dead_letters, writer="profile"
        )
        topic = sinks.kafka_bytes_table(
            t, config, "profiles_out", config.kafka.topics.profiles, "profile-profiles"
        )
        records = (
            outputs.profiles.map(kafka_record, output_type=ingest.KAFKA_RECORD_ROW)
            .name("profile-records")
            .uid("profile-records")
        )
        statements.add_insert(topic, t.from_data_stream(records))
        profiles = sinks.postgres_table(
            t, config, "user_profiles_out", "user_profiles_sink", "user_profiles"
        )
        changes = (
            outputs.profiles.map(postgres_change, output_type=POSTGRES_PROFILE_ROW)
            .name("profile-changes")
            .uid("profile-changes")
        )
        changelog = t.from_changelog_stream(changes, postgres_profile_schema(), ChangelogMode.all())
        statements.add_insert(profiles, changelog)
        sessions = sinks.postgres_table(
            t, config, "user_sessions_out", "user_sessions_sink", "user_sessions"
        )
        statements.add_insert(sessions, t.from_data_stream(outputs.sessions))
        statements.attach_as_datastream()


def run(
    config: Settings, start: dict[int, int] | None = None, stop: dict[int, int] | None = None
) -> None:
    env = ingest.create_environment(config)
    t_env = ingest.create_table_environment(env)
    build_pipeline(
        env,
        config,
        ingest.KafkaRawSource(t_env, config, start, stop, group="profile"),
        ProductionSinks(t_env, config),
    )
    env.execute("profile")


def main(argv: list[str] | None = None) -> int:
    run(*ingest.offsets_command("python -m jobs.profile", __doc__, argv))
    return 0


if __name__ == "__main__":
    # Run through the importable module, not __main__: functions are then pickled by reference
    # to `jobs.profile`, which the workers import from the shipped code.
    from jobs import profile as job_module

    sys.exit(job_module.main())
