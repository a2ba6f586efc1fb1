"""Profile job: Kafka `events` -> per-user behavioural profiles in keyed state -> Kafka
`profiles` (exactly once) and PostgreSQL `user_profiles` / `user_sessions`.

    source (raw bytes + topic/partition/offset)
      (event time and watermarks come from the source, per Kafka partition)
      -> parse_events              (as the ingest job: archive rows, dead letters)
      -> key_by(user_id)
      -> build_profiles            udfs.profile.UserProfile per user, de-duplicated by event_id,
                                   scored with the registered ONNX models (jobs.live_models)
           |-> profile updates     -> Kafka `profiles` (key user) + PostgreSQL `user_profiles`
           |-> scores              -> Kafka `scores` + PostgreSQL `user_scores`
           |-> cohort moves        -> Kafka `cohort-moves` + PostgreSQL `cohort_moves`
           |-> lead scores         -> Kafka `lead-scores` + PostgreSQL `leads`
           |-> actions             -> Kafka `actions` + PostgreSQL `actions` (the decision step)
           |-> action outcomes     -> Kafka `action-outcomes` + PostgreSQL `action_outcomes`
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

from pyflink.common import JobClient, Row, Types
from pyflink.common.types import RowKind
from pyflink.datastream import DataStream, KeyedStream, OutputTag, StreamExecutionEnvironment
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.table import DataTypes, Schema, StreamTableEnvironment
from pyflink.table.changelog_mode import ChangelogMode

from conf.settings import Profile as ProfileSettings
from conf.settings import Settings
from jobs import ingest, sinks
from jobs.live_models import LiveModels, ScoringSettings, scoring_settings
from udfs import profile_state
from udfs.actions import Decision, Ledger, decide
from udfs.attribution import Attribution, Outcome, Pending
from udfs.cohort_assignment import CohortMove, CohortState
from udfs.events import (
    DeadLetter,
    Event,
    EventType,
    Reason,
    SourceRef,
    event_from_record,
    event_to_dict,
    revokes_profiling,
)
from udfs.profile import PROFILE_COLUMNS, ProfileSnapshot, UserProfile
from udfs.schedule import Schedule
from udfs.sessions import SessionSummary
from udfs.user_scores import (
    Scored,
    UserScores,
    decision_context,
    is_competitor_view,
    score_user,
)

# The job's name and consumer group suffix: its offsets are its own, apart from the ingest job's.
SOURCE_GROUP = "profile"
LONG_COLUMNS = {"version", "as_of_ts", "events", "sessions"}
TEXT_COLUMNS = {"user_id", "top_category", "top_propensity"}


def column_type(name: str):
    """Flink type of a profile column: text, bigint or double."""
    if name in TEXT_COLUMNS:
        return Types.STRING()
    if name in LONG_COLUMNS:
        return Types.LONG()
    return Types.DOUBLE()


def named_row(fields):
    return Types.ROW_NAMED([n for n, _ in fields], [t for _, t in fields])


# A profile update; `deleted` marks a purge (a tombstone in Kafka, a delete in PostgreSQL).
PROFILE_FIELDS = [
    *((name, column_type(name)) for name in PROFILE_COLUMNS),
    ("details", Types.STRING()),  # JSON
    ("deleted", Types.BOOLEAN()),
]
PROFILE_ROW = named_row(PROFILE_FIELDS)


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
SCORE_FIELDS = [
    ("user_id", Types.STRING()),
    ("ts", Types.LONG()),
    ("event_id", Types.STRING()),
    ("profile_version", Types.LONG()),  # with user_id, the record's id
    ("model_version", Types.INT()),
    ("cohort", Types.INT()),
    ("cohort_name", Types.STRING()),
    ("dense_cohort", Types.INT()),
    ("abandonment", Types.DOUBLE()),
    ("drift", Types.DOUBLE()),
    ("purchase", Types.DOUBLE()),
    ("top_score", Types.STRING()),
    ("ranked", Types.STRING()),  # JSON
    ("deleted", Types.BOOLEAN()),  # a purge: a tombstone in Kafka, a delete in PostgreSQL
]
MOVE_FIELDS = [
    ("move_id", Types.STRING()),
    ("user_id", Types.STRING()),
    ("ts", Types.LONG()),
    ("from_cohort", Types.INT()),
    ("to_cohort", Types.INT()),
    ("from_cohort_name", Types.STRING()),
    ("to_cohort_name", Types.STRING()),
    ("reason", Types.STRING()),
    ("model_version", Types.INT()),
]
LEAD_FIELDS = [
    ("user_id", Types.STRING()),
    ("ts", Types.LONG()),
    ("profile_version", Types.LONG()),  # with user_id, the record's id
    ("model_version", Types.INT()),
    ("cohort_name", Types.STRING()),
    ("intent", Types.DOUBLE()),
    ("capacity", Types.DOUBLE()),
    ("score", Types.DOUBLE()),
    ("base_intent", Types.DOUBLE()),
    ("base_capacity", Types.DOUBLE()),
    ("modifiers", Types.STRING()),
    ("deleted", Types.BOOLEAN()),
]
ACTION_FIELDS = [
    ("decision_id", Types.STRING()),
    ("user_id", Types.STRING()),
    ("ts", Types.LONG()),
    ("event_id", Types.STRING()),
    ("action", Types.STRING()),
    ("score_name", Types.STRING()),
    ("score", Types.DOUBLE()),
    ("threshold", Types.DOUBLE()),
    ("payload", Types.STRING()),  # JSON
    ("experiment", Types.STRING()),
    ("variant", Types.STRING()),
    ("delivered", Types.BOOLEAN()),
    ("model_version", Types.INT()),
    ("scores", Types.STRING()),  # JSON
]
OUTCOME_FIELDS = [
    ("decision_id", Types.STRING()),
    ("user_id", Types.STRING()),
    ("action", Types.STRING()),
    ("experiment", Types.STRING()),
    ("variant", Types.STRING()),
    ("delivered", Types.BOOLEAN()),
    ("decided_ts", Types.LONG()),
    ("converted", Types.BOOLEAN()),
    ("outcome_ts", Types.LONG()),
    ("revenue", Types.DOUBLE()),
    ("response", Types.STRING()),
]
# The user's cohort under hysteresis (udfs.cohort_assignment.CohortState).
COHORT_STATE_ROW = Types.ROW_NAMED(
    ["cohort", "since_ts", "model_version", "challenger", "challenger_since"],
    [Types.INT(), Types.LONG(), Types.INT(), Types.INT(), Types.LONG()],
)

SESSION_ROW = named_row(SESSION_FIELDS)
SCORE_ROW = named_row(SCORE_FIELDS)
MOVE_ROW = named_row(MOVE_FIELDS)
LEAD_ROW = named_row(LEAD_FIELDS)
ACTION_ROW = named_row(ACTION_FIELDS)
OUTCOME_ROW = named_row(OUTCOME_FIELDS)
SESSIONS = OutputTag("closed-sessions", SESSION_ROW)
SCORES = OutputTag("scores", SCORE_ROW)
COHORT_MOVES = OutputTag("cohort-moves", MOVE_ROW)
LEADS = OutputTag("lead-scores", LEAD_ROW)
ACTIONS = OutputTag("actions", ACTION_ROW)
OUTCOMES = OutputTag("action-outcomes", OUTCOME_ROW)
LATE_EVENTS = OutputTag("late-events", ingest.KAFKA_RECORD_ROW)
# The timer and emission bookkeeping of one user: the one pending timer, when a profile was
# last emitted, and when a held-back update is due (emit_interval_ms > 0).
TIMER_ROW = Types.ROW_NAMED(
    ["wake_at", "last_emit", "emit_due", "outcome_due"],
    [Types.LONG(), Types.LONG(), Types.LONG(), Types.LONG()],
)


# Row "classes": calling one builds a row with these field names.
PROFILE_RECORD = Row(*PROFILE_ROW.get_field_names())
SESSION_RECORD = Row(*SESSION_ROW.get_field_names())
SCORE_RECORD = Row(*SCORE_ROW.get_field_names())
MOVE_RECORD = Row(*MOVE_ROW.get_field_names())
LEAD_RECORD = Row(*LEAD_ROW.get_field_names())
ACTION_RECORD = Row(*ACTION_ROW.get_field_names())
OUTCOME_RECORD = Row(*OUTCOME_ROW.get_field_names())


def profile_row(snapshot: ProfileSnapshot) -> Row:
    c = snapshot.columns
    details = json.dumps(snapshot.details, separators=(",", ":"))
    return PROFILE_RECORD(*(c[name] for name in PROFILE_COLUMNS), details, False)


def deletion_row(user_id: str) -> Row:
    return PROFILE_RECORD(user_id, *([None] * (len(PROFILE_COLUMNS) - 1)), None, True)


def session_row(s: SessionSummary) -> Row:
    return SESSION_RECORD(*(getattr(s, name) for name, _ in SESSION_FIELDS))


def score_rows(
    scored: Scored, version: int, names: dict[int, dict[int, str]]
) -> list[tuple[OutputTag, Row]]:
    """The scores, lead score and cohort move (if any) of profile update `version`."""
    sc, lead = scored.scores, scored.scores.lead
    learned = {t: p.p for t, p in sc.learned.items()}
    out = [
        (
            SCORES,
            SCORE_RECORD(
                sc.user_id,
                sc.ts,
                sc.event_id,
                version,
                sc.model_version,
                sc.cohort,
                sc.cohort_name,
                sc.dense_cohort,
                learned.get("abandonment"),
                learned.get("drift"),
                learned.get("purchase"),
                sc.ranked[0]["score"],
                compact(sc.ranked),
                False,
            ),
        ),
        (
            LEADS,
            LEAD_RECORD(
                sc.user_id,
                sc.ts,
                version,
                sc.model_version,
                sc.cohort_name,
                lead.intent,
                lead.capacity,
                lead.score,
                lead.base_intent,
                lead.base_capacity,
                ",".join(str(i) for i in lead.modifiers),
                False,
            ),
        ),
    ]
    if scored.move is not None:
        out.append((COHORT_MOVES, move_row(sc.user_id, scored.move, names)))
    return out


def score_deletions(user_id: str) -> list[tuple[OutputTag, Row]]:
    """A purged user's latest scores and lead score go too (tombstones, deletes)."""
    return [
        (SCORES, SCORE_RECORD(user_id, *([None] * (len(SCORE_FIELDS) - 2)), True)),
        (LEADS, LEAD_RECORD(user_id, *([None] * (len(LEAD_FIELDS) - 2)), True)),
    ]


