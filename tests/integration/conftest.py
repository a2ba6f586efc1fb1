import json
import random
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.sql
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conf import settings as settings_module
from conf import stack
from conf.settings import OUTPUT_TOPICS
from jobs import metrics as metrics_job
from jobs import profile as profile_job
from jobs.local_run import read_dead_letters
from jobs.publish import Publisher, PublishReport, iter_topic
from models.generator import EventGenerator, History, with_hostile_records
from udfs.events import DeadLetter, Reason
from udfs.timeunits import DAY_MS, HOUR_MS

TEST_DATABASE = "behavior_test"


@pytest.fixture(scope="session")
def local_stack(settings):
    """The real broker and PostgreSQL (started when nothing answers), with a fresh database of
    the tests' own so earlier runs and the project's `behavior` database never interfere."""
    stack.up(settings)
    p = settings.postgres.parts
    test_settings = settings_module.load(
        "local",
        {"postgres.dsn": f"postgresql://{p['user']}@{p['host']}:{p['port']}/{TEST_DATABASE}"},
    )
    admin = settings.postgres.conninfo(settings.postgres.admin_database)
    with psycopg.connect(admin, autocommit=True) as conn:
        # The tests' databases, with those of single tests an interrupted run left behind.
        for (name,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
            (TEST_DATABASE, f"{TEST_DATABASE}\\_%"),
        ).fetchall():
            drop_database(conn, name)
    stack.ensure_database(test_settings)
    stack.apply_migrations(test_settings)
    return test_settings


@pytest.fixture
def own_outputs(local_stack):
    """The test stack with output topics, transactional ids and a database of this test's own.
    The local broker never times a transaction out, so one left open on a shared topic by
    another job would hold this test's read_committed reads back for good; and a test that
    compares its tables with its topics must not see another test's rows."""
    with outputs_of_own(local_stack) as own:
        yield own


@pytest.fixture
def reference_outputs(local_stack):
    """A second set of own outputs: for a reference run the test compares with."""
    with outputs_of_own(local_stack) as own:
        yield own


@contextmanager
def outputs_of_own(local_stack, topics=(*OUTPUT_TOPICS, "control", "consent")):
    """Own `topics` (default: the outputs, control and consent), transactional ids and
    database."""
    tag = uuid.uuid4().hex[:8]
    p = local_stack.postgres.parts
    dsn = f"postgresql://{p['user']}@{p['host']}:{p['port']}/{TEST_DATABASE}_{tag}"
    postgres = local_stack.postgres.model_copy(update={"dsn": dsn})
    own = local_stack.with_own_topics(tag, topics).model_copy(update={"postgres": postgres})
    stack.ensure_topics(own)
    stack.ensure_database(own)
    stack.apply_migrations(own)
    try:
        yield own
    finally:
        admin = own.postgres.conninfo(own.postgres.admin_database)
        with psycopg.connect(admin, autocommit=True) as conn:
            drop_database(conn, own.postgres.parts["dbname"])


def drop_database(conn, name: str) -> None:
    conn.execute(
        psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            psycopg.sql.Identifier(name)
        )
    )


def allowing(events: list[dict], purpose: str, settings) -> set[str]:
    """The users whose consent allows `purpose` at the end of `events` (what they said last of
    it, or the regime's default)."""
    said: dict[str, tuple[int, bool]] = {}
    for e in events:
        if e["type"] != "consent_update" or purpose not in e["purposes"]:
            continue
        if e["user_id"] not in said or said[e["user_id"]][0] <= e["ts"]:
            said[e["user_id"]] = (e["ts"], e["purposes"][purpose])
    default = settings.privacy.defaults[purpose]
    return {e["user_id"] for e in events if said.get(e["user_id"], (0, default))[1]}


def without_recommendations(settings):
    """`settings` with recommendations off: for tests of other things, so that their job runs
    skip the two operators the recommendations add (their own tests, the crash, upgrade,
    security, cluster and stream runs keep them)."""
    off = settings.recommendations.model_copy(update={"enabled": False})
    return settings.model_copy(update={"recommendations": off})


def publish(settings, records):
    """records: iterable of (key or None, bytes). Returns the PublishReport of this batch."""
    topic = settings.kafka.topics.events
    publisher = Publisher(
        settings.kafka.bootstrap_servers, topic.name, topic.partitions, label="test"
    )
    for key, value in records:
        publisher.send(key, value)
    return publisher.close()


