"""Profile job: Kafka `events` -> per-user behavioural profiles in keyed state -> Kafka
`profiles` (exactly once) and PostgreSQL `user_profiles` / `user_sessions`.

    source (raw bytes + topic/partition/offset + the JSON `user_id` as the user key)
      (event time and watermarks come from the source, per Kafka partition)
      + consent (the `consent` topic: consent platforms' updates, the same raw form)
      -> key by user key           (in the JVM: no Python step before build-profiles)
      -> build_profiles            udfs.user_pipeline.UserPipeline: parses each record where
                                   its user's state is (this job owns the event archive and
                                   the dead letters), then udfs.profile.UserProfile per user,
                                   de-duplicated by event_id, scored with the registered ONNX
                                   models; outputs as udfs.outputs declares
           ^-- control (broadcast) model versions, the action policy and cohort modifiers, from
                                   the `control` topic (jobs/control.py)
           |-> profile updates     -> Kafka `profiles` (key user) + PostgreSQL `user_profiles`
           |-> scores              -> Kafka `scores` + PostgreSQL `user_scores`
           |-> cohort moves        -> Kafka `cohort-moves` + PostgreSQL `cohort_moves`
           |-> lead scores         -> Kafka `lead-scores` + PostgreSQL `leads`
           |-> lead outcomes       -> Kafka `lead-outcomes` + PostgreSQL `lead_outcomes` (in an
           |                          experiment about lead scoring)
           |-> actions             -> Kafka `actions` + PostgreSQL `actions` (the decision step)
           |-> action outcomes     -> Kafka `action-outcomes` + PostgreSQL `action_outcomes`
           |-> item interactions   -> learn-items (keyed by item and bucket) -> summaries,
           |   and requests           broadcast to rank (keyed by user): recommendations ->
           |                          Kafka `recommendations` + PostgreSQL `recommendations`,
           |                          offers of recommendations -> the actions
           |                          (jobs/recommendations.py)
           |-> closed sessions     -> PostgreSQL `user_sessions`
           |-> erasures            -> Kafka `erasures`: users jobs/erasure.py deletes from
           |                          every table once the job has committed what came before
           |-> valid events        -> PostgreSQL `events`
           '-> dead letters        -> Kafka `events.dlq`: malformed records, records whose
                                      `user_id` is not their key, and events too late (`late`)

A user quiet for `profile.ttl_ms` keeps only the long-term layer (a `dormant` profile update);
after `profile.long_term_ttl_ms` the user is forgotten (deletes and tombstones, as on a purge).

build-profiles runs apart from the sinks (no chaining): its thread does the Python work and
nothing else. learn-items and rank are the job's other Python operators.

Run locally with `python -m jobs.profile` or on a cluster with `make submit JOB=profile`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
from dataclasses import dataclass
from hashlib import blake2b
from typing import Protocol

from pyflink.common import Duration, JobClient, Row, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import DataStream, KeyedStream, OutputTag, StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource
from pyflink.datastream.functions import KeyedBroadcastProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, Table
from pyflink.table.changelog_mode import ChangelogMode
from pyflink.table.expressions import col

from conf.settings import Recommendations, Settings
from jobs import control, runtime, sinks
from jobs.control import POLICY, ControlRecord, LiveModels, scoring_settings
from jobs.flink_outputs import FLINK_OUTPUTS, RECOMMENDATIONS, FlinkOutput
from jobs.recommendations import keyed_by_first_field, recommend
from udfs import outputs, profile_state
from udfs.events import SourceRef
from udfs.profile_state import UserState
from udfs.user_pipeline import END_OF_EVENT_TIME, PipelineSettings, UserPipeline

log = logging.getLogger(__name__)

# The job's name and consumer group suffix (its committed offsets are kept under it).
SOURCE_GROUP = "profile"


def state_descriptor(name: str):
    return ValueStateDescriptor(name, Types.PICKLED_BYTE_ARRAY())


def route_side_outputs_of_broadcast_timers() -> None:
    """PyFlink 2.0 in thread mode hands what a KeyedBroadcastProcessFunction's `on_timer`
    yields straight to the main output: unlike every other function type, its timer call skips
    the routing of (tag, row) pairs to side outputs, and such a pair then fails the main
    output's row conversion. This routes the timer call's results like the record calls'.
    Installed when this module is imported, which a worker does when it unpickles BuildProfiles,
    before any timer fires. Process mode's runner routes timer outputs itself."""
    try:
        from pyflink.fn_execution.datastream.embedded import operations
    except ImportError:  # not a thread-mode worker
        return
    operation = operations.TwoInputOperation
    if getattr(operation, "routes_timer_side_outputs", False):
        return
    fire = operation.on_timer

    def on_timer(self, timestamp):
        results = fire(self, timestamp)
        # The routing the operation's record calls use: the free variable `process_func` of
        # its first input's function, present when the function has side outputs.
        record_call = self._process_element_func1
        names = record_call.__code__.co_freevars
        if results is None or "process_func" not in names:
            return results
        return record_call.__closure__[names.index("process_func")].cell_contents(results)

    operation.on_timer = on_timer
    operation.routes_timer_side_outputs = True