def move_row(user_id: str, move: CohortMove, names: dict[int, dict[int, str]]) -> Row:
    """`names`: cohort names by model version, then cohort."""
    # Derived from the move itself, so a replay after a failure upserts the same row.
    move_id = f"{user_id}|{move.ts}|{move.model_version}|{move.to_cohort}"
    return MOVE_RECORD(
        move_id,
        user_id,
        move.ts,
        move.from_cohort,
        move.to_cohort,
        names.get(move.from_model_version, {}).get(move.from_cohort),
        names[move.model_version].get(move.to_cohort),
        move.reason,
        move.model_version,
    )


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def action_row(d: Decision) -> Row:
    return ACTION_RECORD(
        d.decision_id,
        d.user_id,
        d.ts,
        d.event_id,
        d.action,
        d.score_name,
        d.score,
        d.threshold,
        compact(d.payload),
        d.experiment,
        d.variant,
        d.delivered,
        d.model_version,
        compact(d.scores),
    )


def outcome_row(o: Outcome) -> Row:
    return OUTCOME_RECORD(*(getattr(o, name) for name, _ in OUTCOME_FIELDS))


def cohort_state(row: Row | None) -> CohortState | None:
    return CohortState(*row) if row is not None else None


class BuildProfiles(KeyedProcessFunction):
    """Thin adapter over UserProfile: loads and stores the typed state, de-duplicates by
    event_id, keeps a single timer per user (the earliest of its session closes, expiry and
    held-back emission) and emits. Consent revocation of `analytics` purges the user."""

    def __init__(self, settings: ProfileSettings, scoring: ScoringSettings):
        self.s, self.scoring = settings, scoring

    def open(self, runtime_context: RuntimeContext) -> None:
        self.live = LiveModels(self.scoring)
        self.live.refresh(force=True)
        self.cohort = runtime_context.get_state(ValueStateDescriptor("cohort", COHORT_STATE_ROW))
        # JSON strings: small, read only when an action is decided or its outcome may change.
        self.ledger = runtime_context.get_state(
            ValueStateDescriptor("action-ledger", Types.STRING())
        )
        self.awaiting = runtime_context.get_state(
            ValueStateDescriptor("awaiting-outcomes", Types.STRING())
        )
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
        self.decisions = metrics.counter("actions_decided")
        self.dropped_outcomes = metrics.counter("outcomes_dropped_on_purge")

    # ------------------------------------------------------------ events

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context):
        s = self.s
        self.live.refresh()
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
        schedule = self.schedule()
        if profile is not None:
            horizon = event.ts - s.out_of_orderness_ms
            expired = yield from self.fire_due_timers(profile, schedule, horizon, ctx)
            if not expired and profile.expires_at(s) <= event.ts:
                # Expired, though the watermark has not yet fired its timer: do what it would do.
                expired = yield from self.catch_up(profile, schedule, event.ts, ctx)
            if expired:
                profile, schedule = None, Schedule()
        self.seen.put(row.event_id, row.ts_ms)
        if event.type is EventType.CONSENT_UPDATE:
            if revokes_profiling(event):
                self.purge(ctx)
                yield deletion_row(row.user_id)
                yield from score_deletions(row.user_id)
            return
        profile = profile or UserProfile.new(row.user_id, s)
        profile.apply(event, watermark, s)
        yield from self.attribute(event, schedule)
        yield from self.store_and_emit(profile, schedule, event.ts, ctx, event=event)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        stored = self.profile.value()
        if stored is None:
            return
        schedule = self.schedule()
        schedule.wake_at = None  # this timer has fired
        yield from self.catch_up(profile_state.from_row(stored, self.s), schedule, timestamp, ctx)

    def fire_due_timers(self, profile: UserProfile, schedule: Schedule, horizon: int, ctx):
        """Does now what the user's timers due by event time `horizon` will do, in their order.
        An event at `ts` means no watermark has passed `ts - out_of_orderness` yet, so a timer
        due by then has not fired; firing it before the event, instead of whenever the watermark
        gets there, makes the order of a user's updates the same in every run, restarts
        included (watermarks are not checkpointed, so timers fire later after a restore)."""
        while (due := schedule.wake_at) is not None and due <= horizon:
            ctx.timer_service().delete_event_time_timer(due)
            schedule.wake_at = None
            if (yield from self.catch_up(profile, schedule, due, ctx)):
                return True  # expired: the user's state is gone
        return False

    def catch_up(self, profile: UserProfile, schedule: Schedule, now: int, ctx):
        """Everything due by event time `now`: session closes, a held-back update, expiry.
        Returns whether the profile expired (its state is then cleared)."""
        s = self.s
        closed = profile.close_sessions(now, s)
        for summary in closed:
            yield SESSIONS, session_row(summary)
        if schedule.outcome_due is not None and schedule.outcome_due <= now:
            yield from self.expire_outcomes(profile.user_id, schedule, now)
        self.forget_seen(now - s.allowed_lateness_ms)
        held_back = schedule.emit_due is not None and schedule.emit_due <= now
        yield from self.store_and_emit(profile, schedule, now, ctx, bool(closed) or held_back)
        if profile.expires_at(s) <= now:
            self.expiries.inc()
            self.clear(ctx)
            return True
        return False

    # ------------------------------------------------------------ state and timers

    def schedule(self) -> Schedule:
        row = self.timer.value()
        return Schedule(*row) if row is not None else Schedule()

    def store_and_emit(
        self,
        profile: UserProfile,
        schedule: Schedule,
        now: int,
        ctx,
        changed: bool = True,
        event: Event | None = None,
    ):
        """Stores the profile, emits it and its scores if it changed (unless held back by
        emit_interval_ms), and moves the user's single timer to the earliest time it is needed."""
        self.profile.update(profile_state.to_row(profile))
        if changed and schedule.should_emit(now, self.s.emit_interval_ms):
            snapshot = profile.snapshot(self.s)
            yield profile_row(snapshot)
            yield from self.score(snapshot, event, schedule)
        stale, wake_at = schedule.reschedule(profile.timers(self.s))
        if stale is not None:
            ctx.timer_service().delete_event_time_timer(stale)
        if wake_at is not None:
            ctx.timer_service().register_event_time_timer(wake_at)
        self.timer.update(
            Row(schedule.wake_at, schedule.last_emit, schedule.emit_due, schedule.outcome_due)
        )

    def score(self, snapshot: ProfileSnapshot, event: Event | None, schedule: Schedule):
        live, sc = self.live, self.scoring
        scored = score_user(
            snapshot,
            live.models,
            cohort_state(self.cohort.value()),
            event.event_id if event is not None else None,
            is_competitor_view(event, sc.leads.competitor_brands),
            sc.models,
            sc.leads,
            live.modifiers,
        )
        if scored.cohort_state is not None:
            st = scored.cohort_state
            self.cohort.update(
                Row(st.cohort, st.since_ts, st.model_version, st.challenger, st.challenger_since)
            )
        yield from score_rows(scored, snapshot.columns["version"], live.cohort_names)
        if live.policy is not None:
            yield from self.decide(scored.scores, snapshot, schedule)

    # ------------------------------------------------------------ actions and outcomes

    def decide(self, sc: UserScores, snapshot: ProfileSnapshot, schedule: Schedule):
        ledger = Ledger.from_json(self.ledger.value())
        decision = decide(self.live.policy, decision_context(sc, snapshot), ledger)
        if decision is None:
            return
        self.decisions.inc()
        self.ledger.update(ledger.to_json())
        attribution = self.attribution(sc.user_id)
        attribution.decided(
            Pending(
                decision.decision_id,
                decision.action,
                decision.ts,
                decision.experiment,
                decision.variant,
                decision.delivered,
            )
        )
        self.store_attribution(attribution, schedule)
        yield ACTIONS, action_row(decision)

    def attribute(self, event: Event, schedule: Schedule):
        """A purchase converts the decisions awaiting it; a response is kept with its own."""
        if schedule.outcome_due is None:
            return  # nothing awaits an outcome
        if event.type is EventType.PURCHASE:
            attribution = self.attribution(event.user_id)
            outcomes = attribution.purchased(event.ts, event.data.total)
        elif event.type is EventType.OFFER_RESPONSE:
            attribution = self.attribution(event.user_id)
            attribution.responded(event.data.action_id, event.data.response)
            outcomes = []
        else:
            return
        self.store_attribution(attribution, schedule)
        for outcome in outcomes:
            yield OUTCOMES, outcome_row(outcome)

    def expire_outcomes(self, user_id: str, schedule: Schedule, now: int):
        attribution = self.attribution(user_id)
        outcomes = attribution.expire(now)
        self.store_attribution(attribution, schedule)
        for outcome in outcomes:
            yield OUTCOMES, outcome_row(outcome)

    def attribution(self, user_id: str) -> Attribution:
        window = self.scoring.actions.attribution_window_ms
        return Attribution.from_json(user_id, window, self.awaiting.value())

    def store_attribution(self, attribution: Attribution, schedule: Schedule) -> None:
        state = attribution.to_json()
        if state is None:
            self.awaiting.clear()
        else:
            self.awaiting.update(state)
        schedule.outcome_due = attribution.next_deadline()

    def forget_seen(self, before_ts: int) -> None:
        """Event ids older than the lateness horizon: any copy of them is refused as late."""
        old = [event_id for event_id, ts in self.seen.items() if ts < before_ts]
        for event_id in old:
            self.seen.remove(event_id)

    def purge(self, ctx) -> None:
        """Consent to analytics is gone: decisions awaiting an outcome are not measured."""
        self.purges.inc()
        awaiting = self.awaiting.value()
        if awaiting:
            for _ in json.loads(awaiting):
                self.dropped_outcomes.inc()
        self.clear(ctx)

    def clear(self, ctx) -> None:
        """Drops every piece of state of the current user and its pending timer."""
        wake_at = self.schedule().wake_at
        if wake_at is not None:
            ctx.timer_service().delete_event_time_timer(wake_at)
        self.profile.clear()
        self.seen.clear()
        self.timer.clear()
        self.cohort.clear()
        self.ledger.clear()
        self.awaiting.clear()


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
    # It runs in the subtasks of its input, so each user's events reach build-profiles through
    # one channel, in the order their partition holds them (fire_due_timers relies on it).
    extractor = keyed._j_data_stream.getTransformation().getInputs().get(0)
    set_uid(extractor, "key-by-user")
    extractor.setParallelism(ingest.parallelism_of(events))
    return keyed


