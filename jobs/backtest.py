"""`make backtest POLICY="a.yaml b.yaml" MODELS=<version> FROM=<date> UNTIL=<date>`: what
candidate policies (and a model version) would have decided on archived history.

Each candidate runs the profile job's own pipeline (jobs/profile.py: parsing, consent, profile
layers, scoring with the ONNX models, the decision step, experiments) in Flink's batch mode
over the event archive of [FROM, UNTIL): PostgreSQL view `archived_records`, read through
Flink's JDBC connector, bounded, no Kafka. Nothing goes to the live topics or tables: the
decisions are collected into `.local/backtests/<run>/<candidate>.jsonl`, every other output is
discarded. Batch mode hands each user's records to the keyed pipeline sorted by the order in
which the profile job read them (their offsets), so a backtest of the policy the job ran decides
what the job decided.

A candidate is a policy file: `actions:` and, optionally, `experiments:` (conf/actions.yaml and
conf/experiments.yaml in one file; the default is the configured policy). The report per
candidate: per action and variant, the users targeted, decisions, the scores decided at and
the decisions per day (models/backtests.py); with two or more candidates, each against the
first: overlap of targeted users, timing and volume per day; written as JSON and a PNG."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import psycopg
from pyflink.common import Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import DataStream, RuntimeExecutionMode, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment
from pyflink.table.expressions import col, row

from conf import settings as settings_module
from conf.settings import ConfigError, Settings
from jobs import control, runtime
from jobs import profile as profile_job
from jobs.control import MODELS, POLICY, ControlRecord
from jobs.report import epoch_ms
from models import backtests
from models.registry import Registry
from sql import flink_statement, with_options
from udfs.pseudonyms import configured_subject

SOURCE_TABLE = "archived_records"


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    policy_file: Path | None  # None: the configured policy


def manifest_of(config: Settings, version: int | None) -> dict | None:
    """The registry's manifest of model `version` (None: the active one, or None while no
    version is registered: model-free scores only, as in the job); ConfigError if there is no
    such version."""
    registry = Registry(config.models.directory)
    active = registry.load()
    if version is None or (active is not None and active["version"] == version):
        return active
    path = registry.candidates / f"v{version}.json"
    if not path.exists():
        known = sorted(int(p.stem[1:]) for p in registry.candidates.glob("v*.json"))
        known += [active["version"]] if active else []
        raise ConfigError(f"no model version {version} in the registry (there: {sorted(known)})")
    return json.loads(path.read_text())


def in_force(config: Settings, candidate: Candidate, manifest: dict | None) -> list[ControlRecord]:
    """What the candidate's run scores and decides with: the model version, its policy and
    the cohort modifiers kept in PostgreSQL now."""
    content = control.read_sources(config)
    content.pop(MODELS, None)
    if manifest is not None:
        content[MODELS] = control.plain(manifest)
    if candidate.policy_file is not None:
        # One file holds both parts: its `experiments:` are read with its `actions:`.
        content[POLICY] = control.policy_content(candidate.policy_file, candidate.policy_file)
    return control.first_records(content)


class ReadOrder(TimestampAssigner):
    """A record's place in its user's history as the profile job read it: batch mode sorts a
    user's records by this before the keyed pipeline sees them."""

    def extract_timestamp(self, value, record_timestamp):
        return value.record.offset


