"""`make release WHAT=<aggregate>`: an aggregate for sharing, released with differential privacy
(udfs/dp.py) under the budget `privacy.dp` sets, and recorded in `dp_releases`.

    cohort_sizes       users per cohort of the active model (bins: its cohorts)
    experiment_arms    per variant of an experiment: exposed, measured and converted users
    active_users       users with events per window of a range, each user counted in at most
                       `--windows` windows (their first)
    event_counts       events per window of a range, at most `--per-window` of a user's events
                       in a window and at most `--windows` windows of theirs

Counts of users come from the profile job's tables, counts of events from the archive; a user's
contribution is bounded in the query, so the noise is calibrated to what one user can change.
A release that would exceed the period's budget is refused (exit status 2) and nothing is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from conf import settings as settings_module
from conf.policy import load_policy
from conf.settings import Settings
from models.registry import Registry
from udfs.dp import Budget, BudgetExceeded, Counts, noisy, period_start
from udfs.timeunits import DAY_MS, HOUR_MS

WINDOWS = {"hour": HOUR_MS, "day": DAY_MS}


def cohort_sizes(conn: psycopg.Connection, config: Settings) -> Counts:
    manifest = Registry(config.models.directory).load()
    if manifest is None:
        raise ValueError(f"no registered models in {config.models.directory}: run make train")
    names = {
        c["cohort"]: c["name"]
        for entry in manifest["models"].values()
        for c in entry.get("cohorts", [])
        if entry["kind"] == "cohorts"
    }
    found = dict(
        conn.execute(
            "SELECT cohort, count(*) FROM user_scores WHERE model_version = %s GROUP BY cohort",
            (manifest["version"],),
        ).fetchall()
    )
    cohorts = sorted(names)
    return Counts(
        f"cohort_sizes v{manifest['version']}",
        [names[c] for c in cohorts],
        [found.get(c, 0) for c in cohorts],
        sensitivity=1,  # a user is in one cohort
    )


def experiment_arms(conn: psycopg.Connection, config: Settings, experiment: str) -> Counts:
    policy = load_policy(config.actions.actions_file, config.actions.experiments_file)
    spec = next((e for e in policy.experiments if e.name == experiment), None)
    if spec is None:
        known = ", ".join(e.name for e in policy.experiments)
        raise ValueError(f"no experiment {experiment!r} in the policy (known: {known})")
    rows = conn.execute(
        "SELECT variant, exposed_users, measured_users, converted_users FROM experiment_results"
        " WHERE experiment = %s",
        (experiment,),
    ).fetchall()
    found = {variant: counts for variant, *counts in rows}
    bins, counts = [], []
    for variant in spec.variants:
        for i, what in enumerate(("exposed", "measured", "converted")):
            bins.append(f"{variant.name}.{what}")
            counts.append(found.get(variant.name, [0, 0, 0])[i])
    # A user is exposed in one variant, measured once and converts at most once there.
    return Counts(f"experiment_arms {experiment}", bins, counts, sensitivity=3)


def window_starts(window: str, from_ms: int, to_ms: int) -> list[int]:
    size = WINDOWS[window]
    first = from_ms // size * size
    return list(range(first, to_ms, size))


def window_counts(
    conn: psycopg.Connection,
    window: str,
    from_ms: int,
    to_ms: int,
    windows: int,
    per_window: int | None,
) -> Counts:
    """Per window of the range, the sum over users of min(their events, per_window) (or 1 per
    user with events: active users), over each user's first `windows` windows."""
    size, starts = WINDOWS[window], window_starts(window, from_ms, to_ms)
    if not starts or len(starts) > 10_000:
        raise ValueError(f"the range holds {len(starts)} {window} windows (1 to 10,000)")
    per_user = "least(n, %(cap)s)" if per_window is not None else "1"
    rows = conn.execute(
        "WITH per AS (SELECT user_id, ts_ms / %(size)s * %(size)s AS w, count(*) AS n"
        "   FROM events WHERE ts_ms >= %(lo)s AND ts_ms < %(hi)s GROUP BY 1, 2),"
        " ranked AS (SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY w) AS r FROM per)"
        f" SELECT w, sum({per_user})::bigint FROM ranked WHERE r <= %(k)s GROUP BY w",
        {"size": size, "lo": starts[0], "hi": to_ms, "cap": per_window, "k": windows},
    ).fetchall()
    found = dict(rows)
    name = "event_counts" if per_window is not None else "active_users"
    return Counts(
        f"{name} {window}",
        [datetime.fromtimestamp(s / 1000, UTC).isoformat() for s in starts],
        [int(found.get(s, 0)) for s in starts],
        sensitivity=windows * (per_window or 1),
    )


