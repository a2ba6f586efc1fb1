import pytest

from conf import settings as settings_module
from conf.settings import ConfigError, LocalServer
from jobs import runtime, sinks


def test_local_environment_loads_with_every_topic(settings):
    names = [t.name for t in settings.kafka.topics.all()]
    assert names == [
        "events",
        "control",
        "events.dlq",
        "consent",
        "erasures",
        "profiles",
        "scores",
        "cohort-moves",
        "actions",
        "action-outcomes",
        "recommendations",
        "lead-scores",
        "lead-outcomes",
        "metrics",
        "alerts",
    ]
    assert settings.kafka.topics.events.partitions == 4


def test_the_control_topic_must_have_one_partition():
    with pytest.raises(ConfigError, match="exactly one partition"):
        overrides = {"kafka.topics.control.name": "control", "kafka.topics.control.partitions": 2}
        settings_module.load("local", overrides)


def test_cluster_environment_never_starts_local_services():
    cluster = settings_module.load("cluster")
    assert cluster.kafka.start_local_broker is False
    assert cluster.postgres.local_server is LocalServer.NONE


def test_bad_value_names_the_field_and_the_value():
    with pytest.raises(ConfigError) as err:
        settings_module.load(
            "local", {"flink.parallelism": 0, "kafka.topics.events.partitions": "x"}
        )
    message = str(err.value)
    assert "flink.parallelism" in message
    assert "kafka.topics.events.partitions" in message


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="flink.paralelism"):
        settings_module.load("local", {"flink.paralelism": 3})


def test_unknown_environment_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown environment 'staging'"):
        settings_module.load("staging")


def test_dsn_without_database_is_rejected():
    with pytest.raises(ConfigError, match="must name a database"):
        settings_module.load("local", {"postgres.dsn": "postgresql://u@h:5432"})


def test_environment_points_at_external_services(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://app:s3cret@db.internal:6432/behavior")
    loaded = settings_module.load("local")
    assert loaded.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert loaded.kafka.start_local_broker is False
    assert loaded.postgres.local_server is LocalServer.NONE
    assert loaded.postgres.parts["host"] == "db.internal"


def test_password_comes_from_environment_and_is_never_shown(monkeypatch):
    monkeypatch.setenv("POSTGRES_PASSWORD", "hunter2")
    loaded = settings_module.load("local")
    assert "hunter2" in loaded.postgres.conninfo()
    assert loaded.postgres.jdbc_options()["password"] == "hunter2"
    assert "hunter2" not in loaded.postgres.redacted_dsn
    assert "hunter2" not in loaded.postgres.jdbc_options()["url"]
    assert "hunter2" not in repr(loaded)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://behavior:Pa55-word@db.internal:5432",  # no database named
        "postgresql://behavior:Pa55-word@[db.internal/behavior",  # does not parse
        "host=db.internal password=Pa55-word port=5432",  # key=value form, no database
        "host=db.internal password='Pa55-word' dbname",  # key=value form, does not parse
    ],
)
def test_a_password_inside_the_dsn_never_reaches_a_validation_message(monkeypatch, dsn):
    monkeypatch.setenv("POSTGRES_DSN", dsn)
    with pytest.raises(ConfigError) as raised:
        settings_module.load("local")
    message = str(raised.value)
    assert "postgres.dsn" in message  # the error still names the field
    assert "Pa55-word" not in message
    assert "***" in message


def test_a_password_inside_the_dsn_is_used_but_never_shown(monkeypatch):
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://behavior:Pa55-word@db.internal:5432/b")
    loaded = settings_module.load("local")
    assert loaded.postgres.jdbc_options()["password"] == "Pa55-word"
    for shown in (repr(loaded), str(loaded), loaded.postgres.redacted_dsn):
        assert "Pa55-word" not in shown


def test_config_files_hold_no_secrets():
    from importlib import resources

    import yaml
    from psycopg.conninfo import conninfo_to_dict

    for name in ("local.yaml", "cluster.yaml"):
        data = yaml.safe_load(resources.files("conf").joinpath(name).read_text())
        assert "password" not in conninfo_to_dict(data["postgres"]["dsn"]), name
        assert "password" not in str(data).lower(), name


class StatementLog:
    """Stands in for a table environment: keeps the DDL the sink helpers run."""

    def __init__(self):
        self.statements = []

    def execute_sql(self, statement):
        self.statements.append(statement)


@pytest.mark.parametrize(
    "register",
    [
        sinks.kafka_bytes_table,
        lambda *args: sinks.user_records_table(*args, upsert=False),
        lambda *args: sinks.user_records_table(*args, upsert=True),
    ],
    ids=["bytes", "user-records", "user-records-upsert"],
)
def test_kafka_sinks_batch_as_configured(settings, register):
    tuned = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"sink_linger_ms": 250, "sink_batch_bytes": 65536}
            )
        }
    )
    t_env = StatementLog()
    register(t_env, tuned, "scores_out", tuned.kafka.topics.scores, "w")
    (ddl,) = t_env.statements
    assert "'properties.linger.ms' = '250'" in ddl
    assert "'properties.batch.size' = '65536'" in ddl
    assert "'sink.delivery-guarantee' = 'exactly-once'" in ddl


def test_the_kafka_source_lets_the_broker_hold_a_fetch_as_configured(settings):
    tuned = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"source_fetch_max_wait_ms": 35})}
    )
    assert runtime.KafkaRawSource(None, tuned).options()["properties.fetch.max.wait.ms"] == "35"
    assert settings_module.load("cluster").kafka.source_fetch_max_wait_ms == 500  # Kafka's own