class ArchiveSource:
    """The archive of [since, until) as KEYED_RAW_RECORD rows, ordered per user as they were
    read. Records of the events topic carry their offset; a record of another topic (a consent
    platform's update) is placed after the user's last event of the events topic at or before
    its event time. The offset field carries that order (twice the offset, odd for the others):
    nothing downstream of the archive needs the coordinates of a record."""

    def __init__(self, t_env: StreamTableEnvironment, config: Settings, since: int, until: int):
        self.t_env, self.config, self.since, self.until = t_env, config, since, until

    def __call__(self, env: StreamExecutionEnvironment) -> DataStream:
        options = {
            "connector": "jdbc",
            "table-name": SOURCE_TABLE,
            **self.config.postgres.jdbc_options(),
            "scan.fetch-size": "5000",
        }
        statement = flink_statement(
            "archived_records_source", table="archive", options=with_options(options)
        )
        self.t_env.execute_sql(statement)
        ordered = self.t_env.sql_query(
            flink_statement(
                "archived_records_in_read_order",
                table="archive",
                since=str(self.since),
                until=str(self.until),
                events_topic=self.config.kafka.topics.events.name.replace("'", "''"),
            )
        )
        record = row(
            col("payload"), col("source_topic"), col("source_partition"), col("read_order")
        )
        keyed = ordered.select(col("user_key"), record.cast(runtime.RAW_RECORD_SQL).alias("record"))
        stream = self.t_env.to_data_stream(keyed)
        stream._j_data_stream.getTransformation().setOutputType(
            runtime.KEYED_RAW_RECORD.get_java_type_info()
        )
        strategy = WatermarkStrategy.no_watermarks().with_timestamp_assigner(ReadOrder())
        return stream.assign_timestamps_and_watermarks(strategy)


class DecisionSinks:
    """The decisions (the actions output and the offers of recommendations) as their JSON
    records, to collect; every other output is discarded."""

    def write(self, streams: profile_job.ProfileOutputs) -> None:
        discard = get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink
        for field in dataclasses.fields(streams):
            if field.name not in ("actions", "offers"):
                stream = getattr(streams, field.name)
                stream._j_data_stream.sinkTo(discard()).name(f"discard-{field.name}")
        decisions = streams.actions.union(streams.offers)
        self.decisions = decisions.map(lambda r: r.record.decode(), Types.STRING()).name(
            "decisions"
        )


def run_candidate(
    config: Settings, records: list[ControlRecord], since: int, until: int, data_end_ts: int
) -> list[dict]:
    """The decisions of one candidate over the archive of [since, until), in batch mode."""
    env = runtime.create_environment(config)
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    t_env = runtime.create_table_environment(env)
    sinks = DecisionSinks()
    profile_job.build_pipeline(
        env,
        config,
        ArchiveSource(t_env, config, since, until),
        sinks,
        profile_job.FixedControl(records),
        data_end_ts=data_end_ts,
    )
    with sinks.decisions.execute_and_collect() as results:
        return [json.loads(text) for text in results]


def archive_span(config: Settings, since: int | None, until: int | None) -> tuple | None:
    """(first ts, last ts, events, users) of the archive in [since, until), None when empty."""
    with psycopg.connect(config.postgres.conninfo()) as conn:
        found = conn.execute(
            "SELECT min(ts_ms), max(ts_ms), count(*), count(DISTINCT user_id) FROM events"
            " WHERE ts_ms >= %s AND ts_ms < %s",
            (since if since is not None else -(2**63), until if until is not None else 2**63 - 1),
        ).fetchone()
    return found if found[2] else None


def plot(names: list[str], summaries: list[dict], path: Path) -> None:
    """Decisions per day of each candidate over the whole range (days without any at 0)."""
    from datetime import date, timedelta

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    found = sorted({day for s in summaries for day in s["per_day"]})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if found:
        first, last = date.fromisoformat(found[0]), date.fromisoformat(found[-1])
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        styles = ("-", "--", ":", "-.")
        for n, (name, summary) in enumerate(zip(names, summaries, strict=True)):
            counts = [summary["per_day"].get(d.isoformat(), 0) for d in days]
            ax.plot(days, counts, styles[n % len(styles)], drawstyle="steps-mid", label=name)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("day (event time, UTC)")
    ax.set_ylabel("decisions")
    ax.set_title("backtest: decisions per day")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(name: str, summary: dict) -> None:
    print(f"  {name}: {summary['decisions']:,} decisions for {summary['users']:,} users")
    for arm in summary["by_action"]:
        s = arm["scores"]
        variant = f"/{arm['variant']}" if arm["variant"] else ""
        print(
            f"    {arm['action'] + variant:<36}{arm['users']:>6,} users {arm['decisions']:>6,}"
            f" decisions  score median {s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]"
        )


