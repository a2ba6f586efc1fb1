"""What every job shares: the events topic as a source of raw records, the execution
environment (checkpoints, restarts, Python execution), start and stop offsets, restoring from a
checkpoint or savepoint, draining a bounded run, stopping on a signal with a savepoint, and the
command line. A job module builds its pipeline and calls `submit`, `wait_for_end` and
`offsets_command` from here."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pyflink
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from py4j.protocol import Py4JJavaError
from pyflink.common import Configuration, JobClient, JobStatus, Types
from pyflink.datastream import (
    CheckpointingMode,
    DataStream,
    StreamExecutionEnvironment,
)
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, StreamTableEnvironment
from pyflink.table.expressions import col, row

from conf import settings as settings_module
from conf.settings import Flink as FlinkSettings
from conf.settings import Settings
from sql import flink_statement, with_options

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
RAW_RECORD = Types.ROW_NAMED(
    ["payload", "topic", "partition", "offset"], [BYTES, Types.STRING(), Types.INT(), Types.LONG()]
)
RAW_RECORD_SQL = DataTypes.ROW(
    [
        DataTypes.FIELD("payload", DataTypes.BYTES()),
        DataTypes.FIELD("topic", DataTypes.STRING()),
        DataTypes.FIELD("partition", DataTypes.INT()),
        DataTypes.FIELD("offset", DataTypes.BIGINT()),
    ]
)
# A raw record with the user it claims to be about (its JSON `user_id`, read in the source; ''
# when there is none), so a job can key records by user without a Python step.
KEYED_RAW_RECORD = Types.ROW_NAMED(["user_key", "record"], [Types.STRING(), RAW_RECORD])
# Builds the stream of KEYED_RAW_RECORD rows, stamped with their event time and followed by
# watermarks (KafkaRawSource in production, collections in the pipeline tests).
RawSource = Callable[[StreamExecutionEnvironment], DataStream]


def offsets_option(offsets: dict[int, int]) -> str:
    return ";".join(f"partition:{p},offset:{o}" for p, o in sorted(offsets.items()))


class KafkaRawSource:
    """The events topic as raw bytes with coordinates, via the Kafka table connector's metadata,
    each with its JSON `user_id` read in the JVM (KEYED_RAW_RECORD); records carry their event
    time and the source emits watermarks per Kafka partition.

    Unbounded from the group's committed offsets by default; bounded to [start, stop) per
    partition when both are given (used for replays and the local run).
    """

    def __init__(
        self,
        t_env: StreamTableEnvironment,
        config: Settings,
        start: dict[int, int] | None = None,
        stop: dict[int, int] | None = None,
        group: str = "profile",
        ends_with_drain: bool = False,
    ):
        self.t_env, self.config, self.start, self.stop = t_env, config, start, stop
        self.group, self.ends_with_drain = group, ends_with_drain

    def options(self) -> dict[str, str]:
        """The Kafka table connector's options."""
        kafka = self.config.kafka
        options = {
            "connector": "kafka",
            "topic": kafka.topics.events.name,
            "properties.bootstrap.servers": kafka.bootstrap_servers,
            "properties.group.id": f"{kafka.consumer_group}-{self.group}",
            "properties.isolation.level": "read_committed",
            "properties.auto.offset.reset": "earliest",
            "properties.fetch.max.wait.ms": str(kafka.source_fetch_max_wait_ms),
            "scan.startup.mode": "group-offsets",
            "format": "raw",
        }
        if self.start is not None:
            options["scan.startup.mode"] = "specific-offsets"
            options["scan.startup.specific-offsets"] = offsets_option(self.start)
        if self.stop is not None:
            options["scan.bounded.mode"] = "specific-offsets"
            options["scan.bounded.specific-offsets"] = offsets_option(self.stop)
        profile = self.config.profile
        # Flink drops the final watermark of a drain from a source that is idle then
        # (FLINK-40499), and timers due after the last event would never fire: a run that ends
        # with a drain keeps its source active, at the cost of event time waiting for the
        # slowest partition while it runs.
        if profile.idleness_ms and not self.ends_with_drain:
            options["scan.watermark.idle-timeout"] = f"{profile.idleness_ms} ms"
        return options

    def __call__(self, env: StreamExecutionEnvironment) -> DataStream:
        profile, contract = self.config.profile, self.config.events
        self.t_env.execute_sql(
            flink_statement(
                "events_raw_source",
                table=self.table,
                options=with_options(self.options()),
                min_ts_ms=str(contract.min_ts_ms),
                max_future_skew_ms=str(contract.max_future_skew_ms),
                out_of_orderness_s=f"{profile.out_of_orderness_ms / 1000:.3f}",
            )
        )
        table = self.t_env.from_path(self.table)
        record = [col("payload"), col("topic"), col("partition"), col("offset")]
        keyed = table.select(col("user_key"), row(*record).cast(RAW_RECORD_SQL).alias("record"))
        stream = self.t_env.to_data_stream(keyed)
        # The same rows, declared with the row type a keyed Python operator insists on.
        stream._j_data_stream.getTransformation().setOutputType(
            KEYED_RAW_RECORD.get_java_type_info()
        )
        return stream

    @property
    def table(self) -> str:
        return f"events_raw_{self.group}"


