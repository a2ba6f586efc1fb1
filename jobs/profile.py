"""Profile job: Kafka `events` -> per-user behavioural profiles in keyed state -> Kafka
`profiles` (exactly once) and PostgreSQL `user_profiles` / `user_sessions`.

    source (raw bytes + topic/partition/offset + the JSON `user_id` as the user key)
      (event time and watermarks come from the source, per Kafka partition)
      -> key by user key           (in the JVM: no Python step before build-profiles)
      -> build_profiles            parses each record where its user's state is (this job
                                   owns the event archive and the dead letters), then
                                   udfs.profile.UserProfile per user, de-duplicated by event_id,
                                   scored with the registered ONNX models (jobs.live_models)
           |-> profile updates     -> Kafka `profiles` (key user) + PostgreSQL `user_profiles`
           |-> scores              -> Kafka `scores` + PostgreSQL `user_scores`
           |-> cohort moves        -> Kafka `cohort-moves` + PostgreSQL `cohort_moves`
           |-> lead scores         -> Kafka `lead-scores` + PostgreSQL `leads`
           |-> actions             -> Kafka `actions` + PostgreSQL `actions` (the decision step)
           |-> action outcomes     -> Kafka `action-outcomes` + PostgreSQL `action_outcomes`
           |-> closed sessions     -> PostgreSQL `user_sessions`
           |-> valid events        -> PostgreSQL `events`
           '-> dead letters        -> Kafka `events.dlq`: malformed records, records whose
                                      `user_id` is not their key, and events too late (`late`)

A user quiet for `profile.ttl_ms` keeps only the long-term layer (a `dormant` profile update);
after `profile.long_term_ttl_ms` the user is forgotten (deletes and tombstones, as on a purge).

build-profiles is the job's only Python operator and runs apart from the sinks (no chaining):
its thread does the Python work and nothing else.

Run locally with `python -m jobs.profile` or on a cluster with `make submit JOB=profile`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Protocol

import orjson
from pyflink.common import JobClient, Row, Types
from pyflink.common.types import RowKind
from pyflink.datastream import DataStream, KeyedStream, OutputTag, StreamExecutionEnvironment
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, Table
from pyflink.table.changelog_mode import ChangelogMode
from pyflink.table.expressions import col

from conf.settings import EventContract, Settings
from conf.settings import Profile as ProfileSettings
from jobs import runtime, sinks
from jobs.live_models import LiveModels, ScoringSettings, scoring_settings
from udfs import profile_state
from udfs.actions import Decision, Ledger, decide
from udfs.attribution import Attribution, Outcome, Pending
from udfs.cohort_assignment import CohortMove
from udfs.events import (
    DeadLetter,
    Event,
    EventParser,
    EventType,
    Reason,
    SourceRef,
    revokes_profiling,
)
from udfs.profile import PROFILE_COLUMNS, ProfileSnapshot, UserProfile
from udfs.profile_state import UserState
from udfs.sessions import SessionSummary
from udfs.user_scores import (
    Scored,
    UserScores,
    decision_context,
    is_competitor_view,
    score_user,
)

# The watermark at the end of the input (Long.MAX_VALUE): every timer fires.
END_OF_EVENT_TIME = 2**63 - 1
# The job's name and consumer group suffix (its committed offsets are kept under it).
SOURCE_GROUP = "profile"
LONG_COLUMNS = {"version", "as_of_ts", "events", "sessions", "purchase_count"}
TEXT_COLUMNS = {"user_id", "top_category", "top_propensity"}
INT_COLUMNS = {"rfm_r", "rfm_f", "rfm_m"}


def column_type(name: str):
    """Flink type of a profile column: text, bigint, int, boolean or double."""
    if name in TEXT_COLUMNS:
        return Types.STRING()
    if name in LONG_COLUMNS:
        return Types.LONG()
    if name in INT_COLUMNS:
        return Types.INT()
    if name == "dormant":
        return Types.BOOLEAN()
    return Types.DOUBLE()


def named_row(fields):
    return Types.ROW_NAMED([n for n, _ in fields], [t for _, t in fields])


PROFILE_FIELDS = [
    *((name, column_type(name)) for name in PROFILE_COLUMNS),
    ("details", Types.STRING()),  # JSON
]


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


# Compact JSON, as json.dumps(separators=(",", ":")) writes it, in a fraction of the time:
# encoding the outputs was a fifth of build-profiles' own work. NaN and infinities become null.
JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def compact(value) -> str:
    return orjson.dumps(value, option=JSON_OPTIONS).decode()


def json_value(names: list[str], values, raw_json: tuple[str, ...]) -> bytes:
    """The fields as one JSON object, the `raw_json` ones (JSON already) spliced in as they are."""
    fields = dict(zip(names, values, strict=True))
    spliced = b"".join(
        b',"%s":%s' % (n.encode(), (fields.pop(n) or "null").encode()) for n in raw_json
    )
    return orjson.dumps(fields, option=JSON_OPTIONS)[:-1] + spliced + b"}"


class Output:
    """One kind of build-profiles output bound for Kafka and PostgreSQL: its typed columns (the
    PostgreSQL row) and `record`, the Kafka value made from them in the same step (json_value),
    so that no Python operator sits between build-profiles and the sinks. A deletable output
    (one a purge removes) is a changelog by user: upserts, and deletes that become PostgreSQL
    deletes and Kafka tombstones."""

    def __init__(self, fields, raw_json: tuple[str, ...] = (), deletable: bool = False):
        self.names = [name for name, _ in fields]
        if deletable and self.names[0] != "user_id":
            raise ValueError("a deletable output is keyed by its first field, user_id")
        self.raw_json, self.deletable = raw_json, deletable
        self.columns = [*fields, ("record", runtime.BYTES)]
        self.row_type = named_row(self.columns)
        self._row = Row(*self.names, "record")  # calling it builds a row with these names

    def row(self, *values) -> Row:
        row = self._row(*values, json_value(self.names, values, self.raw_json))
        if self.deletable:
            row.set_row_kind(RowKind.UPDATE_AFTER)
        return row

    def deletion(self, user_id: str) -> Row:
        """A purge of the user's row (deletable outputs are keyed by their first field)."""
        row = self._row(user_id, *([None] * len(self.names)))
        row.set_row_kind(RowKind.DELETE)
        return row