route_side_outputs_of_broadcast_timers()


# The latest control record of each kind (its JSON), in every subtask: checkpointed with the
# control source's offset.
CONTROL_STATE = MapStateDescriptor("control", Types.STRING(), Types.STRING())


class Level:
    """A level (a version in use) exported as a counter moved to it. A Python gauge would be
    called by the reporter's thread, and in thread mode such a call made while the job's Python
    closes crashes the JVM; a counter's value is kept in the JVM."""

    def __init__(self, counter):
        self.counter, self.value = counter, 0

    def set(self, value: int) -> None:
        self.counter.inc(value - self.value)
        self.value = value


class BuildProfiles(KeyedBroadcastProcessFunction):
    """The Flink side of udfs.user_pipeline.UserPipeline: loads the user's state (one value,
    UserState) once per record or timer and stores it once, keeps the user's single timer where
    the pipeline's schedule wants it, and forwards the outputs as rows to their streams. Control
    records (jobs/control.py) change what it scores and decides with: `in_force` are those of
    the submission, the broadcast state holds those of a restored snapshot."""

    def __init__(self, settings: PipelineSettings, in_force: tuple[ControlRecord, ...] = ()):
        self.settings, self.in_force = settings, in_force

    def open(self, runtime_context: RuntimeContext) -> None:
        self.live = LiveModels(self.settings.scoring, self.in_force)
        self.restored_control = False  # the broadcast state is read on the first call
        metrics = runtime_context.get_metrics_group()
        self.pipeline = UserPipeline(self.settings, self.live, metrics.counter)
        # What this subtask scores with now (0: no models) and the policy in force.
        self.model_version = Level(metrics.counter("model_version"))
        self.policy_sequence = Level(metrics.counter("policy_sequence"))
        self.show_control()
        self.user = runtime_context.get_state(state_descriptor("user"))
        self.states = profile_state.StateCodec(self.settings.profile)
        # Where event ids were kept before they moved into the user's value: read once, then
        # cleared (a value of that layout reads with no ids).
        self.old_seen = runtime_context.get_map_state(
            MapStateDescriptor("seen-event-ids", Types.STRING(), Types.LONG())
        )

    def process_broadcast_element(self, value: str, ctx: KeyedBroadcastProcessFunction.Context):
        try:
            record = ControlRecord.decode(value)
        except ValueError as e:
            log.error("control record skipped: %s", e)
            return
        if self.live.apply(record):
            ctx.get_broadcast_state(CONTROL_STATE).put(record.kind, value)
            self.show_control()

    def show_control(self) -> None:
        self.model_version.set(self.live.models.version if self.live.models else 0)
        self.policy_sequence.set(self.live.sequences.get(POLICY, 0))

    def use_restored_control(self, ctx) -> None:
        """Records of a restored snapshot newer than the submission's (a restart after a
        failure); the broadcast state is only readable from a record's or timer's context."""
        self.restored_control = True
        for _, value in ctx.get_broadcast_state(CONTROL_STATE).items():
            self.live.apply(ControlRecord.decode(value))
        self.show_control()

    def process_element(self, record: Row, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        if not self.restored_control:
            self.use_restored_control(ctx)
        payload, topic, partition, offset = record
        timers = ctx.timer_service()
        watermark = timers.current_watermark()
        source = SourceRef(topic, partition, offset)
        event, out = self.pipeline.on_record(payload, source, ctx.get_current_key(), watermark)
        if event is not None:
            user, registered = self.load()
            out += self.pipeline.on_event(user, event, watermark, source)
            self.store(user, registered, timers)
        yield from self.rows(out)

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        if not self.restored_control:
            self.use_restored_control(ctx)
        timers = ctx.timer_service()
        user, _ = self.load()
        ended = timers.current_watermark() >= END_OF_EVENT_TIME
        out = self.pipeline.on_timer(user, timestamp, end_of_input=ended)
        self.store(user, None, timers)  # the fired timer is gone
        yield from self.rows(out)

    def load(self) -> tuple[UserState, int | None]:
        """The user's state and the timer registered for it."""
        stored = self.user.value()
        user = self.states.unpack(stored)
        if stored is not None and not self.states.holds_seen_ids(stored):
            user.seen = dict(self.old_seen.items())
            self.old_seen.clear()
        return user, user.schedule.wake_at

    def store(self, user: UserState, registered: int | None, timers) -> None:
        """Stores the state (or clears it when the user is gone) and moves the timer."""
        if user.empty:
            self.user.clear()  # purged or expired: nothing is kept
        else:
            self.user.update(self.states.pack(user))
        wanted = user.schedule.wake_at
        if wanted != registered:
            if registered is not None:
                timers.delete_event_time_timer(registered)
            if wanted is not None:
                timers.register_event_time_timer(wanted)

    @staticmethod
    def rows(out: list[outputs.Emitted]):
        for emitted in out:
            flink = FLINK_OUTPUTS[emitted.output]
            if flink.tag is None:
                yield flink.row(emitted)
            else:
                yield flink.tag, flink.row(emitted)


# ------------------------------------------------------------------ pipeline


def by_user(records: DataStream) -> KeyedStream:
    """KEYED_RAW_RECORD rows keyed by their user key, in the JVM (keyed_by_first_field): each
    user's records reach build-profiles through one channel, in the order their partition
    holds them (fire_due_timers relies on it)."""
    return keyed_by_first_field(records, runtime.RAW_RECORD)


def build_profiles(
    records: DataStream, control: DataStream, settings: PipelineSettings, in_force: tuple
) -> dict:
    """The profile stream and every side output of build-profiles, by output name, and the
    recommendations and the offers of them (actions) rank finished."""
    profiles = (
        by_user(records)
        .connect(control.broadcast(CONTROL_STATE))
        .process(BuildProfiles(settings, in_force), FLINK_OUTPUTS[outputs.PROFILES].row_type)
        .name("build-profiles")
        .uid("build-profiles")
        # The sinks (conversions, Kafka producers, JDBC batches) get threads of their own, off
        # the one thread that runs Python; their waits at flushes and checkpoints too.
        .disable_chaining()
    )
    streams = {
        output.name: profiles if flink.tag is None else side_output(profiles, flink.tag)
        for output, flink in FLINK_OUTPUTS.items()
    }
    recommendations, offers = recommend(
        streams.pop(outputs.TOUCHES.name),
        streams.pop(outputs.REQUESTS.name),
        settings.recommendations or Recommendations(enabled=False),
    )
    streams["offers"] = offers
    streams[outputs.RECOMMENDATIONS.name] = recommendations
    return streams


def side_output(stream: DataStream, tag: OutputTag) -> DataStream:
    """The side output as the JVM holds it, typed by its tag. PyFlink's get_side_output puts a
    Python identity map after it, which takes every record into the interpreter and back."""
    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


@dataclass
class ProfileOutputs:
    """Each output's stream, of its FlinkOutput's row type; a deletable output's stream is a
    changelog (row kinds) by user."""

    archive: DataStream
    dead_letters: DataStream  # malformed and late records: Kafka key and value
    profiles: DataStream
    sessions: DataStream
    scores: DataStream
    cohort_moves: DataStream
    leads: DataStream
    lead_outcomes: DataStream
    actions: DataStream  # decisions, but offers of recommendations
    outcomes: DataStream
    erasures: DataStream  # users to erase everywhere (jobs/erasure.py)
    recommendations: DataStream
    # Offers of recommendations, finished by rank: actions too, written by sinks of their own
    # (a union with build-profiles' actions would tie their checkpoint barriers to rank's).
    offers: DataStream


class ControlSource(Protocol):
    """Control records (jobs/control.py): those in force when the job starts, and a stream of
    the control topic's records as JSON text."""

    in_force: tuple[ControlRecord, ...]

    def __call__(self, env: StreamExecutionEnvironment) -> DataStream: ...


# The control input is idle unless a record has just come: it never holds event time back.
CONTROL_IDLENESS_MS = 500


class KafkaControl:
    """The control topic from its start (records the job has applied are not applied again),
    up to its latest offset when the run is bounded, so that a bounded run ends."""

    def __init__(self, config: Settings, bounded: bool, in_force: tuple[ControlRecord, ...] = ()):
        self.config, self.bounded, self.in_force = config, bounded, in_force

    def __call__(self, env: StreamExecutionEnvironment) -> DataStream:
        return occasional_records(env, self.config, "control", self.bounded)


def occasional_records(
    env: StreamExecutionEnvironment, config: Settings, name: str, bounded: bool
) -> DataStream:
    """The text of every committed record of topic `name` (of `kafka.topics`; an occasional
    stream: control, consent), from its start (a restored job: from its checkpointed offsets),
    up to its latest offset when the run is `bounded`, in one subtask (uid `<name>-source`).
    Idle unless a record has just come, so it never holds event time back."""
    kafka = config.kafka
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(kafka.bootstrap_servers)
        .set_topics(getattr(kafka.topics, name).name)
        .set_group_id(f"{kafka.consumer_group}-{SOURCE_GROUP}-{name}")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_property("isolation.level", "read_committed")
        .set_value_only_deserializer(SimpleStringSchema())
    )
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    idleness = Duration.of_millis(CONTROL_IDLENESS_MS)  # a Java object: not made at import
    watermarks = WatermarkStrategy.no_watermarks().with_idleness(idleness)
    source = env.from_source(builder.build(), watermarks, name)
    return source.uid(f"{name}-source").set_parallelism(1)


