"""`make refine EXPERIMENT=<name>`: moves the experiment's variant weights towards the variants
that convert best (models/refinement.py: Thompson sampling, bounded, control share kept),
rewrites the experiments file (the running job picks it up at its next reload) and logs every
change in PostgreSQL `policy_changes`. `--dry-run` only prints what would change."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg
import yaml
from psycopg.types.json import Jsonb

from conf import settings as settings_module
from conf.policy import load_policy
from jobs.report import Run, arms_of, user_outcomes
from models.refinement import Bounds, refine


def rewrite_weights(path: Path, experiment: str, shares: dict[str, float]) -> None:
    """Replaces the weights in the experiments file, keeping its leading comment block."""
    text = path.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    data = yaml.safe_load(text)
    for e in data["experiments"]:
        if e["name"] == experiment:
            for v in e["variants"]:
                v["weight"] = round(shares[v["name"]], 6)
    temporary = path.with_suffix(".yaml.tmp")
    temporary.write_text(header + yaml.safe_dump(data, sort_keys=False, width=100))
    load_policy(path.parent / "actions.yaml", temporary)  # never write a file the job refuses
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.refine", description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    a = config.actions
    policy = load_policy(a.actions_file, a.experiments_file)
    spec = next((e for e in policy.experiments if e.name == args.experiment), None)
    if spec is None:
        print(f"error: no experiment {args.experiment!r}", file=sys.stderr)
        return 2
    control = next((v.name for v in spec.variants if v.control), None)
    if control is None:
        print(f"error: experiment {spec.name} has no control variant", file=sys.stderr)
        return 2
    # Every version of the arms: each weight change makes a new version, and the bandit's
    # evidence is all of its rounds (the report, an inference, covers one version).
    run = Run.configured(spec, any_arms=True)
    arms = {v: (a.users, a.conversions) for v, a in arms_of(user_outcomes(config, run)).items()}
    weights = {v.name: v.weight for v in spec.variants}
    bounds = Bounds()
    shares, changes = refine(weights, control, arms, bounds, seed=args.seed)
    evidence = {v: {"users": u, "converted": c} for v, (u, c) in arms.items()}
    if not changes:
        print(f"experiment {spec.name}: no change (each arm needs {bounds.min_users} users)")
        return 0
    for c in changes:
        print(
            f"  {c.variant}: share {c.old_share:.3f} -> {c.new_share:.3f}"
            f" (probability best {c.p_best:.2f})"
        )
    if args.dry_run:
        return 0
    rewrite_weights(Path(a.experiments_file), spec.name, shares)
    with psycopg.connect(config.postgres.conninfo()) as conn:
        for c in changes:
            conn.execute(
                "INSERT INTO policy_changes (experiment, variant, old_share, new_share, p_best,"
                " evidence) VALUES (%s, %s, %s, %s, %s, %s)",
                (spec.name, c.variant, c.old_share, c.new_share, c.p_best, Jsonb(evidence)),
            )
    print(f"  written: {a.experiments_file}; logged in policy_changes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