def build_profiles(events: DataStream, s: ProfileSettings, scoring: ScoringSettings) -> dict:
    """The profile stream and every side output of build-profiles, by name."""
    profiles = (
        by_user(events)
        .process(BuildProfiles(s, scoring), PROFILE_ROW)
        .name("build-profiles")
        .uid("build-profiles")
    )
    streams = {"profiles": profiles}
    for name, tag in (
        ("sessions", SESSIONS),
        ("late", LATE_EVENTS),
        ("scores", SCORES),
        ("cohort_moves", COHORT_MOVES),
        ("leads", LEADS),
        ("actions", ACTIONS),
        ("outcomes", OUTCOMES),
    ):
        streams[name] = profiles.get_side_output(tag).name(tag.tag_id).uid(tag.tag_id)
    return streams


@dataclass
class ProfileOutputs:
    archive: DataStream  # ingest.ARCHIVE_ROW
    dead_letters: DataStream  # ingest.KAFKA_RECORD_ROW: malformed and late records
    profiles: DataStream  # PROFILE_ROW
    sessions: DataStream  # SESSION_ROW
    scores: DataStream  # SCORE_ROW
    cohort_moves: DataStream  # MOVE_ROW
    leads: DataStream  # LEAD_ROW
    actions: DataStream  # ACTION_ROW
    outcomes: DataStream  # OUTCOME_ROW