class FixedControl:
    """Control records known when the job is built: `in_force` from the start, `later` read as
    the control topic's records would be."""

    def __init__(self, in_force=(), later=()):
        self.in_force, self.later = tuple(in_force), tuple(later)

    def __call__(self, env: StreamExecutionEnvironment) -> DataStream:
        records = env.from_collection([r.encode() for r in self.later], Types.STRING())
        return records.name("control").uid("control-source")


def consent_record(topic: str, text: str) -> Row:
    """A record of the consent topic as a raw record keyed by its user (KEYED_RAW_RECORD). The
    topic's DataStream source gives no coordinates: a digest of the bytes stands for the
    offset, so a replayed record gets the same dead-letter id."""
    payload = text.encode("utf-8", "surrogatepass")
    try:
        doc = json.loads(text)
        key = doc.get("user_id") if isinstance(doc, dict) else None
    except (ValueError, RecursionError):
        key = None
    digest = int.from_bytes(blake2b(payload, digest_size=7).digest(), "big")
    return Row(key if isinstance(key, str) else "", Row(payload, topic, 0, digest))


class KafkaConsent:
    """The consent topic's updates as raw records (consent_record). Read from its start: an
    update read again changes nothing (udfs/consent.py)."""

    def __init__(self, config: Settings, bounded: bool):
        self.config, self.bounded = config, bounded

    def __call__(self, env: StreamExecutionEnvironment) -> DataStream:
        source = occasional_records(env, self.config, "consent", self.bounded)
        to_record = functools.partial(consent_record, self.config.kafka.topics.consent.name)
        records = source.map(to_record, runtime.KEYED_RAW_RECORD)
        return records.name("consent-records").uid("consent-records").set_parallelism(1)


