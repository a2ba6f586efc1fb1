"""What the profile job writes, declared once: each output's columns with their types, whether a
purge deletes its rows, and how a record of it is made from what the per-user pipeline computed.

A record (`Emitted`) carries its typed columns (the PostgreSQL row) and, for an output bound for
Kafka, its value as compact JSON made in the same step, so that nothing downstream of the
per-user pipeline has to encode it again. The Flink adapter (jobs/profile.py) turns the column
types into Flink row types; the benchmark's peers write the same records.

Column types: text, bigint, int, double, boolean, json (text holding JSON), bytes."""

from __future__ import annotations

import json
from typing import NamedTuple

import orjson

from udfs.actions import Decision
from udfs.attribution import Outcome
from udfs.cohort_assignment import CohortMove
from udfs.consent import ANALYTICS, MARKETING, PERSONALIZATION
from udfs.events import DeadLetter, Event, SourceRef
from udfs.profile import PROFILE_COLUMNS, ProfileSnapshot
from udfs.recommend import Touch, bucket_key, item_key
from udfs.sessions import SessionSummary
from udfs.user_scores import Scored, UserScores

# Compact JSON, as json.dumps(separators=(",", ":")) writes it, in a fraction of the time:
# encoding the outputs was a fifth of the per-event work. NaN and infinities become null.
JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

PROFILE_TYPES = {
    **dict.fromkeys(("user_id", "top_category", "top_propensity"), "text"),
    **dict.fromkeys(("version", "as_of_ts", "events", "sessions", "purchase_count"), "bigint"),
    **dict.fromkeys(("rfm_r", "rfm_f", "rfm_m"), "int"),
    "dormant": "boolean",
}


# The scores record's `ranked` list: every score of the update, highest p first. A profile
# propensity (source "profile") has no model or version.
RANKED_SHAPE = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "score": {"type": "string"},
            "p": {"type": "number"},
            "source": {"type": "string"},
            "model": {"type": ["string", "null"]},
            "version": {"type": ["integer", "null"]},
        },
        "required": ["score", "p", "source", "model", "version"],
    },
}


def compact(value) -> str:
    return orjson.dumps(value, option=JSON_OPTIONS).decode()


class Output:
    """One kind of record. `topic`: the Kafka topic (its name in `kafka.topics`) it goes to, as
    JSON of its columns with the `json` ones spliced in (None: not written to Kafka); `table`
    and `key`: the PostgreSQL table it is upserted into, by those columns (None: Kafka only);
    `deletable`: a purge deletes its rows (a changelog keyed by its first column, user_id:
    upserts, and deletes that become PostgreSQL deletes and Kafka tombstones).

    What consumers and Flink SQL need to know of it is declared here too: `optional`, the
    columns that may be null (NULL-able in PostgreSQL, absent or null in JSON); `event_time`,
    the column holding its event time (epoch ms); `shapes`, the JSON Schema of each `json`
    column's content; `kafka_key`, the column whose text is the Kafka record's key;
    `record_id`, the columns that identify a record (the same input always gives the same id;
    default: the table's key), by which consumers drop repeats.

    Who its `user_id` names (docs/privacy.md): `PSEUDONYM`, an analytical output's keyed
    pseudonym of the user (udfs/pseudonyms.py); `PERSON`, the user's own id, which the system
    acting on the record needs, written only for users whose consent allows one of `purposes`
    (none: it is written whatever the consent, as an erasure must be)."""

    def __init__(
        self,
        name: str,
        columns: list[tuple[str, str]],
        topic: str | None,
        table: str | None,
        key: tuple[str, ...] = (),
        deletable: bool = False,
        optional: tuple[str, ...] = (),
        event_time: str | None = None,
        shapes: dict[str, dict] | None = None,
        kafka_key: str = "user_id",
        record_id: tuple[str, ...] | None = None,
        names_user: str | None = None,
        purposes: tuple[str, ...] = (),
        notes: dict[str, str] | None = None,
    ):
        self.name, self.columns, self.topic, self.deletable = name, columns, topic, deletable
        self.table, self.key = table, key
        self.names = [n for n, _ in columns]
        if deletable and self.names[0] != "user_id":
            raise ValueError("a deletable output is keyed by its first column, user_id")
        self.optional, self.event_time, self.shapes = frozenset(optional), event_time, shapes or {}
        self.kafka_key, self.record_id = kafka_key, record_id or key
        self.names_user, self.purposes = names_user, purposes
        self.notes = notes or {}  # column -> what consumers should know of it
        if (names_user is None) != ("user_id" not in self.names):
            raise ValueError(f"{name}: say who its user_id names (PSEUDONYM or PERSON)")
        named = self.optional | {event_time, kafka_key if topic else None} | set(self.shapes)
        named |= set(self.record_id) | set(self.notes)
        unknown = named - {None, *self.names}
        if unknown:
            raise ValueError(f"{name}: no such columns {sorted(unknown)}")
        self.raw_json = tuple(n for n, t in columns if t == "json")
        self._spliced = [(n, f',"{n}":'.encode()) for n in self.raw_json]

    @property
    def kafka(self) -> bool:
        return self.topic is not None

    def __repr__(self) -> str:
        return f"Output({self.name})"

    def record(self, *values) -> Emitted:
        return Emitted(self, values, self.encode(values) if self.kafka else None)

    def encode(self, values) -> bytes:
        """The columns as one JSON object, the `json` ones (JSON already) spliced in."""
        fields = dict(zip(self.names, values, strict=True))
        spliced = b"".join(
            prefix + (fields.pop(n) or "null").encode() for n, prefix in self._spliced
        )
        return orjson.dumps(fields, option=JSON_OPTIONS)[:-1] + spliced + b"}"

    def deletion(self, user_id: str) -> Emitted:
        return Emitted(self, (user_id, *([None] * (len(self.names) - 1))), None, True)


