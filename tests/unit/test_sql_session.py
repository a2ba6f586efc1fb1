"""What a Flink SQL session is made of, without a JVM: scripts split into statements, the
runtime mode switch, the tables registered per topic, and the metrics job's queries."""

from importlib import resources

import pytest

from conf.settings import OUTPUT_TOPICS
from jobs import metrics, sql
from sql import catalog


def test_a_script_splits_into_statements_without_comments():
    script = """
    -- a comment; with a semicolon
    SELECT 'a;b' AS x FROM t;  /* another; */
    SET 'execution.runtime-mode' = 'streaming';

    INSERT INTO s SELECT * FROM t
    """
    assert sql.statements(script) == [
        "SELECT 'a;b' AS x FROM t",
        "SET 'execution.runtime-mode' = 'streaming'",
        "INSERT INTO s SELECT * FROM t",
    ]


def test_the_runtime_mode_is_read_from_set_and_checked():
    assert sql.runtime_mode("SET 'execution.runtime-mode' = 'Batch'") == "batch"
    assert sql.runtime_mode("SET 'table.local-time-zone' = 'UTC'") is None
    with pytest.raises(ValueError, match="'batch' or 'streaming'"):
        sql.runtime_mode("SET 'execution.runtime-mode' = 'fast'")


def test_every_output_topic_and_the_events_get_a_kafka_table_with_a_watermark(settings):
    statements = catalog.topic_statements(settings)
    names = [s.split("kafka.`", 1)[1].split("`", 1)[0] for s in statements]
    assert sorted(names) == sorted(["events", *OUTPUT_TOPICS])
    assert all("WATERMARK FOR `event_time`" in s for s in statements)
    events = statements[names.index("events")]
    for field in ("event_id", "url", "items", "total", "purposes", "response"):
        assert f"`{field}`" in events


def test_an_alert_rule_on_an_unknown_metric_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown metric 'conversoin'.*checkout_conversion"):
        metrics.query_of("conversoin")


@pytest.mark.parametrize("query", metrics.METRICS_BY_QUERY)
def test_each_query_makes_exactly_the_metrics_it_is_said_to(query):
    text = resources.files("sql").joinpath("flink", f"{query}.sql").read_text()
    made = {line.split("'")[1] for line in text.splitlines() if line.strip().startswith("SELECT '")}
    assert made == metrics.METRICS_BY_QUERY[query]


def test_an_alert_query_carries_its_rule(settings):
    rule = settings.metrics.alert_rules[0]
    query = metrics.alert_query(rule, "event_metric_windows")
    assert f"metric = '{rule.metric}'" in query
    assert f"ROWS BETWEEN {rule.baseline_windows} PRECEDING" in query
    assert f">= {rule.warning_z!r}" in query


def test_a_flink_error_is_told_by_its_innermost_message():
    error = RuntimeError(
        "An error occurred while calling o8.executeSql.\n"
        ": org.apache.flink.table.api.ValidationException: SQL validation failed. Object x\n"
        "Caused by: org.apache.calcite.sql.validate.SqlValidatorException: Object 'nowhere'"
        " not found\n"
    )
    assert sql.first_line(error) == "Object 'nowhere' not found"