class ProfileSinks(Protocol):
    def write(self, outputs: ProfileOutputs) -> None:
        """Must consume every output: build-profiles fails on a side output nothing reads."""


def build_pipeline(
    env: StreamExecutionEnvironment,
    config: Settings,
    source: runtime.RawSource,
    sinks: ProfileSinks,
    control: ControlSource,
    consent: runtime.RawSource | None = None,
    data_end_ts: int | None = None,
) -> None:
    # The source stamps records with their event time and emits watermarks (per Kafka partition
    # in production) and reads the user key; records are parsed where their user's state is.
    # `consent`: the consent topic's records, in the same form. `data_end_ts`: the latest event
    # time of a bounded input known up front (a backtest's).
    enabled = config.recommendations.enabled
    settings = PipelineSettings.of(config, scoring_settings(config), enabled)
    settings = dataclasses.replace(settings, data_end_ts=data_end_ts)
    records = source(env) if consent is None else source(env).union(consent(env))
    streams = build_profiles(records, control(env), settings, control.in_force)
    sinks.write(ProfileOutputs(**streams))


# ------------------------------------------------------------------ production connectors


SQL_TYPES = (
    (Types.STRING(), DataTypes.STRING()),
    (Types.LONG(), DataTypes.BIGINT()),
    (Types.INT(), DataTypes.INT()),
    (Types.DOUBLE(), DataTypes.DOUBLE()),
    (Types.BOOLEAN(), DataTypes.BOOLEAN()),
    (runtime.BYTES, DataTypes.BYTES()),
)


def sql_type(type_info):
    return next(sql for flink, sql in SQL_TYPES if flink == type_info)