# The event archive (PostgreSQL `events`, one row per valid event) and the dead letters
# (Kafka `events.dlq`, key = the record's source coordinates): this job owns both.
ARCHIVE_ROW = named_row(
    [
        ("event_id", Types.STRING()),
        ("user_id", Types.STRING()),
        ("session_id", Types.STRING()),
        ("type", Types.STRING()),
        ("ts_ms", Types.LONG()),
        ("schema_version", Types.INT()),
        ("properties", Types.STRING()),
        ("source_topic", Types.STRING()),
        ("source_partition", Types.INT()),
        ("source_offset", Types.LONG()),
    ]
)
ARCHIVE_RECORD = Row(*ARCHIVE_ROW.get_field_names())  # builds rows of ARCHIVE_ROW
KAFKA_RECORD_ROW = named_row([("key", runtime.BYTES), ("value", runtime.BYTES)])
KAFKA_RECORD = Row("key", "value")  # builds rows of KAFKA_RECORD_ROW (a Kafka key and value)
DEAD_LETTERS = OutputTag("dead-letters", KAFKA_RECORD_ROW)
PROFILE = Output(PROFILE_FIELDS, ("details",), deletable=True)
SCORE = Output(SCORE_FIELDS, ("ranked",), deletable=True)
LEAD = Output(LEAD_FIELDS, deletable=True)
MOVE = Output(MOVE_FIELDS)
ACTION = Output(ACTION_FIELDS, ("payload", "scores"))
OUTCOME = Output(OUTCOME_FIELDS)
SESSION_ROW = named_row(SESSION_FIELDS)  # PostgreSQL only
SESSION_RECORD = Row(*SESSION_ROW.get_field_names())
SESSIONS = OutputTag("closed-sessions", SESSION_ROW)
SCORES = OutputTag("scores", SCORE.row_type)
COHORT_MOVES = OutputTag("cohort-moves", MOVE.row_type)
LEADS = OutputTag("lead-scores", LEAD.row_type)
ACTIONS = OutputTag("actions", ACTION.row_type)
OUTCOMES = OutputTag("action-outcomes", OUTCOME.row_type)
ARCHIVE = OutputTag("archive", ARCHIVE_ROW)