def release(
    config: Settings,
    epsilon: float,
    query: Callable[[psycopg.Connection], Counts],
    params: dict,
    now: datetime | None = None,
) -> dict:
    """Checks the budget, computes and noises the counts, records the release; all in one
    transaction holding the ledger's lock, so two releases never overspend together."""
    budget = Budget(config.privacy.dp.budget, config.privacy.dp.period)
    start = period_start(now or datetime.now(UTC), budget.period)
    with psycopg.connect(config.postgres.conninfo()) as conn, conn.transaction():
        conn.execute("LOCK TABLE dp_releases IN EXCLUSIVE MODE")
        spent = conn.execute(
            "SELECT coalesce(sum(epsilon), 0) FROM dp_releases WHERE period_start = %s",
            (start,),
        ).fetchone()[0]
        budget.check(spent, epsilon)
        counts = query(conn)
        values = dict(zip(counts.bins, noisy(counts, epsilon), strict=True))
        release_id = conn.execute(
            "INSERT INTO dp_releases (what, params, epsilon, sensitivity, period_start, released)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING release_id",
            (counts.name, Jsonb(params), epsilon, counts.sensitivity, start, Jsonb(values)),
        ).fetchone()[0]
    return {
        "release_id": release_id,
        "what": counts.name,
        "epsilon": epsilon,
        "sensitivity": counts.sensitivity,
        "noise_scale": counts.sensitivity / epsilon,
        "budget_left": round(budget.total - spent - epsilon, 9),
        "period": f"{budget.period} from {start.isoformat()}",
        "values": values,
    }


def iso_ms(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.release",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "what", choices=("cohort_sizes", "experiment_arms", "active_users", "event_counts")
    )
    parser.add_argument("--epsilon", type=float, help="default: privacy.dp.epsilon")
    parser.add_argument("--experiment", help="experiment_arms: its name")
    parser.add_argument("--window", choices=sorted(WINDOWS), default="hour")
    parser.add_argument("--from", dest="from_", help="range start, ISO 8601 (UTC if no zone)")
    parser.add_argument("--to", help="range end (exclusive), ISO 8601")
    parser.add_argument("--windows", type=int, default=24, help="windows counted per user")
    parser.add_argument("--per-window", type=int, default=20, help="events counted per user")
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    epsilon = args.epsilon if args.epsilon is not None else config.privacy.dp.epsilon
    params: dict = {}
    if args.what == "cohort_sizes":

        def query(conn):
            return cohort_sizes(conn, config)
    elif args.what == "experiment_arms":
        if not args.experiment:
            parser.error("experiment_arms needs --experiment")
        params = {"experiment": args.experiment}

        def query(conn):
            return experiment_arms(conn, config, args.experiment)
    else:
        if not (args.from_ and args.to):
            parser.error(f"{args.what} needs --from and --to")
        if args.windows < 1 or args.per_window < 1:
            parser.error("--windows and --per-window must be at least 1")
        per_window = args.per_window if args.what == "event_counts" else None
        lo, hi = iso_ms(args.from_), iso_ms(args.to)
        params = {"window": args.window, "from": lo, "to": hi, "windows": args.windows}
        if per_window is not None:
            params["per_window"] = per_window

        def query(conn):
            return window_counts(conn, args.window, lo, hi, args.windows, per_window)

    try:
        result = release(config, epsilon, query, params)
    except BudgetExceeded as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 2
    except ValueError as bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
