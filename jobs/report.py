"""`make report EXPERIMENT=<name>`: the experiment's results from PostgreSQL (actions and their
outcomes). Each user counts once, at their first exposure, with the outcome of its attribution
window (view `experiment_exposures`): users and conversion per variant, each variant against the
control with absolute and relative lift, confidence intervals, a two-proportion z-test and an
always-valid p-value, the sample-ratio check against the configured weights, and a picture of
cumulative conversion over event time per variant (PNG, written next to a JSON copy of the
numbers)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import psycopg
from psycopg.rows import tuple_row

from conf import settings as settings_module
from conf.policy import Experiment, load_policy
from conf.settings import Settings
from models.experiment_stats import Arm, compare, sample_ratio
from udfs.timeunits import DAY_MS


def user_outcomes(config: Settings, experiment: str) -> list[tuple[str, str, int, bool]]:
    with psycopg.connect(config.postgres.conninfo()) as conn:
        return exposures(conn, experiment)


def exposures(conn: psycopg.Connection, experiment: str) -> list[tuple[str, str, int, bool]]:
    """(variant, user, first exposure time, converted in its window) per user whose first
    exposure has an outcome; users whose window is still open are not counted yet."""
    return (
        conn.cursor(row_factory=tuple_row)
        .execute(
            "SELECT variant, user_id, first_ts, converted FROM experiment_exposures"
            " WHERE experiment = %s AND converted IS NOT NULL",
            (experiment,),
        )
        .fetchall()
    )


def control_of(spec: Experiment) -> str:
    return next((v.name for v in spec.variants if v.control), spec.variants[0].name)


def experiment_result(rows, spec: Experiment) -> dict:
    """The report of the experiment `spec` from its user_outcomes rows."""
    return analyse(rows, {v.name: v.weight for v in spec.variants}, control_of(spec))


def arms_of(rows) -> dict[str, Arm]:
    """Exposed and converted users per variant, from user_outcomes rows."""
    users: dict[str, int] = defaultdict(int)
    converted: dict[str, int] = defaultdict(int)
    for variant, _, _, bought in rows:
        users[variant] += 1
        converted[variant] += bought
    return {v: Arm(users[v], converted[v]) for v in users}


def analyse(rows, weights: dict[str, float], control: str) -> dict:
    names = list(weights)
    counted = arms_of(rows)
    arms = {v: counted.get(v, Arm(0, 0)) for v in names}
    srm = sample_ratio([arms[v].users for v in names], [weights[v] for v in names])
    result = {
        "arms": {
            v: {"users": a.users, "converted": a.conversions, "rate": a.rate}
            for v, a in arms.items()
        },
        "sample_ratio": {"checked": srm.checked, "p_value": srm.p_value, "mismatch": srm.mismatch},
        "against_control": {},
    }
    for v in names:
        if v == control or not arms[v].users or not arms[control].users:
            continue
        c = compare(arms[control], arms[v])
        result["against_control"][v] = {
            "absolute_lift": c.absolute_lift,
            "absolute_ci": c.absolute_ci,
            "relative_lift": c.relative_lift,
            "relative_ci": c.relative_ci,
            "z": c.z,
            "p_value": c.p_value,
            "always_valid_p": c.always_valid_p,
        }
    return result


def plot(rows, path: Path, experiment: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for variant in sorted({r[0] for r in rows}):
        mine = sorted((ts, bought) for v, _, ts, bought in rows if v == variant)
        days, rates, n, hits = [], [], 0, 0
        for ts, bought in mine:
            n, hits = n + 1, hits + bought
            days.append(ts / DAY_MS)
            rates.append(hits / n)
        start = min(r[2] for r in rows) / DAY_MS
        ax.plot([d - start for d in days], rates, label=f"{variant} ({n} users)")
    ax.set_xlabel("days since the first exposure (event time)")
    ax.set_ylabel("cumulative conversion of exposed users")
    ax.set_title(f"experiment {experiment}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.report", description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--out", default=".local/reports", help="folder for the PNG and JSON")
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    policy = load_policy(config.actions.actions_file, config.actions.experiments_file)
    spec = next((e for e in policy.experiments if e.name == args.experiment), None)
    if spec is None:
        known = ", ".join(e.name for e in policy.experiments) or "none"
        print(f"error: no experiment {args.experiment!r} (configured: {known})", file=sys.stderr)
        return 2
    control = control_of(spec)
    rows = user_outcomes(config, spec.name)
    if not rows:
        print(f"experiment {spec.name}: no exposed users yet")
        return 0
    result = experiment_result(rows, spec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{spec.name}.json").write_text(json.dumps(result, indent=2))
    plot(rows, out / f"{spec.name}.png", spec.name)
    print(f"experiment {spec.name} (control: {control})")
    for v, a in result["arms"].items():
        print(f"  {v:<16}{a['users']:>7,} users{a['converted']:>7,} converted  {a['rate']:.3f}")
    for v, c in result["against_control"].items():
        low, high = c["absolute_ci"]
        print(
            f"  {v} vs {control}: lift {c['absolute_lift']:+.3f} [{low:+.3f}, {high:+.3f}],"
            f" p = {c['p_value']:.3g}, always-valid p = {c['always_valid_p']:.3g}"
        )
    srm = result["sample_ratio"]
    if srm["checked"]:
        verdict = "MISMATCH" if srm["mismatch"] else "ok"
        print(f"  sample ratio: p = {srm['p_value']:.3g} ({verdict})")
    else:
        print("  sample ratio: not checked (an arm expects fewer than 5 users)")
    print(f"  written: {out / (spec.name + '.png')}, {out / (spec.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