class ProfileSinks(Protocol):
    def write(self, outputs: ProfileOutputs) -> None: ...


def build_pipeline(
    env: StreamExecutionEnvironment, config: Settings, source: ingest.RawSource, sinks: ProfileSinks
) -> None:
    # The source stamps records with their event time and emits watermarks (per Kafka partition
    # in production); parsing passes both through.
    archive, malformed = ingest.parse_events(source(env), config.events)
    out = build_profiles(archive, config.profile, scoring_settings(config))
    sinks.write(
        ProfileOutputs(
            archive,
            malformed.union(out["late"]),
            out["profiles"],
            out["sessions"],
            out["scores"],
            out["cohort_moves"],
            out["leads"],
            out["actions"],
            out["outcomes"],
        )
    )


# ------------------------------------------------------------------ production connectors


def json_record(key_field: str, raw_json: tuple[str, ...] = ()):
    """Row -> Kafka record: key = the row's `key_field`, value = the row as a JSON object, with
    the `raw_json` fields (JSON already) spliced in as they are."""

    def record(row: Row) -> Row:
        fields = row.as_dict()
        if fields.pop("deleted", False):
            return ingest.KAFKA_RECORD(row[key_field].encode(), None)
        spliced = {name: fields.pop(name) for name in raw_json}
        text = json.dumps(fields, separators=(",", ":"))[:-1]
        text += "".join(f',"{name}":{value or "null"}' for name, value in spliced.items())
        return ingest.KAFKA_RECORD(row[key_field].encode(), f"{text}}}".encode())

    return record