def dead_letter_record(letter: DeadLetter) -> Row:
    return KAFKA_RECORD(letter.dead_letter_id.encode(), letter.to_json())


def archive_row(event: Event, source: SourceRef) -> Row:
    """The ARCHIVE_ROW of a parsed event."""
    return ARCHIVE_RECORD(
        event.event_id,
        event.user_id,
        event.session_id,
        event.type.value,
        event.ts,
        event.schema_version,
        json.dumps(event.properties(), separators=(",", ":")),
        source.topic,
        source.partition,
        source.offset,
    )


def profile_row(snapshot: ProfileSnapshot) -> Row:
    c = snapshot.columns
    details = compact(snapshot.details)
    return PROFILE.row(*(c[name] for name in PROFILE_COLUMNS), details)


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
            SCORE.row(
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
            ),
        ),
        (
            LEADS,
            LEAD.row(
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
            ),
        ),
    ]
    if scored.move is not None:
        out.append((COHORT_MOVES, move_row(sc.user_id, scored.move, names)))
    return out


def score_deletions(user_id: str) -> list[tuple[OutputTag, Row]]:
    """A purged user's latest scores and lead score go too (tombstones, deletes)."""
    return [(SCORES, SCORE.deletion(user_id)), (LEADS, LEAD.deletion(user_id))]


