"""Labelled outcomes for retraining: one row per decision that has its outcome, with the scores
the decision step saw. `make export-outcomes` writes them from PostgreSQL to a CSV file, and
`make train` reads that file to fit the offer-uplift models (models/uplift.py)."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from conf import settings as settings_module
from conf.policy import SCORES
from conf.settings import Settings

OUTCOME_COLUMNS = (
    "decision_id",
    "user_id",
    "decided_ts",
    "action",
    "experiment",
    "variant",
    "delivered",
    "converted",
    "revenue",
    "model_version",
    *SCORES,  # empty when the decision could not see the score (no model registered)
)


def labelled_outcomes(config: Settings) -> list[dict]:
    """Every decision with an outcome, oldest first, its scores spread into columns."""
    with psycopg.connect(config.postgres.conninfo(), row_factory=dict_row) as conn:
        found = conn.execute(
            "SELECT a.decision_id, a.user_id, a.ts AS decided_ts, a.action, a.experiment,"
            " a.variant, a.delivered, o.converted, o.revenue, a.model_version, a.scores"
            " FROM actions a JOIN action_outcomes o USING (decision_id)"
            " ORDER BY a.ts, a.decision_id"
        ).fetchall()
    rows = []
    for r in found:
        scores = r.pop("scores")
        rows.append(r | {s: scores.get(s) for s in SCORES})
    return rows


def write_outcomes(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, OUTCOME_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_outcomes(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(OUTCOME_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path}: not a labelled-outcomes file (no {', '.join(sorted(missing))})"
            )
        return list(reader)


def main(argv: list[str] | None = None) -> int:
    config = settings_module.load_or_exit()
    parser = argparse.ArgumentParser(prog="python -m models.outcomes", description=__doc__)
    parser.add_argument("--out", default=config.models.outcomes_file, help="CSV file to write")
    args = parser.parse_args(argv)
    rows = labelled_outcomes(config)
    write_outcomes(rows, Path(args.out))
    by_action: dict[str, int] = {}
    for r in rows:
        by_action[r["action"]] = by_action.get(r["action"], 0) + 1
    detail = ", ".join(f"{a} {n:,}" for a, n in sorted(by_action.items())) or "none yet"
    print(f"[outcomes] {len(rows):,} labelled outcomes ({detail}) written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