def checkpoint_uri(flink: FlinkSettings) -> str:
    if "://" in flink.checkpoint_dir:
        return flink.checkpoint_dir
    return Path(flink.checkpoint_dir).resolve().as_uri()


def savepoint_uri(flink: FlinkSettings) -> str:
    return f"{checkpoint_uri(flink)}/savepoints"


def latest_snapshot(flink: FlinkSettings) -> str | None:
    """The newest complete checkpoint or savepoint under the (local) checkpoint folder, across
    jobs: what `--restore latest` resumes from."""
    root = Path(flink.checkpoint_dir.removeprefix("file://"))
    complete = [
        m.parent
        for pattern in ("*/chk-*/_metadata", "savepoints/*/_metadata")
        for m in root.glob(pattern)
    ]
    if not complete:
        return None
    return str(max(complete, key=lambda p: p.joinpath("_metadata").stat().st_mtime))


def reporters_on_local_classpath(config: Settings) -> None:
    """A cluster loads the Prometheus reporter from PyFlink's plugins folder; a local
    MiniCluster finds reporters only on its JVM's classpath, which PyFlink's gateway extends
    by HADOOP_CLASSPATH. So the reporter's jar goes there, before the JVM starts."""
    if config.flink.prometheus_ports is None:
        return
    plugins = Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus"
    jars = [str(jar) for jar in plugins.glob("flink-metrics-prometheus-*.jar")]
    present = os.environ.get("HADOOP_CLASSPATH", "")
    missing = [jar for jar in jars if jar not in present.split(os.pathsep)]
    if missing:
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(filter(None, [present, *missing]))