def move_row(user_id: str, move: CohortMove, names: dict[int, dict[int, str]]) -> Row:
    """`names`: cohort names by model version, then cohort."""
    # Derived from the move itself, so a replay after a failure upserts the same row.
    move_id = f"{user_id}|{move.ts}|{move.model_version}|{move.to_cohort}"
    return MOVE.row(
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


def action_row(d: Decision) -> Row:
    return ACTION.row(
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
    return OUTCOME.row(*(getattr(o, name) for name, _ in OUTCOME_FIELDS))


class BuildProfiles(KeyedProcessFunction):
    """Thin adapter over UserProfile: loads the user's state (one value, UserState) once per
    event or timer and stores it once, de-duplicates by event_id, keeps a single timer per user
    (the earliest of its session closes, expiry and held-back emission) and emits. Consent
    revocation of `analytics` purges the user."""

    def __init__(
        self, contract: EventContract, settings: ProfileSettings, scoring: ScoringSettings
    ):
        self.contract, self.s, self.scoring = contract, settings, scoring

    def open(self, runtime_context: RuntimeContext) -> None:
        c = self.contract
        self.parser = EventParser(c.max_bytes, c.min_ts_ms, c.max_future_skew_ms)
        self.live = LiveModels(self.scoring)
        self.live.refresh(force=True)
        self.latest_ts: int | None = None  # the latest event time this task has seen
        self.user = runtime_context.get_state(
            ValueStateDescriptor("user", Types.PICKLED_BYTE_ARRAY())
        )
        self.seen = runtime_context.get_map_state(
            MapStateDescriptor("seen-event-ids", Types.STRING(), Types.LONG())
        )
        metrics = runtime_context.get_metrics_group()
        self.duplicates = metrics.counter("duplicate_events")
        self.late = metrics.counter("late_events_dead_lettered")
        self.purges = metrics.counter("profiles_purged")
        self.dormancies = metrics.counter("profiles_turned_dormant")
        self.expiries = metrics.counter("profiles_expired")
        self.decisions = metrics.counter("actions_decided")
        self.dropped_outcomes = metrics.counter("outcomes_dropped_on_purge")

    # ------------------------------------------------------------ events

    def process_element(self, record: Row, ctx: KeyedProcessFunction.Context):
        s = self.s
        self.live.refresh()
        event = yield from self.parse(record, ctx)
        if event is None:
            return
        watermark = ctx.timer_service().current_watermark()
        if event.ts < watermark - s.allowed_lateness_ms:
            self.late.inc()
            yield DEAD_LETTERS, late_dead_letter(record, event.ts, watermark)
            return
        if self.seen.contains(event.event_id):
            self.duplicates.inc()
            return
        self.latest_ts = event.ts if self.latest_ts is None else max(self.latest_ts, event.ts)
        user = profile_state.unpack(self.user.value(), s)
        if user.profile is not None:
            horizon = event.ts - s.out_of_orderness_ms
            expired = yield from self.fire_due_timers(user, horizon, ctx)
            if not expired and user.profile.expires_at(s) <= event.ts:
                # Expired, though the watermark has not yet fired its timer: do what it would do.
                yield from self.catch_up(user, event.ts, ctx)
        self.seen.put(event.event_id, event.ts)
        if event.type is EventType.CONSENT_UPDATE:
            if revokes_profiling(event):
                self.purge(user, ctx)
                yield PROFILE.deletion(event.user_id)
                yield from score_deletions(event.user_id)
        else:
            user.profile = user.profile or UserProfile.new(event.user_id, s)
            user.profile.apply(event, watermark, s)
            yield from self.attribute(user, event)
            yield from self.emit(user, event.ts, ctx, event=event)
        self.store(user)

    def parse(self, record: Row, ctx):
        """The record's event, archived; None when it is dead-lettered instead."""
        payload, topic, partition, offset = record
        source = SourceRef(topic, partition, offset)
        parsed = self.parser.parse(payload, source)
        key = ctx.get_current_key()
        if isinstance(parsed, Event) and parsed.user_id != key:
            # The source's JSON path read the user id otherwise: this is another user's state.
            detail = f"user_id {parsed.user_id!r} is not the record's user key {key!r}"
            parsed = DeadLetter(Reason.SCHEMA_VIOLATION, detail, payload, source)
        if isinstance(parsed, DeadLetter):
            yield DEAD_LETTERS, dead_letter_record(parsed)
            return None
        yield ARCHIVE, archive_row(parsed, source)
        return parsed

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        user = profile_state.unpack(self.user.value(), self.s)
        if user.profile is None:
            return
        user.schedule.wake_at = None  # this timer has fired
        # At the end of the input (a bounded run, or a drain) event time jumps to its end, but
        # the users' time ends with the data: a layer expires only if a watermark as far as the
        # latest event would have expired it. (Watermarks are periodic: the last one before the
        # end can trail the data by any stretch of event time.)
        ended = ctx.timer_service().current_watermark() >= END_OF_EVENT_TIME
        expire = not ended or timestamp <= self.data_watermark()
        yield from self.catch_up(user, timestamp, ctx, expire=expire)
        self.store(user)

    def data_watermark(self) -> int:
        """The watermark the latest event seen by this task allows."""
        if self.latest_ts is None:
            return -END_OF_EVENT_TIME
        return self.latest_ts - self.s.out_of_orderness_ms

    def fire_due_timers(self, user: UserState, horizon: int, ctx):
        """Does now what the user's timers due by event time `horizon` will do, in their order.
        An event at `ts` means no watermark has passed `ts - out_of_orderness` yet, so a timer
        due by then has not fired; firing it before the event, instead of whenever the watermark
        gets there, makes the order of a user's updates the same in every run, restarts
        included (watermarks are not checkpointed, so timers fire later after a restore)."""
        while (due := user.schedule.wake_at) is not None and due <= horizon:
            ctx.timer_service().delete_event_time_timer(due)
            user.schedule.wake_at = None
            if (yield from self.catch_up(user, due, ctx)):
                return True  # expired: the user's state is gone
        return False

    def catch_up(self, user: UserState, now: int, ctx, expire: bool = True):
        """Everything due by event time `now`: session closes, a held-back update, expiry
        (unless not to `expire`, when no expiry timer is set either). Returns whether the whole
        profile expired (the user's state is then cleared)."""
        s, profile, schedule = self.s, user.profile, user.schedule
        closed = profile.close_sessions(now, s)
        for summary in closed:
            yield SESSIONS, session_row(summary)
        if schedule.outcome_due is not None and schedule.outcome_due <= now:
            yield from self.expire_outcomes(user, now)
        self.forget_seen(now - s.allowed_lateness_ms)
        held_back = schedule.emit_due is not None and schedule.emit_due <= now
        yield from self.emit(user, now, ctx, bool(closed) or held_back, expiry_timer=expire)
        if not expire:
            return False
        return (yield from self.expire(user, now, ctx))

    def expire(self, user: UserState, now: int, ctx):
        """The layers due to expire by `now`. The short-term ones: the profile turns dormant and
        its row and record say so. The long-term one: the user is forgotten, and the profile,
        score and lead rows are deleted (tombstones on the topics), as on a purge."""
        s, profile = self.s, user.profile
        if profile.dormant_since is None and profile.expires_at(s) <= now:
            self.dormancies.inc()
            profile.expire_short_term(now, s)
            yield profile_row(profile.snapshot(s, self.live.breakpoints))
            yield from self.emit(user, now, ctx, changed=False)
        if profile.expires_at(s) <= now:
            self.expiries.inc()
            self.clear(user, ctx)
            yield PROFILE.deletion(profile.user_id)
            yield from score_deletions(profile.user_id)
            return True
        return False

    # ------------------------------------------------------------ state and timers

    def store(self, user: UserState) -> None:
        if user.profile is None:
            self.user.clear()  # purged or expired: nothing is kept
        else:
            self.user.update(profile_state.pack(user))

    def emit(
        self,
        user: UserState,
        now: int,
        ctx,
        changed: bool = True,
        event: Event | None = None,
        expiry_timer: bool = True,
    ):
        """Emits the profile and its scores if it changed (unless held back by
        emit_interval_ms), and moves the user's single timer to the earliest time it is needed
        (among them the expiry, unless not `expiry_timer`)."""
        profile, schedule = user.profile, user.schedule
        if changed and schedule.should_emit(now, self.s.emit_interval_ms):
            snapshot = profile.snapshot(self.s, self.live.breakpoints)
            yield profile_row(snapshot)
            yield from self.score(user, snapshot, event)
        due = profile.timers(self.s)
        expiry = profile.expires_at(self.s)
        if not expiry_timer or expiry <= now:
            # Due now, the caller expires the layer next and sets the following expiry (a timer
            # registered again while it fires can be lost); at the end of the input, never.
            due.discard(expiry)
        stale, wake_at = schedule.reschedule(due)
        if stale is not None:
            ctx.timer_service().delete_event_time_timer(stale)
        if wake_at is not None:
            ctx.timer_service().register_event_time_timer(wake_at)

    def score(self, user: UserState, snapshot: ProfileSnapshot, event: Event | None):
        live, sc = self.live, self.scoring
        scored = score_user(
            snapshot,
            live.models,
            user.cohort,
            event.event_id if event is not None else None,
            is_competitor_view(event, sc.leads.competitor_brands),
            sc.models,
            sc.leads,
            live.modifiers,
        )
        if scored.cohort_state is not None:
            user.cohort = scored.cohort_state
        yield from score_rows(scored, snapshot.columns["version"], live.cohort_names)
        if live.policy is not None:
            yield from self.decide(user, scored.scores, snapshot)

    # ------------------------------------------------------------ actions and outcomes

    def decide(self, user: UserState, sc: UserScores, snapshot: ProfileSnapshot):
        ledger = Ledger.from_json(user.ledger)
        decision = decide(self.live.policy, decision_context(sc, snapshot), ledger)
        if decision is None:
            return
        self.decisions.inc()
        user.ledger = ledger.to_json()
        attribution = self.attribution(user)
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
        self.store_attribution(user, attribution)
        yield ACTIONS, action_row(decision)

    def attribute(self, user: UserState, event: Event):
        """A purchase converts the decisions awaiting it; a response is kept with its own."""
        if user.schedule.outcome_due is None:
            return  # nothing awaits an outcome
        if event.type is EventType.PURCHASE:
            attribution = self.attribution(user)
            outcomes = attribution.purchased(event.ts, event.data.total)
        elif event.type is EventType.OFFER_RESPONSE:
            attribution = self.attribution(user)
            attribution.responded(event.data.action_id, event.data.response)
            outcomes = []
        else:
            return
        self.store_attribution(user, attribution)
        for outcome in outcomes:
            yield OUTCOMES, outcome_row(outcome)

    def expire_outcomes(self, user: UserState, now: int):
        attribution = self.attribution(user)
        outcomes = attribution.expire(now)
        self.store_attribution(user, attribution)
        for outcome in outcomes:
            yield OUTCOMES, outcome_row(outcome)

    def attribution(self, user: UserState) -> Attribution:
        window = self.scoring.actions.attribution_window_ms
        return Attribution.from_json(user.profile.user_id, window, user.awaiting)

    @staticmethod
    def store_attribution(user: UserState, attribution: Attribution) -> None:
        user.awaiting = attribution.to_json()
        user.schedule.outcome_due = attribution.next_deadline()

    def forget_seen(self, before_ts: int) -> None:
        """Event ids older than the lateness horizon: any copy of them is refused as late."""
        old = [event_id for event_id, ts in self.seen.items() if ts < before_ts]
        for event_id in old:
            self.seen.remove(event_id)

    def purge(self, user: UserState, ctx) -> None:
        """Consent to analytics is gone: decisions awaiting an outcome are not measured."""
        self.purges.inc()
        if user.awaiting:
            for _ in json.loads(user.awaiting):
                self.dropped_outcomes.inc()
        self.clear(user, ctx)

    def clear(self, user: UserState, ctx) -> None:
        """Drops every piece of state of the current user and its pending timer."""
        if user.schedule.wake_at is not None:
            ctx.timer_service().delete_event_time_timer(user.schedule.wake_at)
        self.seen.clear()
        user.reset()


def late_dead_letter(record: Row, ts: int, watermark: int) -> Row:
    payload, topic, partition, offset = record
    letter = DeadLetter(
        Reason.LATE,
        f"event time {ts} is more than the allowed lateness behind watermark {watermark}",
        payload,
        SourceRef(topic, partition, offset),
    )
    return dead_letter_record(letter)


# ------------------------------------------------------------------ pipeline


def by_user(records: DataStream) -> KeyedStream:
    """KEYED_RAW_RECORD rows keyed by their user key, in the JVM: PyFlink's key_by would run a
    Python step per record in the source's task, taking the interpreter from build-profiles.
    Each user's records reach build-profiles through one channel, in the order their partition
    holds them (fire_due_timers relies on it)."""
    gateway = get_gateway()
    key_type = Types.ROW([Types.STRING()])
    j_keyed = records._j_data_stream.keyBy(
        gateway.jvm.KeyByKeySelector(), key_type.get_java_type_info()
    )
    return KeyedStream(j_keyed, runtime.RAW_RECORD, records)


def build_profiles(
    records: DataStream, contract: EventContract, s: ProfileSettings, scoring: ScoringSettings
) -> dict:
    """The profile stream and every side output of build-profiles, by name."""
    profiles = (
        by_user(records)
        .process(BuildProfiles(contract, s, scoring), PROFILE.row_type)
        .name("build-profiles")
        .uid("build-profiles")
        # The sinks (conversions, Kafka producers, JDBC batches) get threads of their own, off
        # the one thread that runs Python; their waits at flushes and checkpoints too.
        .disable_chaining()
    )
    streams = {"profiles": profiles}
    for name, tag in (
        ("archive", ARCHIVE),
        ("dead_letters", DEAD_LETTERS),
        ("sessions", SESSIONS),
        ("scores", SCORES),
        ("cohort_moves", COHORT_MOVES),
        ("leads", LEADS),
        ("actions", ACTIONS),
        ("outcomes", OUTCOMES),
    ):
        streams[name] = side_output(profiles, tag)
    return streams


def side_output(stream: DataStream, tag: OutputTag) -> DataStream:
    """The side output as the JVM holds it, typed by its tag. PyFlink's get_side_output puts a
    Python identity map after it, which takes every record into the interpreter and back."""
    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


@dataclass
class ProfileOutputs:
    archive: DataStream  # ARCHIVE_ROW
    dead_letters: DataStream  # KAFKA_RECORD_ROW: malformed and late records
    profiles: DataStream  # PROFILE.row_type, a changelog (row kinds) by user
    sessions: DataStream  # SESSION_ROW
    scores: DataStream  # SCORE.row_type, a changelog by user
    cohort_moves: DataStream  # MOVE.row_type
    leads: DataStream  # LEAD.row_type, a changelog by user
    actions: DataStream  # ACTION.row_type
    outcomes: DataStream  # OUTCOME.row_type


class ProfileSinks(Protocol):
    def write(self, outputs: ProfileOutputs) -> None:
        """Must consume every output: build-profiles fails on a side output nothing reads."""


def build_pipeline(
    env: StreamExecutionEnvironment,
    config: Settings,
    source: runtime.RawSource,
    sinks: ProfileSinks,
) -> None:
    # The source stamps records with their event time and emits watermarks (per Kafka partition
    # in production) and reads the user key; records are parsed where their user's state is.
    out = build_profiles(source(env), config.events, config.profile, scoring_settings(config))
    sinks.write(
        ProfileOutputs(
            out["archive"],
            out["dead_letters"],
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


def output_table(t: StreamTableEnvironment, stream: DataStream, output: Output) -> Table:
    """The stream of an output as a table. A deletable one is declared a full changelog keyed
    by user rather than an upsert one: an upsert source makes the planner keep every row in
    state to normalize it."""
    if not output.deletable:
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

    def write(self, outputs: ProfileOutputs) -> None:
        t, config = self.t_env, self.config
        statements = t.create_statement_set()
        events = sinks.postgres_table(t, config, "events_archive", "events_archive_sink", "events")
        statements.add_insert(events, t.from_data_stream(outputs.archive))
        letters = sinks.kafka_bytes_table(
            t, config, "dead_letters", config.kafka.topics.events_dlq, "profile-dlq"
        )
        statements.add_insert(letters, t.from_data_stream(outputs.dead_letters))
        sessions = sinks.postgres_table(
            t, config, "user_sessions_out", "user_sessions_sink", "user_sessions"
        )
        statements.add_insert(sessions, t.from_data_stream(outputs.sessions))
        topics = config.kafka.topics
        for stream, output, topic, pg_table in (
            (outputs.profiles, PROFILE, topics.profiles, "user_profiles"),
            (outputs.scores, SCORE, topics.scores, "user_scores"),
            (outputs.cohort_moves, MOVE, topics.cohort_moves, "cohort_moves"),
            (outputs.leads, LEAD, topics.lead_scores, "leads"),
            (outputs.actions, ACTION, topics.actions, "actions"),
            (outputs.outcomes, OUTCOME, topics.action_outcomes, "action_outcomes"),
        ):
            table = output_table(t, stream, output)
            kafka_table = sinks.user_records_table(
                t, config, f"{pg_table}_topic", topic, f"profile-{topic.name}", output.deletable
            )
            statements.add_insert(kafka_table, table.select(col("user_id"), col("record")))
            pg = sinks.postgres_table(t, config, f"{pg_table}_out", f"{pg_table}_sink", pg_table)
            statements.add_insert(pg, table.select(*(col(name) for name in output.names)))
        statements.attach_as_datastream()


def submit(
    config: Settings,
    start: dict[int, int] | None = None,
    stop: dict[int, int] | None = None,
    restore_from: str | None = None,
) -> JobClient:
    """Starts the job and returns at once; the client waits for it, cancels it or stops it."""
    return runtime.submit(
        SOURCE_GROUP, build_pipeline, ProductionSinks, config, start, stop, restore_from
    )


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