def archived(settings, batch: PublishReport) -> list[tuple]:
    """(event_id, source_partition, source_offset) rows whose source lies in this batch."""
    rows = []
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        for partition, stop in batch.end_offsets.items():
            rows += conn.execute(
                "SELECT event_id, source_partition, source_offset FROM events"
                " WHERE source_topic = %s AND source_partition = %s"
                " AND source_offset >= %s AND source_offset < %s",
                (batch.topic, partition, batch.start_offsets[partition], stop),
            ).fetchall()
    return rows


def archived_ids(settings, event_ids) -> set[str]:
    """Which of these event ids the archive holds."""
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        found = conn.execute(
            "SELECT event_id FROM events WHERE event_id = ANY(%s)", (list(event_ids),)
        ).fetchall()
    return {event_id for (event_id,) in found}


def dead_letters(settings, source_topic, contains) -> list[DeadLetter]:
    """Every committed dead letter whose source satisfies `contains(partition, offset)`."""
    return list(read_dead_letters(settings, source_topic, contains).values())


@pytest.fixture
def seeded_rng():
    return random.Random(2024)


def user_key(raw: bytes) -> str | None:
    try:
        key = json.loads(raw)["user_id"]
        key.encode("utf-8")
        return key
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def topic_records(settings, topic=None, isolation="read_committed") -> list:
    """Every record of a topic (default: profiles) a reader with this isolation level gets, in
    offset order per partition. End offsets cannot be trusted on the local broker, so the test
    reads everything (the end is 15 s without a record: the local broker can pause for seconds
    when the machine is busy) and picks its own records by event time."""
    topic = topic or settings.kafka.topics.profiles
    return list(iter_topic(settings.kafka.bootstrap_servers, topic.name, isolation))


# ------------------------------------------------------------------ one shared stream run

# The shared run's own stretch of event time.
STREAM_RUN_START_MS = 1_775_001_600_000  # 2026-04-01T00:00:00Z
# Hostile records the metrics job must skip (not a JSON object of a known event type with a
# plausible time); the run mixes in only these, so the metrics can be checked exactly against
# the valid events. Other contract breaches with a known type and a plausible time are counted
# by the metrics (docs/sql-and-metrics.md).
SKIPPED_BY_METRICS = {
    Reason.INVALID_JSON,
    Reason.INVALID_ENCODING,
    Reason.NOT_AN_OBJECT,
    Reason.UNKNOWN_TYPE,
    Reason.BAD_TIMESTAMP,
}


@dataclass
class StreamRun:
    """Generated events (with hostile records) through the profile job and the metrics job,
    into topics and a database of their own: the run the SQL, contract and metrics tests read."""

    settings: settings_module.Settings
    history: History
    hostile: Counter
    batch: PublishReport
    scraped: dict[str, list]  # metric family -> samples Prometheus read while the job ran

    @property
    def events(self) -> list[dict]:
        return self.history.events


class PrometheusScraper:
    """Reads every endpoint of a port range (`flink.prometheus_ports`) once a second while a job
    runs, as Prometheus would, keeping each metric family's latest samples."""

    def __init__(self, ports: str):
        low, high = (int(p) for p in ports.split("-"))
        self.ports = range(low, high + 1)
        self.families: dict[str, list] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._scrape, daemon=True)

    def _scrape(self) -> None:
        while not self.stopped.wait(1.0):
            for port in self.ports:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                        text = r.read().decode()
                except OSError:
                    continue
                for family in text_string_to_metric_families(text):
                    if family.samples:
                        self.families[family.name] = family.samples

    def __enter__(self) -> "PrometheusScraper":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(10)


def policy_offering_recommendations_over(shipped: str, drift: float, folder: Path) -> str:
    """The `shipped` action policy with the offer of recommendations made above `drift`."""
    policy = yaml.safe_load(Path(shipped).read_text())
    for action in policy["actions"]:
        if action["name"] == "recommendation_offer":
            action["threshold"] = drift
    path = folder / "actions.yaml"
    path.write_text(yaml.safe_dump(policy))
    return str(path)


# The drift of the stream run's users stays under 0.05 (four days of new users), so its policy
# offers recommendations above this instead of the shipped 0.8.
STREAM_RUN_DRIFT_THRESHOLD = 0.04
STREAM_RUN_LEAD_HORIZON_MS = DAY_MS