# Who an output's user_id names.
PSEUDONYM, PERSON = "pseudonym", "person"


class Emitted(NamedTuple):
    output: Output
    values: tuple  # the output's columns, in order
    value: bytes | None  # the Kafka value; None for a deletion and a PostgreSQL-only output
    delete: bool = False


ARCHIVE = Output(
    "archive",
    [
        ("event_id", "text"),
        ("user_id", "text"),
        ("session_id", "text"),
        ("type", "text"),
        ("ts_ms", "bigint"),
        ("schema_version", "int"),
        ("properties", "json"),
        ("context", "json"),  # minimized (udfs/privacy.py)
        ("source_topic", "text"),
        ("source_partition", "int"),
        ("source_offset", "bigint"),
    ],
    topic=None,
    table="events",
    key=("event_id",),
    optional=("context",),
    event_time="ts_ms",
    shapes={"properties": {"type": "object"}, "context": {"type": "object"}},
    names_user=PERSON,  # a pseudonym if privacy.pseudonymize_archive
    purposes=(ANALYTICS,),
)
# Kafka `events.dlq`: the key is the record's source coordinates, the value the letter's JSON.
DEAD_LETTERS = Output(
    "dead_letters", [("key", "bytes"), ("value", "bytes")], topic=None, table=None
)
PROFILES = Output(
    "profiles",
    [*((n, PROFILE_TYPES.get(n, "double")) for n in PROFILE_COLUMNS), ("details", "json")],
    topic="profiles",
    table="user_profiles",
    key=("user_id",),
    deletable=True,
    optional=(
        "top_category",
        "spend_mean",
        "days_since_purchase",
        "rfm_r",
        "rfm_f",
        "rfm_m",
        "rfm_standard_score",
    ),
    event_time="as_of_ts",
    shapes={"details": {"type": "object"}},
    record_id=("user_id", "version"),
    names_user=PSEUDONYM,
)
SESSIONS = Output(
    "sessions",
    [
        ("user_id", "text"),
        ("session_id", "text"),
        ("start_ts", "bigint"),
        ("end_ts", "bigint"),
        *((n, "int") for n in ("events", "page_views", "product_views", "searches")),
        *((n, "int") for n in ("cart_adds", "checkouts", "purchases")),
        ("revenue", "double"),
        ("mean_dwell_ms", "double"),
        ("max_scroll", "double"),
        ("abandoned", "boolean"),
    ],
    topic=None,
    table="user_sessions",
    key=("user_id", "session_id"),
    event_time="start_ts",
    names_user=PSEUDONYM,
)
SCORES = Output(
    "scores",
    [
        ("user_id", "text"),
        ("ts", "bigint"),
        ("event_id", "text"),
        ("profile_version", "bigint"),  # with user_id, the record's id
        ("model_version", "int"),
        ("cohort", "int"),
        ("cohort_name", "text"),
        ("dense_cohort", "int"),
        ("abandonment", "double"),
        ("drift", "double"),
        ("purchase", "double"),
        ("top_score", "text"),
        ("ranked", "json"),
    ],
    topic="scores",
    table="user_scores",
    key=("user_id",),
    deletable=True,
    optional=(
        "event_id",
        "model_version",
        "cohort",
        "cohort_name",
        "dense_cohort",
        "abandonment",
        "drift",
        "purchase",
    ),
    event_time="ts",
    shapes={"ranked": RANKED_SHAPE},
    record_id=("user_id", "profile_version"),
    names_user=PSEUDONYM,
)
COHORT_MOVES = Output(
    "cohort_moves",
    [
        ("move_id", "text"),
        ("user_id", "text"),
        ("ts", "bigint"),
        ("from_cohort", "int"),
        ("to_cohort", "int"),
        ("from_cohort_name", "text"),
        ("to_cohort_name", "text"),
        ("reason", "text"),
        ("model_version", "int"),
    ],
    topic="cohort_moves",
    table="cohort_moves",
    key=("move_id",),
    optional=("from_cohort", "from_cohort_name", "to_cohort_name"),
    event_time="ts",
    names_user=PSEUDONYM,
)
LEADS = Output(
    "leads",
    [
        ("user_id", "text"),
        ("ts", "bigint"),
        ("profile_version", "bigint"),  # with user_id, the record's id
        ("model_version", "int"),
        ("cohort_name", "text"),
        ("intent", "double"),
        ("capacity", "double"),
        ("score", "double"),
        ("base_intent", "double"),
        ("base_capacity", "double"),
        ("modifiers", "text"),
        # The experiment about lead scoring the user is in, and their arm (conf/policy.py).
        ("experiment", "text"),
        ("variant", "text"),
    ],
    topic="lead_scores",
    table="leads",
    key=("user_id",),
    deletable=True,
    optional=("model_version", "cohort_name", "experiment", "variant"),
    event_time="ts",
    record_id=("user_id", "profile_version"),
    names_user=PSEUDONYM,
)
ACTIONS = Output(
    "actions",
    [
        ("decision_id", "text"),
        ("user_id", "text"),
        ("ts", "bigint"),
        ("event_id", "text"),
        ("action", "text"),
        ("score_name", "text"),
        ("score", "double"),
        ("threshold", "double"),
        ("payload", "json"),
        ("experiment", "text"),
        ("variant", "text"),
        ("delivered", "boolean"),
        ("model_version", "int"),
        ("scores", "json"),
        ("arms", "text"),  # in an experiment: the version of its arms (conf/policy.py)
    ],
    topic="actions",
    table="actions",
    key=("decision_id",),
    optional=("event_id", "experiment", "variant", "model_version", "arms"),
    event_time="ts",
    shapes={"payload": {"type": "object"}, "scores": {"type": "object"}},
    names_user=PERSON,
    purposes=(MARKETING, PERSONALIZATION),
    notes={
        "user_id": "the user's own id, for the system that delivers the action; only for users"
        " whose consent allows every purpose the action declares (marketing, personalization)"
    },
)
OUTCOMES = Output(
    "outcomes",
    [
        ("decision_id", "text"),
        ("user_id", "text"),
        ("action", "text"),
        ("experiment", "text"),
        ("variant", "text"),
        ("delivered", "boolean"),
        ("decided_ts", "bigint"),
        ("converted", "boolean"),
        ("outcome_ts", "bigint"),
        ("revenue", "double"),
        ("response", "text"),
    ],
    topic="action_outcomes",
    table="action_outcomes",
    key=("decision_id",),
    optional=("experiment", "variant", "response"),
    event_time="decided_ts",
    names_user=PERSON,
    purposes=(MARKETING, PERSONALIZATION),
    notes={"user_id": "the user's own id, as in the action decided (topic actions)"},
)
# A lead score's outcome in an experiment about lead scoring: did its user purchase within
# `leads.horizon_ms` after it (models/lead_quality.py reports them).
LEAD_OUTCOMES = Output(
    "lead_outcomes",
    [
        ("user_id", "text"),
        ("profile_version", "bigint"),  # with user_id, the lead record's id
        ("experiment", "text"),
        ("variant", "text"),
        ("scored_ts", "bigint"),
        ("score", "double"),  # as served to the arm
        ("unmodified_score", "double"),  # without cohort modifiers
        ("converted", "boolean"),
        ("outcome_ts", "bigint"),  # the purchase's event time, or the end of the horizon
        ("revenue", "double"),
    ],
    topic="lead_outcomes",
    table="lead_outcomes",
    key=("user_id", "profile_version"),
    event_time="scored_ts",
    names_user=PSEUDONYM,
)
# The latest recommendation list of a user (udfs/recommend.py), from the ranking step.
RECOMMENDED_ITEM = {
    "type": "object",
    "properties": {
        "item_id": {"type": "string"},
        "score": {"type": "number"},
        "reasons": {
            "type": "array",
            "items": {"enum": ["neighbours", "content", "co_occurrence", "popularity"]},
        },
    },
    "required": ["item_id", "score", "reasons"],
}
RECOMMENDATIONS = Output(
    "recommendations",
    [
        ("user_id", "text"),
        ("ts", "bigint"),
        ("event_id", "text"),  # the event that asked for it; none for an offer of a timer
        ("blend", "text"),  # the blend of conf `recommendations.blends` that ranked it
        ("bucket", "int"),  # the bucket of the user's segment profile
        ("items", "json"),
    ],
    topic="recommendations",
    table="recommendations",
    key=("user_id",),
    deletable=True,
    optional=("event_id",),
    event_time="ts",
    shapes={"items": {"type": "array", "items": RECOMMENDED_ITEM}},
    record_id=("user_id", "ts", "blend"),
    names_user=PERSON,
    purposes=(PERSONALIZATION,),
)
# A user to erase from every table (jobs/erasure.py carries it out after the job's checkpoint
# has committed the rows before it), with why: `analytics_revoked` or `requested` (an
# erasure_request event, whose id is `request_id`), and `subject`, the pseudonym by which the
# analytical outputs name the user (the id itself where pseudonymization is off).
ERASURES = Output(
    "erasures",
    [
        ("user_id", "text"),
        ("ts", "bigint"),
        ("reason", "text"),
        ("request_id", "text"),
        ("subject", "text"),
    ],
    topic="erasures",
    table=None,
    optional=("request_id",),
    event_time="ts",
    record_id=("user_id", "ts"),
    names_user=PERSON,
    notes={"subject": "the user's pseudonym in the analytical outputs (their id if none)"},
)
# Messages between the profile job's steps, never written anywhere: item interactions to the
# knowledge step (keyed by item or bucket), requests for a list to the ranking step (by user).
TOUCHES = Output("touches", [("key", "text"), ("body", "json")], topic=None, table=None)
REQUESTS = Output(
    "requests", [("user_id", "text"), ("body", "json")], None, None, names_user=PERSON
)
# Written by the metrics job (jobs/metrics.py, Flink SQL): one row per metric, dimension value
# and window, and an alert where a window's value leaves the range of its trailing baseline.
METRICS = Output(
    "metrics",
    [
        ("metric", "text"),
        ("dimension", "text"),  # e.g. the event type of `events`; '' for none
        ("window_size", "text"),  # minute | hour
        ("window_start", "bigint"),
        ("window_end", "bigint"),
        ("value", "double"),
    ],
    topic="metrics",
    table="metrics",
    key=("metric", "dimension", "window_size", "window_start"),
    event_time="window_end",
    kafka_key="metric",
)
ALERTS = Output(
    "alerts",
    [
        ("alert_id", "text"),  # metric|dimension|window_size|window_start
        ("metric", "text"),
        ("dimension", "text"),
        ("window_size", "text"),
        ("window_start", "bigint"),
        ("window_end", "bigint"),
        ("observed", "double"),
        ("expected_low", "double"),
        ("expected_high", "double"),
        ("baseline_mean", "double"),
        ("baseline_windows", "int"),
        ("z_score", "double"),
        ("severity", "text"),  # warning | critical
    ],
    topic="alerts",
    table="alerts",
    key=("alert_id",),
    event_time="window_end",
    kafka_key="metric",
)
# What build-profiles emits (the per-user pipeline).
EMITTED = (
    ARCHIVE,
    DEAD_LETTERS,
    PROFILES,
    SESSIONS,
    SCORES,
    COHORT_MOVES,
    LEADS,
    LEAD_OUTCOMES,
    ACTIONS,
    OUTCOMES,
    ERASURES,
    TOUCHES,
    REQUESTS,
)
# What the profile job writes.
ALL = (*(o for o in EMITTED if o not in (TOUCHES, REQUESTS)), RECOMMENDATIONS)
# Every output with a declaration of its columns (dead letters have their own contract).
DECLARED = (*(o for o in ALL if o is not DEAD_LETTERS), METRICS, ALERTS)
# Column types in Flink SQL and in PostgreSQL (the migrations must agree: a test checks).
FLINK_SQL_TYPES = {
    "text": "STRING",
    "json": "STRING",
    "bigint": "BIGINT",
    "int": "INT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "bytes": "BYTES",
}
POSTGRES_TYPES = {
    "text": "text",
    "json": "jsonb",
    "bigint": "bigint",
    "int": "integer",
    "double": "double precision",
    "boolean": "boolean",
}


