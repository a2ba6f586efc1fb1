"""The report of an experiment about lead scoring (`make report EXPERIMENT=lead_modifiers`): from
the lead_outcomes table, how well each arm's lead scores found buyers (models/lead_quality.py),
over the lead scores of the run (scored from its start until its end). A lead score whose
horizon outlasts the archived events has no outcome yet and is left out, counted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import psycopg

from conf.policy import Experiment
from jobs.report import OPEN_START, Run, period_of
from models.lead_quality import LeadOutcome, LeadReport, lead_report


def lead_outcomes(
    conn: psycopg.Connection, run: Run, horizon_ms: int
) -> tuple[list[LeadOutcome], int]:
    """The run's lead outcomes, and how many were left out: those whose horizon ends after the
    latest archived event. Their users' time was cut short by the end of the data, not by the
    horizon; keeping only those that converted in it would make leads look better than they
    are."""
    data_end = conn.execute("SELECT max(ts_ms) FROM events").fetchone()[0]
    found = conn.execute(
        "SELECT user_id, variant, score, unmodified_score, converted, scored_ts"
        " FROM lead_outcomes WHERE experiment = %(e)s"
        " AND scored_ts >= %(since)s AND scored_ts < %(until)s"
        " ORDER BY user_id, profile_version",
        run.params(),
    ).fetchall()
    data_end = OPEN_START if data_end is None else data_end
    rows = [LeadOutcome(*r[:5]) for r in found if r[5] + horizon_ms <= data_end]
    return rows, len(found) - len(rows)


def lead_experiment_report(
    conn: psycopg.Connection,
    spec: Experiment,
    horizon_ms: int,
    since: int | None = None,
    until: int | None = None,
) -> tuple[list[LeadOutcome], dict]:
    """The report of one run of `spec`: [since, until) defaults to its configured run."""
    run = Run.configured(spec, since, until, any_arms=True)
    rows, censored = lead_outcomes(conn, run, horizon_ms)
    scope = {"since": run.since, "until": run.until, "left_out_without_outcome": censored}
    variants = [v.name for v in spec.variants]
    if not {r.variant for r in rows} >= set(variants):
        return rows, {"run": scope, "about": "leads", "arms": None}
    report = lead_report(rows, variants)
    return rows, {"run": scope, "about": "leads", **as_json(report)}


def as_json(report: LeadReport) -> dict:
    return {
        "arms": {a.variant: dataclasses.asdict(a) for a in report.arms},
        "against_first": {v: dataclasses.asdict(d) for v, d in report.against_first.items()},
        "served_vs_unmodified": {
            v: dataclasses.asdict(d) for v, d in report.served_vs_unmodified.items()
        },
    }


def fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:.3f}"


def interval(ci, sign: str = "+") -> str:
    return "" if ci is None else f"[{ci[0]:{sign}.3f}, {ci[1]:{sign}.3f}]"


def print_lead_report(spec: Experiment, result: dict, out: Path) -> None:
    run = result["run"]
    period = period_of(run)
    print(f"experiment {spec.name} (about lead scoring), lead scores from {period}")
    if result["arms"] is None:
        print("  not every arm has lead scores with an outcome yet")
        return
    print(f"  {'arm':<20}{'leads':>8}{'users':>8}  conversion  AUC    interval         top 10%")
    for v, a in result["arms"].items():
        print(
            f"  {v:<20}{a['leads']:>8,}{a['users']:>8,}  {a['conversion']:>10.3f}  {fmt(a['auc'])}"
            f"  {interval(a['auc_ci'], sign=''):<16} {a['top_conversion']:.3f}"
        )
    first = spec.variants[0].name
    for v, d in result["against_first"].items():
        print(f"  AUC {v} - {first}: {d['difference']:+.3f} {interval(d['ci'])}")
    for v, d in result["served_vs_unmodified"].items():
        print(
            f"  AUC on {v}'s own leads, served - unmodified: {d['difference']:+.3f}"
            f" {interval(d['ci'])}"
        )
    if run["left_out_without_outcome"]:
        print(
            f"  {run['left_out_without_outcome']:,} lead scores left out: their horizon outlasts"
            " the archived events"
        )
    print(f"  written: {out / (spec.name + '.json')}")


def write(spec: Experiment, result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{spec.name}.json").write_text(json.dumps(result, indent=2))
