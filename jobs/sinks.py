"""Production sink tables shared by the jobs: Kafka topics written exactly once as raw key/value
bytes, and PostgreSQL tables written through Flink's JDBC connector (upserts by primary key)."""

from __future__ import annotations

from pyflink.table import StreamTableEnvironment

from conf.settings import Settings, Topic
from sql import flink_statement, flink_table, with_options
from udfs import outputs


def kafka_options(config: Settings, topic: Topic, writer: str) -> dict[str, str]:
    """Raw key and value bytes written in Kafka transactions, batched. `writer` names the
    transactional ids, so it must be unique per job and sink."""
    kafka = config.kafka
    return {
        "topic": topic.name,
        "properties.bootstrap.servers": kafka.bootstrap_servers,
        "properties.transaction.timeout.ms": str(kafka.transaction_timeout_ms),
        "key.format": "raw",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "exactly-once",
        "properties.linger.ms": str(kafka.sink_linger_ms),
        "properties.batch.size": str(kafka.sink_batch_bytes),
        "sink.transactional-id-prefix": f"{kafka.consumer_group}-{writer}",
    }


def kafka_bytes_table(
    t_env: StreamTableEnvironment, config: Settings, table: str, topic: Topic, writer: str
) -> str:
    """Registers `table` (key BYTES, value BYTES) writing to `topic`."""
    options = {"connector": "kafka", **kafka_options(config, topic, writer), "key.fields": "key"}
    t_env.execute_sql(
        flink_statement("keyed_bytes_sink", table=table, options=with_options(options))
    )
    return table


def user_records_table(
    t_env: StreamTableEnvironment,
    config: Settings,
    table: str,
    topic: Topic,
    writer: str,
    upsert: bool,
) -> str:
    """Registers `table` (user_id STRING, record BYTES) writing to `topic`, keyed by user id.
    `upsert`: a changelog by user goes in (upsert-kafka): a deleted row becomes a tombstone."""
    options = kafka_options(config, topic, writer)
    if upsert:
        options = {"connector": "upsert-kafka", **options}
        ddl = "user_records_upsert_sink"
    else:
        options = {"connector": "kafka", **options, "key.fields": "user_id"}
        ddl = "user_records_sink"
    t_env.execute_sql(flink_statement(ddl, table=table, options=with_options(options)))
    return table


def json_topic_table(
    t_env: StreamTableEnvironment,
    config: Settings,
    table: str,
    topic: Topic,
    output: outputs.Output,
    writer: str,
) -> str:
    """Registers `table` writing `output`'s columns as JSON to `topic` (its contract), keyed by
    the text of its `kafka_key` column."""
    options = {
        "connector": "kafka",
        **kafka_options(config, topic, f"{writer}-{topic.name}"),
        "key.format": "raw",
        "key.fields": output.kafka_key,
        "value.format": "json",
        "value.fields-include": "ALL",
        # Every column is present in the contract's JSON, null or not.
        "value.json.encode.ignore-null-fields": "false",
    }
    columns = [(name, outputs.FLINK_SQL_TYPES[t]) for name, t in output.columns]
    t_env.execute_sql(flink_table(table, columns, (), with_options(options)))
    return table


def postgres_table(
    t_env: StreamTableEnvironment, config: Settings, table: str, output: outputs.Output
) -> str:
    """Registers `table`, writing `output` to its PostgreSQL table (upserts by its key); the
    DDL comes from the output's declaration."""
    options = {
        "connector": "jdbc",
        "table-name": output.table,
        **config.postgres.jdbc_options(),
        "sink.buffer-flush.max-rows": "2000",
        "sink.buffer-flush.interval": "1s",
        "sink.max-retries": "5",
    }
    columns = [(name, outputs.FLINK_SQL_TYPES[t]) for name, t in output.columns]
    t_env.execute_sql(flink_table(table, columns, output.key, with_options(options)))
    return table