@pytest.fixture(scope="session")
def stream_run(local_stack, trained, tmp_path_factory):
    with outputs_of_own(local_stack, ("events", *OUTPUT_TOPICS, "control", "consent")) as own:
        models = own.models.model_copy(update={"directory": str(trained.registry.directory)})
        generator = own.generator.model_copy(
            update={"start_ts_ms": STREAM_RUN_START_MS, "support_page_rate": 0.03, "late_rate": 0}
        )
        folder = tmp_path_factory.mktemp("stream-run")
        actions_file = policy_offering_recommendations_over(
            own.actions.actions_file, STREAM_RUN_DRIFT_THRESHOLD, folder
        )
        actions = own.actions.model_copy(update={"actions_file": actions_file})
        # Lead scores' outcomes within the four days (tests/integration/test_lead_experiment.py).
        leads = own.leads.model_copy(update={"horizon_ms": STREAM_RUN_LEAD_HORIZON_MS})
        settings = own.model_copy(
            update={"models": models, "generator": generator, "actions": actions, "leads": leads}
        )
        history = EventGenerator(generator, users=80, days=4, seed=4242).generate()
        bounds = (settings.events.min_ts_ms, history.events[-1]["ts"] + DAY_MS)
        records = [
            (key, value, reason)
            for key, value, reason in with_hostile_records(history.events, 0.03, 5, bounds)
            if reason is None or reason in SKIPPED_BY_METRICS
        ]
        batch = publish(settings, [(key, value) for key, value, _ in records])
        with PrometheusScraper(settings.flink.prometheus_ports) as prometheus:
            profile_job.run(settings, *batch.bounds())
        hostile = Counter(reason for _, _, reason in records if reason is not None)
        run = StreamRun(settings, history, hostile, batch, prometheus.families)
        closed = closed_hours(run.events, settings)
        run_metrics_job(settings, lambda: hourly_event_windows(settings, closed) == len(closed))
        yield run


@pytest.fixture(scope="session")
def stream_topics(stream_run) -> dict[str, list]:
    return output_topic_records(stream_run.settings)


def output_topic_records(settings) -> dict[str, list]:
    """Every committed record of every output topic, by topic (its name in `kafka.topics`),
    read all at once."""
    topics = settings.kafka.topics
    with ThreadPoolExecutor(len(OUTPUT_TOPICS)) as pool:
        read = {
            name: pool.submit(topic_records, settings, getattr(topics, name))
            for name in OUTPUT_TOPICS
        }
        return {name: future.result() for name, future in read.items()}


def config_file(settings, folder) -> str:
    """`settings` as a file for BEHAVIOR_CONFIG, so a process of its own reads the same topics
    and database."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return str(path)


@pytest.fixture(scope="module")
def flink_cluster(local_stack):
    was_running = stack.cluster_answers(local_stack)
    print(stack.cluster_up(local_stack))
    yield local_stack
    if not was_running:
        stack.cluster_down(local_stack)


def closed_hours(events: list[dict], settings, margin_ms: int = 6 * 3_600_000) -> set[int]:
    """Starts of the hours with events that surely closed: ending `margin_ms` before the last
    event (every partition has later events, so the watermark passed them)."""
    cutoff = max(e["ts"] for e in events) - margin_ms
    return {
        e["ts"] // HOUR_MS * HOUR_MS
        for e in events
        if e["ts"] // HOUR_MS * HOUR_MS + HOUR_MS <= cutoff
    }


def hourly_event_windows(settings, starts: set[int]) -> int:
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        return conn.execute(
            "SELECT count(*) FROM metrics WHERE metric = 'event_rate' AND window_size = 'hour'"
            " AND window_start = ANY(%s)",
            (sorted(starts),),
        ).fetchone()[0]


def run_metrics_job(settings, done, timeout_s: float = 300.0) -> None:
    """Run the metrics job until `done()`, then a few checkpoints more (its Kafka records are
    committed on checkpoints), and cancel it."""
    t_env = metrics_job.create_environment(settings)
    client = metrics_job.build(t_env, settings).execute().get_job_client()
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            assert time.monotonic() < deadline, "the metrics job did not write the windows"
            time.sleep(2)
        time.sleep(3 * settings.flink.checkpoint_interval_ms / 1000)
    finally:
        client.cancel().result()
