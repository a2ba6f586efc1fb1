"""`make generate`: synthetic events to the broker (or a JSONL file) plus their hidden truth.

Writes the ground truth to `<state>/generated/<run>.truth.jsonl` and, when publishing, to the
PostgreSQL tables `ground_truth_users` / `ground_truth_sessions`. The offsets written are saved
to `<state>/generated/last-run.json` so a bounded job run can read back exactly this run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import psycopg
from pydantic import ValidationError

from conf import settings as settings_module
from conf.settings import Generator, Settings
from conf.stack import state_dir
from jobs.progress import Progress
from jobs.publish import Publisher, PublishReport
from models.generator import EventGenerator, History, with_hostile_records


@dataclass
class GenerateSummary:
    run_id: str
    users: int
    sessions: int
    valid: int
    invalid: int
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    publish: PublishReport | None = None
    # Ids of the valid events published, for checking outputs; not saved in the manifest.
    event_ids: list[str] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        # Built field by field: asdict would deep-copy event_ids only to drop them.
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "event_ids"}
        d["publish"] = self.publish.to_json() if self.publish else None
        return d

    @staticmethod
    def from_json(d: dict) -> GenerateSummary:
        publish = PublishReport.from_json(d["publish"]) if d.get("publish") else None
        return GenerateSummary(**{**d, "publish": publish})


def manifest_path(settings: Settings) -> Path:
    return state_dir(settings) / "generated" / "last-run.json"


def write_truth_file(history: History, path: Path, run_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for user in history.users:
            out.write(json.dumps({"kind": "user", "run_id": run_id, **asdict(user)}) + "\n")
        for s in history.sessions:
            out.write(
                json.dumps(
                    {"kind": "session", "run_id": run_id, **asdict(s), "abandoned": s.abandoned}
                )
                + "\n"
            )
        for incident in history.incidents:
            out.write(json.dumps({"kind": "incident", "run_id": run_id, **asdict(incident)}) + "\n")
        for archetype, by_category in history.tastes.items():
            record = {"kind": "taste", "run_id": run_id, "archetype": archetype}
            out.write(json.dumps({**record, "products": by_category}) + "\n")


def write_truth_tables(history: History, settings: Settings, run_id: str) -> None:
    """Replaces the truth of `run_id`: a run id names the generator's inputs, so a rerun after
    the generator itself changed must not leave the old sessions behind."""
    with psycopg.connect(settings.postgres.conninfo()) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ground_truth_sessions WHERE run_id = %s", (run_id,))
        cur.execute("DELETE FROM ground_truth_users WHERE run_id = %s", (run_id,))
        cur.execute("DELETE FROM ground_truth_incidents WHERE run_id = %s", (run_id,))
        cur.executemany(
            "INSERT INTO ground_truth_incidents (run_id, kind, start_ms, end_ms)"
            " VALUES (%s, %s, %s, %s)",
            [(run_id, i.kind, i.start_ms, i.end_ms) for i in history.incidents],
        )
        cur.executemany(
            "INSERT INTO ground_truth_users (run_id, user_id, archetype, drifted, drift_start_ms)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (run_id, user_id) DO UPDATE SET"
            " archetype = EXCLUDED.archetype, drifted = EXCLUDED.drifted,"
            " drift_start_ms = EXCLUDED.drift_start_ms",
            [(run_id, u.user_id, u.archetype, u.drifted, u.drift_start_ms) for u in history.users],
        )
        cur.executemany(
            "INSERT INTO ground_truth_sessions (run_id, session_id, user_id, start_ms, end_ms,"
            " added_to_cart, purchased, abandoned) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (run_id, session_id) DO NOTHING",
            [
                (
                    run_id,
                    s.session_id,
                    s.user_id,
                    s.start_ms,
                    s.end_ms,
                    s.added_to_cart,
                    s.purchased,
                    s.abandoned,
                )
                for s in history.sessions
            ],
        )


def generate(
    settings: Settings,
    users: int | None = None,
    days: float | None = None,
    seed: int | None = None,
    rate: float = 0.0,
    invalid_rate: float | None = None,
    out_file: Path | None = None,
    truth_to_db: bool = True,
) -> GenerateSummary:
    generator = EventGenerator(settings.generator, users=users, days=days, seed=seed)
    print(
        f"[generate] simulating {generator.users:,} users over {generator.days:g} days "
        f"(seed {generator.seed})",
        file=sys.stderr,
        flush=True,
    )
    with Progress("[generate]", generator.users, "users") as simulated:
        history = generator.generate(on_user=simulated.update)
    run_id = generator.run_id
    truth_file = state_dir(settings) / "generated" / f"{run_id}.truth.jsonl"
    write_truth_file(history, truth_file, run_id)
    invalid_rate = settings.generator.invalid_rate if invalid_rate is None else invalid_rate
    contract = settings.events
    # Far-future bounds are relative to the last event, so the injected records stay invalid.
    latest = max((e["ts"] for e in history.events), default=settings.generator.start_ts_ms)
    bounds = (contract.min_ts_ms, latest + contract.max_future_skew_ms)
    reasons: Counter[str] = Counter()
    valid = 0
    summary = GenerateSummary(run_id, len(history.users), len(history.sessions), 0, 0)
    if out_file is not None:
        # A text file cannot carry binary garbage, so files hold valid events only.
        out_file.parent.mkdir(parents=True, exist_ok=True)
        with out_file.open("w") as out:
            for event in history.events:
                out.write(json.dumps(event, separators=(",", ":")) + "\n")
        summary.valid = len(history.events)
        print(f"[generate] wrote {summary.valid:,} events to {out_file}", file=sys.stderr)
        return summary
    topic = settings.kafka.topics.events
    # Listed first: the progress's total counts the malformed records too.
    mixed = list(
        with_hostile_records(
            history.events, invalid_rate, generator.seed, bounds, settings.events.max_bytes
        )
    )
    publisher = Publisher(
        settings.kafka.bootstrap_servers,
        topic.name,
        topic.partitions,
        rate=rate,
        label="generate",
        total=len(mixed),
    )
    for key, value, reason in mixed:
        if reason is None:
            valid += 1
        else:
            reasons[reason.value] += 1
        publisher.send(key, value)
    summary.event_ids = [event["event_id"] for event in history.events]
    summary.publish = publisher.close()
    summary.valid, summary.invalid = valid, sum(reasons.values())
    summary.invalid_by_reason = dict(sorted(reasons.items()))
    if truth_to_db:
        write_truth_tables(history, settings, run_id)
    manifest = manifest_path(settings)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(summary.to_json(), indent=2))
    print(
        f"[generate] published {summary.valid:,} valid and {summary.invalid:,} malformed records "
        f"to {topic.name}; truth in {truth_file}",
        file=sys.stderr,
        flush=True,
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.generate", description=__doc__)
    parser.add_argument("--users", type=int, help="number of users (default from config)")
    parser.add_argument("--days", type=float, help="days of history (default from config)")
    parser.add_argument("--seed", type=int, help="random seed (default from config)")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s to publish, 0 = max")
    parser.add_argument("--invalid-rate", type=float, help="share of malformed records to mix in")
    parser.add_argument("--out", type=Path, help="write JSONL here instead of the broker")
    parser.add_argument(
        "--support-rate", type=float, help="share of page views on help and support pages"
    )
    parser.add_argument(
        "--incident-day", type=float, help="inject a payment outage this many days in"
    )
    parser.add_argument("--incident-days", type=float, default=3.0, help="how long it lasts")
    args = parser.parse_args(argv)
    settings = settings_module.load_or_exit()
    overrides = {}
    if args.support_rate is not None:
        overrides["support_page_rate"] = args.support_rate
    if args.incident_day is not None:
        overrides["incident"] = {"start_day": args.incident_day, "days": args.incident_days}
    try:
        generator = Generator.model_validate({**settings.generator.model_dump(), **overrides})
    except ValidationError as exc:
        raise SystemExit(f"error: {exc}") from None
    settings = settings.model_copy(update={"generator": generator})
    summary = generate(
        settings,
        args.users,
        args.days,
        args.seed,
        args.rate,
        args.invalid_rate,
        args.out,
        truth_to_db=args.out is None,
    )
    print(json.dumps({k: v for k, v in summary.to_json().items() if k != "publish"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