# Key = user id; value = the profile as JSON (`details` spliced in), or a tombstone for a purge.
kafka_record = json_record("user_id", ("details",))
# Outputs a purge deletes: their rows carry the `deleted` flag.
DELETABLE = {"user_scores": SCORE_FIELDS, "leads": LEAD_FIELDS}
SQL_TYPES = (
    (Types.STRING(), DataTypes.STRING()),
    (Types.LONG(), DataTypes.BIGINT()),
    (Types.INT(), DataTypes.INT()),
    (Types.DOUBLE(), DataTypes.DOUBLE()),
    (Types.BOOLEAN(), DataTypes.BOOLEAN()),
)


def sql_type(type_info):
    return next(sql for flink, sql in SQL_TYPES if flink == type_info)


def upsert_changelog(t: StreamTableEnvironment, stream: DataStream, fields, key: str, name: str):
    """Rows whose last field is `deleted` -> a changelog of upserts and deletes by `key`, for a
    JDBC table. Declared as a full changelog rather than an upsert one: an upsert source makes
    the planner keep every row in state to normalize it."""
    kept = fields[:-1]

    def change(row: Row) -> Row:
        out = Row(*row[:-1])
        out.set_row_kind(RowKind.DELETE if row[-1] else RowKind.UPDATE_AFTER)
        return out

    changes = stream.map(change, output_type=named_row(kept)).name(name).uid(name)
    schema = Schema.new_builder()
    for column, type_info in kept:
        data_type = sql_type(type_info)
        schema = schema.column(column, data_type.not_null() if column == key else data_type)
    return t.from_changelog_stream(changes, schema.primary_key(key).build(), ChangelogMode.all())


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
        changes = upsert_changelog(
            t, outputs.profiles, PROFILE_FIELDS, "user_id", "profile-changes"
        )
        statements.add_insert(profiles, changes)
        sessions = sinks.postgres_table(
            t, config, "user_sessions_out", "user_sessions_sink", "user_sessions"
        )
        statements.add_insert(sessions, t.from_data_stream(outputs.sessions))
        topics = config.kafka.topics
        for stream, topic, pg_table, raw_json in (
            (outputs.scores, topics.scores, "user_scores", ("ranked",)),
            (outputs.cohort_moves, topics.cohort_moves, "cohort_moves", ()),
            (outputs.leads, topics.lead_scores, "leads", ()),
            (outputs.actions, topics.actions, "actions", ("payload", "scores")),
            (outputs.outcomes, topics.action_outcomes, "action_outcomes", ()),
        ):
            writer = f"profile-{topic.name}"
            kafka_table = sinks.kafka_bytes_table(t, config, f"{pg_table}_topic", topic, writer)
            records = (
                stream.map(json_record("user_id", raw_json), output_type=ingest.KAFKA_RECORD_ROW)
                .name(f"{topic.name}-records")
                .uid(f"{topic.name}-records")
            )
            statements.add_insert(kafka_table, t.from_data_stream(records))
            table = sinks.postgres_table(t, config, f"{pg_table}_out", f"{pg_table}_sink", pg_table)
            fields = DELETABLE.get(pg_table)
            if fields is None:
                statements.add_insert(table, t.from_data_stream(stream))
            else:
                changes = upsert_changelog(t, stream, fields, "user_id", f"{pg_table}-changes")
                statements.add_insert(table, changes)
        statements.attach_as_datastream()


def submit(
    config: Settings,
    start: dict[int, int] | None = None,
    stop: dict[int, int] | None = None,
    restore_from: str | None = None,
) -> JobClient:
    """Starts the job and returns at once; the client waits for it, cancels it or stops it."""
    return ingest.submit(
        SOURCE_GROUP, build_pipeline, ProductionSinks, config, start, stop, restore_from
    )


def run(
    config: Settings,
    start: dict[int, int] | None = None,
    stop: dict[int, int] | None = None,
    restore_from: str | None = None,
) -> None:
    client = submit(config, start, stop, restore_from)
    ingest.wait_for_end(client, config, SOURCE_GROUP, stop, restored=restore_from is not None)


def main(argv: list[str] | None = None) -> int:
    run(*ingest.offsets_command("python -m jobs.profile", __doc__, argv))
    return 0


if __name__ == "__main__":
    # Run through the importable module, not __main__: functions are then pickled by reference
    # to `jobs.profile`, which the workers import from the shipped code.
    from jobs import profile as job_module

    sys.exit(job_module.main())
