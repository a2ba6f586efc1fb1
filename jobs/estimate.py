"""`make estimate CANDIDATE=<file>`: what a candidate targeting policy would have achieved on an
experiment's logged decisions (models/off_policy.py), from PostgreSQL. Each user counts once, at
their first decision in the experiment's run (as in `make report`), with the scores that
decision saw, the arm they were assigned and whether they converted. Prints, per candidate, the
estimated conversion rate (inverse propensity weighting and doubly robust, with intervals), its
lift over giving everyone the control arm, or why the logs cannot support an estimate; writes
the numbers as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import psycopg

from conf import settings as settings_module
from conf.policy import Candidate, Experiment, load_candidate, load_policy
from conf.settings import ConfigError
from jobs.report import Run, control_of, epoch_ms, first_exposures
from models.off_policy import Evaluation, LoggedUnit, evaluate


def logged_units(conn: psycopg.Connection, run: Run) -> list[LoggedUnit]:
    """The report's units (each user of the run at their first decision) with the scores the
    decision step saw. One version of the arms: the propensities are its weights."""
    columns = "f.user_id, f.scores, f.variant, o.converted, f.score_name, f.threshold"
    rows = first_exposures(conn, run, columns)
    return [
        LoggedUnit(user, {k: float(v) for k, v in scores.items()}, arm, converted, (score, t))
        for user, scores, arm, converted, score, t in rows
    ]


def propensities(spec: Experiment) -> dict[str, float]:
    """Each arm's assignment probability: the hash gives arms in proportion to their weights,
    whatever the user's scores."""
    total = sum(v.weight for v in spec.variants)
    return {v.name: v.weight / total for v in spec.variants}


def interval(e) -> str:
    return f"{e.value:.4f} [{e.ci[0]:.4f}, {e.ci[1]:.4f}]"


def print_evaluation(result: Evaluation) -> None:
    picked = ", ".join(f"{arm} {n:,}" for arm, n in result.arms_picked.items())
    print(f"  candidate {result.candidate}: {result.units:,} logged users; it picks {picked}")
    if not result.supported:
        print("    not supported by the logged data:")
        for reason in result.reasons:
            print(f"      - {reason}")
        return
    lift = result.lift_over_control
    print(f"    conversion, inverse propensity weighting  {interval(result.ipw)}")
    print(f"    conversion, doubly robust                 {interval(result.doubly_robust)}")
    print(
        f"    lift over the control for everyone       {lift.value:+.4f}"
        f" [{lift.ci[0]:+.4f}, {lift.ci[1]:+.4f}]"
    )
    print(
        f"    effective sample size {result.effective_sample_size:,.0f}; matched units per arm:"
        f" {result.matched}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.estimate", description=__doc__)
    parser.add_argument("--candidate", nargs="+", required=True, help="candidate policy files")
    parser.add_argument("--from", dest="since", type=epoch_ms, help="ISO date (UTC)")
    parser.add_argument("--until", type=epoch_ms, help="ISO date (UTC)")
    parser.add_argument("--out", default=".local/reports", help="folder for the JSON")
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    try:
        candidates: list[Candidate] = [load_candidate(path) for path in args.candidate]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    policy = load_policy(config.actions.actions_file, config.actions.experiments_file)
    experiments = {e.name: e for e in policy.experiments}
    unknown = sorted({c.experiment for c in candidates} - set(experiments))
    if unknown:
        print(
            f"error: no experiment {unknown} (configured: {sorted(experiments)})", file=sys.stderr
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(config.postgres.conninfo()) as conn:
        for candidate in candidates:
            spec = experiments[candidate.experiment]
            units = logged_units(conn, Run.configured(spec, args.since, args.until))
            result = evaluate(candidate, units, propensities(spec), control_of(spec))
            print(f"experiment {spec.name}: logged conversion {result.logged_value:.4f}")
            print_evaluation(result)
            path = out / f"estimate-{candidate.name}.json"
            path.write_text(json.dumps(asdict(result), indent=2))
            print(f"    written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