def output_table(t: StreamTableEnvironment, stream: DataStream, output: FlinkOutput) -> Table:
    """The stream of an output as a table. A deletable one is declared a full changelog keyed
    by user rather than an upsert one: an upsert source makes the planner keep every row in
    state to normalize it."""
    if not output.output.deletable:
        return t.from_data_stream(stream)
    schema = Schema.new_builder()
    for column, type_info in output.columns:
        data_type = sql_type(type_info)
        schema = schema.column(column, data_type.not_null() if column == "user_id" else data_type)
    return t.from_changelog_stream(
        stream, schema.primary_key("user_id").build(), ChangelogMode.all()
    )


class ProductionSinks:
    def __init__(self, t_env: StreamTableEnvironment, config: Settings):
        self.t_env, self.config = t_env, config

    def write(self, streams: ProfileOutputs) -> None:
        t, config = self.t_env, self.config
        statements = t.create_statement_set()
        events = sinks.postgres_table(t, config, "events_archive", outputs.ARCHIVE)
        statements.add_insert(events, t.from_data_stream(streams.archive))
        letters = sinks.kafka_bytes_table(
            t, config, "dead_letters", config.kafka.topics.events_dlq, "profile-dlq"
        )
        statements.add_insert(letters, t.from_data_stream(streams.dead_letters))
        sessions = sinks.postgres_table(t, config, "user_sessions_out", outputs.SESSIONS)
        statements.add_insert(sessions, t.from_data_stream(streams.sessions))
        for stream, output in (
            (streams.profiles, outputs.PROFILES),
            (streams.scores, outputs.SCORES),
            (streams.cohort_moves, outputs.COHORT_MOVES),
            (streams.leads, outputs.LEADS),
            (streams.actions, outputs.ACTIONS),
            (streams.outcomes, outputs.OUTCOMES),
            (streams.recommendations, outputs.RECOMMENDATIONS),
            (streams.offers, outputs.ACTIONS),
        ):
            self.to_topic_and_table(statements, stream, output, stream is streams.offers)
        # Added after the others: the planner numbers the sinks' operators in this order (their
        # uids), and a savepoint of an earlier version restores by them.
        erasures = sinks.user_records_table(
            t, config, "erasures_topic", config.kafka.topics.erasures, "profile-erasures", False
        )
        table = t.from_data_stream(streams.erasures)
        statements.add_insert(erasures, table.select(col("user_id"), col("record")))
        self.to_topic_and_table(statements, streams.lead_outcomes, outputs.LEAD_OUTCOMES)
        statements.attach_as_datastream()

    def to_topic_and_table(
        self, statements, stream: DataStream, output: outputs.Output, offers: bool = False
    ) -> None:
        t, config = self.t_env, self.config
        topic = getattr(config.kafka.topics, output.topic)
        flink = RECOMMENDATIONS if output is outputs.RECOMMENDATIONS else FLINK_OUTPUTS[output]
        table = output_table(t, stream, flink)
        name, writer = output.table, f"profile-{topic.name}"
        if offers:
            name, writer = f"{name}_offers", f"{writer}-offers"
        kafka_table = sinks.user_records_table(
            t, config, f"{name}_topic", topic, writer, output.deletable
        )
        statements.add_insert(kafka_table, table.select(col("user_id"), col("record")))
        pg = sinks.postgres_table(t, config, f"{name}_out", output)
        statements.add_insert(pg, table.select(*(col(name) for name in output.names)))


def submit(
    config: Settings,
    start: dict[int, int] | None = None,
    stop: dict[int, int] | None = None,
    restore_from: str | None = None,
) -> JobClient:
    """Starts the job and returns at once; the client waits for it, cancels it or stops it.
    The control topic gets the current models, policy and modifiers first (jobs/control.py)."""
    in_force = tuple(control.in_force(config))
    kafka_control = KafkaControl(config, bounded=stop is not None, in_force=in_force)
    consent = KafkaConsent(config, bounded=stop is not None)
    build = functools.partial(build_pipeline, control=kafka_control, consent=consent)
    return runtime.submit(SOURCE_GROUP, build, ProductionSinks, config, start, stop, restore_from)


def run(
    config: Settings,
    start: dict[int, int] | None = None,
    stop: dict[int, int] | None = None,
    restore_from: str | None = None,
) -> None:
    client = submit(config, start, stop, restore_from)
    runtime.wait_for_end(client, config, SOURCE_GROUP, stop, restored=restore_from is not None)


def main(argv: list[str] | None = None) -> int:
    run(*runtime.offsets_command("python -m jobs.profile", __doc__, argv))
    return 0


if __name__ == "__main__":
    # Run through the importable module, not __main__: functions are then pickled by reference
    # to `jobs.profile`, which the workers import from the shipped code.
    from jobs import profile as job_module

    sys.exit(job_module.main())