def print_comparison(a: str, b: str, comparison: dict) -> None:
    print(f"  {b} against {a}:")
    for action, c in comparison["by_action"].items():
        overlap = "-" if c["jaccard"] is None else f"{c['jaccard']:.2f}"
        later = c["median_hours_b_later"]
        timing = "" if later is None else f", median {later:+.1f} h for users both target"
        print(
            f"    {action:<28} users {c['users_a']:>5,} vs {c['users_b']:>5,}: both"
            f" {c['both']:,}, only {a} {c['only_a']:,}, only {b} {c['only_b']:,}"
            f" (overlap {overlap}){timing}"
        )


def candidate_name(path: Path | None, taken: set[str]) -> str:
    name = "configured" if path is None else path.stem
    while name in taken:
        name += "+"
    taken.add(name)
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.backtest", description=__doc__)
    parser.add_argument(
        "--policy", nargs="*", default=[], help="candidate policy files (default: the configured)"
    )
    parser.add_argument("--models", type=int, help="model version (default: the active one)")
    parser.add_argument("--from", dest="since", type=epoch_ms, help="ISO date or time (UTC)")
    parser.add_argument("--until", type=epoch_ms, help="ISO date or time (UTC), excluded")
    parser.add_argument("--out", default=".local/backtests", help="folder for the results")
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    taken: set[str] = set()
    paths = [Path(p) for p in args.policy] or [None]
    candidates = [Candidate(candidate_name(p, taken), p) for p in paths]
    try:
        manifest = manifest_of(config, args.models)
        records = {c.name: in_force(config, c, manifest) for c in candidates}
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    span = archive_span(config, args.since, args.until)
    if span is None:
        print("error: the event archive holds no events in that range", file=sys.stderr)
        return 2
    first, last, events, users = span
    since = first if args.since is None else args.since
    until = last + 1 if args.until is None else args.until
    print(
        f"backtest over {events:,} archived events of {users:,} users"
        f" ({backtests.day_of(first)} to {backtests.day_of(last)}), model version"
        f" {manifest['version'] if manifest else 'none'}, in Flink's batch mode"
    )
    folder = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    # The files name users as the analytical outputs do: by pseudonym where configured.
    subject = configured_subject(config.privacy)
    summaries, decided = [], {}
    for candidate in candidates:
        began = time.monotonic()
        rows = run_candidate(config, records[candidate.name], since, until, last)
        rows = [{**r, "user_id": subject(r["user_id"])} for r in rows]
        with (folder / f"{candidate.name}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        decided[candidate.name] = [backtests.Decision.of(r) for r in rows]
        summaries.append(backtests.summarize(decided[candidate.name]))
        print(f"  ran {candidate.name} in {time.monotonic() - began:.0f} s")
        print_summary(candidate.name, summaries[-1])
    names = [c.name for c in candidates]
    result = {
        "range": {"since": since, "until": until, "events": events, "users": users},
        "model_version": manifest["version"] if manifest else None,
        "candidates": dict(zip(names, summaries, strict=True)),
        "against_first": {
            name: backtests.compare(decided[names[0]], decided[name]) for name in names[1:]
        },
    }
    for name, comparison in result["against_first"].items():
        print_comparison(names[0], name, comparison)
    (folder / "comparison.json").write_text(json.dumps(result, indent=2))
    plot(names, summaries, folder / "decisions_per_day.png")
    print(f"  written: {folder}/ (decisions per candidate, comparison.json, decisions_per_day.png)")
    return 0


if __name__ == "__main__":
    # Through the importable module, so functions are pickled by reference to jobs.backtest.
    from jobs import backtest as job_module

    sys.exit(job_module.main())