def create_environment(
    config: Settings, restore_from: str | None = None
) -> StreamExecutionEnvironment:
    """The job's environment; `restore_from`: a checkpoint or savepoint to start from."""
    flink = config.flink
    reporters_on_local_classpath(config)
    # Workers must run the interpreter that has the project installed, whatever PATH says;
    # thread mode (pemja) finds it through PATH only, and the JVM
    # inherits PATH when the first Java object is made.
    venv_bin = os.path.dirname(sys.executable)
    if not os.environ.get("PATH", "").startswith(venv_bin + os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    # A failure (a broker or database gone for a while) restarts the job from its last
    # checkpoint after 1 s, then 2, 4 ... up to the longest backoff; it fails for good after
    # `restart_attempts` restarts with no quiet hour between them.
    restart = "restart-strategy.exponential-delay"
    conf.set_string("restart-strategy.type", "exponential-delay")
    conf.set_string(f"{restart}.initial-backoff", "1 s")
    conf.set_string(f"{restart}.max-backoff", f"{flink.restart_max_backoff_s} s")
    conf.set_string(f"{restart}.backoff-multiplier", "2.0")
    conf.set_string(f"{restart}.reset-backoff-threshold", "1 h")
    conf.set_string(f"{restart}.attempts-before-reset-backoff", str(flink.restart_attempts))
    conf.set_string("python.execution-mode", flink.execution_mode)
    conf.set_string("python.fn-execution.bundle.size", str(flink.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(flink.bundle_time_ms))
    conf.set_string("state.backend.type", flink.state_backend)
    conf.set_string(
        "execution.checkpointing.incremental", str(flink.incremental_checkpoints).lower()
    )
    conf.set_string("execution.checkpointing.storage", "filesystem")
    conf.set_string("execution.checkpointing.dir", checkpoint_uri(flink))
    conf.set_string(
        "execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"
    )
    for key, value in flink.reporter_options().items():
        conf.set_string(key, value)
    if restore_from is not None:
        conf.set_string("execution.state-recovery.path", restore_from)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(flink.parallelism)
    env.enable_checkpointing(flink.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    return env


def create_table_environment(env: StreamExecutionEnvironment) -> StreamTableEnvironment:
    t_env = StreamTableEnvironment.create(env)
    # Operators the planner creates (Kafka source, sinks) get uids too, derived from the plan,
    # so savepoints map back to them while the job's tables and inserts stay the same.
    t_env.get_config().set("table.exec.uid.generation", "ALWAYS")
    return t_env


def format_offsets(offsets: dict[int, int]) -> str:
    """{0: 120, 1: 98} -> `0:120,1:98` (the command-line form)."""
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def parse_offsets(text: str | None) -> dict[int, int] | None:
    """`0:120,1:98` -> {0: 120, 1: 98}."""
    if not text:
        return None
    pairs = (item.split(":") for item in text.split(","))
    return {int(p): int(o) for p, o in pairs}


def committed_offsets(config: Settings, group: str) -> dict[int, int | None]:
    """The offsets a job's source committed for its consumer group (on each checkpoint)."""
    kafka = config.kafka
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"{kafka.consumer_group}-{group}",
        enable_auto_commit=False,
    )
    try:
        topic = kafka.topics.events
        return {
            p: consumer.committed(TopicPartition(topic.name, p)) for p in range(topic.partitions)
        }
    finally:
        consumer.close()


def stop_offsets_ahead(config: Settings, group: str, stop: dict[int, int]) -> dict[int, str]:
    """Partitions whose committed offset is short of its stop offset: {partition: "at/stop"}."""
    at = {p: offset or 0 for p, offset in committed_offsets(config, group).items()}
    return {p: f"{at.get(p, 0)}/{o}" for p, o in stop.items() if at.get(p, 0) < o}


def wait_for_end(
    client: JobClient,
    config: Settings,
    group: str,
    stop: dict[int, int] | None,
    restored: bool,
    poll_s: float = 1.0,
) -> None:
    """Waits until the job ends; raises its failure. SIGTERM or Ctrl-C stops the job with a
    savepoint (its last outputs committed) for `--restore latest` to resume from.

    A bounded Kafka source restored from a checkpoint never ends by itself (FLINK-31006: the
    restored enumerator never tells its readers there are no more splits). That is so for a run
    started with `--restore`, and may be so for a bounded run that restarted after a failure (a
    database or broker away for a while). So once a checkpoint covers the stop offsets, a
    restored run is stopped with a drain at once, and any other run still going a grace period
    later:
    the drain advances event time to the end, as the end of input would, and commits the last
    outputs with a final savepoint. The source is never marked idle (KafkaRawSource). A split
    that ended before the snapshot may have left no committed offset, and then this waits for
    good (it reports which partitions it waits for): restore bounded runs from snapshots of
    unbounded ones, or run them again from the start."""
    with stopped_on_signal(client, config):
        if stop is not None:
            grace_s = 0.0 if restored else 3 * config.flink.checkpoint_interval_ms / 1000 + 30
            drain_when_read(client, config, group, stop, grace_s, poll_s)
        client.get_job_execution_result().result()


def job_ended(client: JobClient) -> bool:
    """Finished, failed or cancelled; also when its local cluster is already gone."""
    try:
        status = client.get_job_status().result()
    except Py4JJavaError:
        return True
    return status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED)


def drain_when_read(
    client: JobClient,
    config: Settings,
    group: str,
    stop: dict[int, int],
    grace_s: float,
    poll_s: float,
) -> None:
    """Stops the job with a drain once a checkpoint has covered `stop` for `grace_s` and the job
    has not ended by itself (see wait_for_end); returns when the job has ended either way."""
    reported = time.monotonic()
    read_since = None
    while not job_ended(client):
        now = time.monotonic()
        try:
            behind = stop_offsets_ahead(config, group, stop)
        except KafkaError as exc:
            # The broker does not answer: the job waits for it, and so does this.
            behind, read_since = {"broker": f"not answering ({type(exc).__name__})"}, None
        if behind:
            if now - reported > 60:
                print(f"waiting for partitions {behind}", file=sys.stderr)
                reported = now
        else:
            read_since = read_since or now
            if now - read_since >= grace_s:
                try:
                    savepoint = stop_with_savepoint(client, config, drain=True)
                except Py4JJavaError:
                    if job_ended(client):
                        return  # it ended by itself meanwhile
                    raise
                print(f"stop offsets reached; drained to savepoint {savepoint}", file=sys.stderr)
                return
        time.sleep(poll_s)


@contextmanager
def stopped_on_signal(client: JobClient, config: Settings):
    """While the job runs, SIGTERM and SIGINT stop it with a savepoint and end the program,
    where the default would kill the process with the job's transactions left open."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a caller elsewhere stops the job
        return

    def stop(signum, _frame):
        print(f"{signal.Signals(signum).name}: stopping the job with a savepoint", file=sys.stderr)
        savepoint = stop_with_savepoint(client, config, drain=False)
        print(f"stopped; savepoint {savepoint} (resume with --restore latest)", file=sys.stderr)
        raise SystemExit(0)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# A savepoint asked for while the job's tasks are still being deployed is refused with this.
TASKS_NOT_RUNNING = "Not all required tasks are currently running"


def stop_with_savepoint(
    client: JobClient, config: Settings, drain: bool, startup_timeout_s: float = 120.0
) -> str:
    """Stops the job with a savepoint under `savepoint_uri`, which commits its last outputs;
    `drain` advances event time to the end first (all timers fire). Returns the savepoint path.
    A job whose tasks are still starting (a restored run with nothing left to read gets here at
    once) is asked again until they run, for at most `startup_timeout_s`.
    PyFlink 2.0's `JobClient.stop_with_savepoint` calls a Java overload that no longer exists
    (the savepoint format became a required argument), so this calls the Java client."""
    formats = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType
    directory = savepoint_uri(config.flink)
    deadline = time.monotonic() + startup_timeout_s
    while True:
        try:
            return client._j_job_client.stopWithSavepoint(drain, directory, formats.CANONICAL).get()
        except Py4JJavaError as error:
            if TASKS_NOT_RUNNING not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def submit(
    name: str,
    build: Callable,
    sinks: Callable,
    config: Settings,
    start: dict[int, int] | None = None,
    stop: dict[int, int] | None = None,
    restore_from: str | None = None,
) -> JobClient:
    """Starts a job and returns at once: `build(env, config, source, sinks(t_env, config))`
    over the events topic, read by the consumer group `<group>-<name>`. `restore_from`: a
    checkpoint or savepoint whose state and source offsets it resumes from."""
    env = create_environment(config, restore_from)
    t_env = create_table_environment(env)
    drained = restore_from is not None and stop is not None  # see wait_for_end
    source = KafkaRawSource(t_env, config, start, stop, name, drained)
    build(env, config, source, sinks(t_env, config))
    return env.execute_async(name)


def offsets_command(prog: str, doc: str, argv: list[str] | None):
    """The command line every job shares: (config, start offsets, stop offsets, checkpoint or
    savepoint to restore)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--start-offsets", help="partition:offset list to start from, e.g. 0:0,1:0")
    parser.add_argument("--stop-offsets", help="partition:offset list to stop at (exclusive)")
    parser.add_argument(
        "--restore",
        metavar="PATH|latest",
        help="start from this checkpoint or savepoint (state and offsets); `latest`: the newest"
        " checkpoint or savepoint under flink.checkpoint_dir",
    )
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    restore = args.restore
    if restore == "latest":
        restore = latest_snapshot(config.flink)
        if restore is None:
            parser.exit(2, f"error: no checkpoint under {config.flink.checkpoint_dir}\n")
        print(f"restoring from {restore}", file=sys.stderr)
    return config, parse_offsets(args.start_offsets), parse_offsets(args.stop_offsets), restore
