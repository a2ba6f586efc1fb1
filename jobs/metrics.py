"""The metrics job: the stream as a whole, in Flink SQL only (no Python on the record path).

Per-minute and per-hour windows over the events, dead-letter, actions and scores topics (counts
by event type and page, active users, the view -> cart -> checkout -> purchase funnel and its
conversion, the share of help and support pages, dead letters by reason, actions by kind and
variant, users per cohort) go to the `metrics` topic and table; windows that leave the range of
their trailing baseline (`metrics.alert_rules`) go to the `alerts` topic and table. Both topics
are written exactly once; the tables are upserted by key, so a restart converges.

Run it locally with `make metrics`, or on the cluster with `make submit JOB=metrics`."""

from __future__ import annotations

import argparse
import sys

import psycopg
from pyflink.common import Configuration
from pyflink.table import EnvironmentSettings, StatementSet, TableEnvironment

from conf import settings as settings_module
from conf.settings import AlertRule, Settings, redact_secrets
from jobs import runtime, sinks
from sql import catalog, flink_statement
from udfs import outputs
from udfs.events import EventType

NAME = "metrics"
UNITS = {"minute": "MINUTE", "hour": "HOUR"}


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# The metrics of each query (sql/flink/<query>.sql), so that an alert rule reads the one its
# metric comes from: an operator's watermark is the least of its inputs', and a quiet topic
# must not hold back the alerts on another.
METRICS_BY_QUERY = {
    "event_metric_windows": {
        "events",
        "event_rate",
        "page_views",
        "active_users",
        "funnel_users",
        "funnel_conversion",
        "checkout_conversion",
        "support_page_share",
    },
    "output_metric_windows": {"dead_letters", "actions", "cohort_users"},
}


def metric_windows(config: Settings, query: str) -> str:
    """One metrics query in every configured window size."""
    support = " OR ".join(f"url LIKE {sql_text(p)}" for p in config.metrics.support_pages)
    types = ", ".join(sql_text(t.value) for t in EventType)
    queries = [
        flink_statement(
            query,
            window_size=size,
            unit=UNITS[size],
            event_types=types,
            support_page=f"({support or 'FALSE'})",
        )
        for size in config.metrics.window_sizes
    ]
    return union_all(queries)


def query_of(metric: str) -> str:
    for query, metrics in METRICS_BY_QUERY.items():
        if metric in metrics:
            return query
    known = sorted(set().union(*METRICS_BY_QUERY.values()))
    raise ValueError(f"alert rule on unknown metric {metric!r}; metrics: {', '.join(known)}")


def union_all(queries: list[str]) -> str:
    return "\nUNION ALL\n".join(f"SELECT * FROM (\n{q}\n)" for q in queries)


def alert_query(rule: AlertRule, metric_windows_view: str) -> str:
    """The alerts of one rule over the view of the metrics its metric is one of."""
    direction = {
        "up": "(`value` - mean) / scale",
        "down": "(mean - `value`) / scale",
        "both": "ABS(`value` - mean) / scale",
    }[rule.direction]
    return flink_statement(
        "alert_rule",
        metric=rule.metric,
        dimension=rule.dimension,
        window_size=rule.window_size,
        baseline_windows=str(rule.baseline_windows),
        min_baseline_windows=str(rule.min_baseline_windows),
        warning_z=repr(rule.warning_z),
        critical_z=repr(rule.critical_z),
        min_scale=repr(rule.min_scale),
        min_relative_scale=repr(rule.min_relative_scale),
        metric_windows=metric_windows_view,
        outside=f"{direction} >= {rule.warning_z!r}",
    )


def create_environment(config: Settings) -> TableEnvironment:
    runtime.reporters_on_local_classpath(config)
    conf = Configuration()
    for key, value in config.flink.reporter_options().items():
        conf.set_string(key, value)
    conf.set_string("pipeline.name", NAME)
    conf.set_string("parallelism.default", str(config.flink.parallelism))
    conf.set_string("execution.checkpointing.interval", f"{config.flink.checkpoint_interval_ms} ms")
    conf.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
    conf.set_string("restart-strategy.type", "exponential-delay")
    settings = EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf)
    return TableEnvironment.create(settings.build())


def build(t_env: TableEnvironment, config: Settings) -> StatementSet:
    """Sources (the topics, sql/catalog.py), the metrics and alerts queries, and their sinks."""
    catalog.configure(t_env, config)
    t_env.execute_sql(f"CREATE DATABASE IF NOT EXISTS {catalog.KAFKA_DATABASE}")
    for statement in catalog.topic_statements(config, group=NAME):
        t_env.execute_sql(statement)
    for query in METRICS_BY_QUERY:
        t_env.execute_sql(f"CREATE TEMPORARY VIEW {query} AS {metric_windows(config, query)}")
    statements = t_env.create_statement_set()
    metric_columns = ", ".join(f"`{n}`" for n in outputs.METRICS.names)
    metrics = union_all([f"SELECT {metric_columns} FROM {q}" for q in METRICS_BY_QUERY])
    rules = config.metrics.alert_rules
    alerts = union_all([alert_query(rule, query_of(rule.metric)) for rule in rules])
    for output, query in ((outputs.METRICS, metrics), (outputs.ALERTS, alerts)):
        if not query:
            continue
        topic = getattr(config.kafka.topics, output.topic)
        kafka = sinks.json_topic_table(t_env, config, f"{output.name}_topic", topic, output, NAME)
        table = sinks.postgres_table(t_env, config, f"{output.name}_table", output)
        for sink in (kafka, table):
            statements.add_insert_sql(f"INSERT INTO {sink} {query}")
    return statements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.metrics", description=__doc__)
    parser.parse_args(argv)
    config = settings_module.load_or_exit()
    try:  # fail now, with the reason, rather than in the sink's first flush
        psycopg.connect(config.postgres.conninfo(), connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        raise SystemExit(f"error: PostgreSQL does not answer: {redact_secrets(str(exc))}") from None
    t_env = create_environment(config)
    try:
        job = build(t_env, config)
    except ValueError as exc:  # a rule on a metric no query makes
        raise SystemExit(f"error: {exc}") from None
    result = job.execute()
    print(f"metrics job {result.get_job_client().get_job_id()} running", file=sys.stderr)
    result.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