# ------------------------------------------------------------------ records


def dead_letter(letter: DeadLetter) -> Emitted:
    return Emitted(DEAD_LETTERS, (letter.dead_letter_id.encode(), letter.to_json()), None)


def archived(event: Event, source: SourceRef, subject: str) -> Emitted:
    """`subject`: who the row names (the id, or its pseudonym: privacy.pseudonymize_archive)."""
    properties = json.dumps(event.properties(), separators=(",", ":"))
    return ARCHIVE.record(
        event.event_id,
        subject,
        event.session_id,
        event.type.value,
        event.ts,
        event.schema_version,
        properties,
        compact(event.context.to_json()) if event.context is not None else None,
        source.topic,
        source.partition,
        source.offset,
    )


# An analytical record names its user by `subject` (udfs/pseudonyms.py), in its first column.


def profile(snapshot: ProfileSnapshot, subject: str) -> Emitted:
    c = snapshot.columns
    columns = (c[name] for name in PROFILE_COLUMNS[1:])
    return PROFILES.record(subject, *columns, compact(snapshot.details))


def session(s: SessionSummary, subject: str) -> Emitted:
    return SESSIONS.record(subject, *(getattr(s, name) for name in SESSIONS.names[1:]))


def scores(
    scored: Scored, version: int, names: dict[int, dict[int, str]], subject: str
) -> list[Emitted]:
    """The scores and cohort move (if any) of profile update `version`; `names`: cohort names
    by model version, then cohort."""
    sc = scored.scores
    learned = {t: p.p for t, p in sc.learned.items()}
    out = [
        SCORES.record(
            subject,
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
        )
    ]
    if scored.move is not None:
        out.append(cohort_move(subject, scored.move, names))
    return out


def lead(sc: UserScores, version: int, subject: str, arm: tuple | None = None) -> Emitted:
    """The lead score of profile update `version` (`arm`: the experiment about lead scoring and
    the variant the user is in)."""
    lead = sc.lead
    experiment, variant = arm or (None, None)
    return LEADS.record(
        subject,
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
        experiment,
        variant,
    )


def lead_outcome(o: Outcome, subject: str) -> Emitted:
    """The outcome of the lead score whose id (profile version) `o` awaited."""
    score, unmodified = o.scores
    return LEAD_OUTCOMES.record(
        subject,
        int(o.decision_id),
        o.experiment,
        o.variant,
        o.decided_ts,
        score,
        unmodified,
        o.converted,
        o.outcome_ts,
        o.revenue,
    )


def cohort_move(subject: str, move: CohortMove, names: dict[int, dict[int, str]]) -> Emitted:
    # Derived from the move itself, so a replay after a failure upserts the same row.
    move_id = f"{subject}|{move.ts}|{move.model_version}|{move.to_cohort}"
    return COHORT_MOVES.record(
        move_id,
        subject,
        move.ts,
        move.from_cohort,
        move.to_cohort,
        names.get(move.from_model_version, {}).get(move.from_cohort),
        names[move.model_version].get(move.to_cohort),
        move.reason,
        move.model_version,
    )


def erasure(user_id: str, ts: int, reason: str, request_id: str | None, subject: str) -> Emitted:
    return ERASURES.record(user_id, ts, reason, request_id, subject)


def user_deletions(subject: str) -> list[Emitted]:
    """A forgotten user's rows of every deletable output build-profiles writes (tombstones on
    the topics); the ranking step deletes the recommendations (udfs.recommend.FORGET)."""
    return [output.deletion(subject) for output in (PROFILES, SCORES, LEADS)]


def action(d: Decision) -> Emitted:
    return ACTIONS.record(
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
        d.arms,
    )


def outcome(o: Outcome) -> Emitted:
    return OUTCOMES.record(*(getattr(o, name) for name in OUTCOMES.names))


def touches(touch: Touch) -> list[Emitted]:
    """An item interaction, to its item's and its bucket's knowledge."""
    body = compact(touch.to_json())
    return [
        Emitted(TOUCHES, (item_key(touch.item), body), None),
        Emitted(TOUCHES, (bucket_key(touch.bucket), body), None),
    ]


def request(user_id: str, body: dict) -> Emitted:
    return Emitted(REQUESTS, (user_id, compact(body)), None)


def recommendations(user_id: str, ts: int, event_id, blend: str, bucket: int, items) -> Emitted:
    return RECOMMENDATIONS.record(
        user_id, ts, event_id, blend, bucket, compact([r.to_json() for r in items])
    )
