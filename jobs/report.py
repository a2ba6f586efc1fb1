"""`make report EXPERIMENT=<name>`: the experiment's results from PostgreSQL (actions and their
outcomes; an experiment about lead scoring has its own, jobs/lead_report.py). Each user counts
once, at their first exposure, with the outcome of its attribution window (view
`experiment_exposures`): users and conversion per variant, each variant against the control with
absolute and relative lift, confidence intervals, a two-proportion z-test and an always-valid
p-value, the sample-ratio check against the configured weights, and a picture of cumulative
conversion over event time per variant (PNG, written next to a JSON copy of the numbers)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import psycopg
from psycopg.rows import tuple_row

from conf import settings as settings_module
from conf.policy import Experiment, load_policy
from conf.settings import Privacy, Settings
from models.experiment_stats import (
    Arm,
    Effect,
    balance,
    compare,
    mean_effect,
    ratio_effect,
    sample_ratio,
)
from udfs.pseudonyms import configured_subject
from udfs.timeunits import DAY_MS

OPEN_START, OPEN_END = -(2**63), 2**63 - 1  # an open end of a run, as a bigint bound


class UserOutcome(NamedTuple):
    """A user at their first exposure in the run, with the outcome of its attribution window."""

    variant: str
    user_id: str
    first_ts: int
    converted: bool
    revenue: float = 0.0


class UserHistory(NamedTuple):
    """What the per-user metrics beyond conversion need: the pre-exposure covariate (purchases
    and revenue in the experiment's pre-period, from the event archive) and the user's exposed
    sessions in the run, with how many of them converted."""

    pre_purchases: int
    pre_revenue: float
    sessions: int
    converted_sessions: int


class Run(NamedTuple):
    """One run of an experiment: its decisions in [since, until) (event time; None: open) made
    with one version of its arms (None: any version)."""

    experiment: str
    since: int | None = None
    until: int | None = None
    arms: str | None = None

    @classmethod
    def configured(cls, spec: Experiment, since=None, until=None, any_arms=False) -> Run:
        """The run `spec` configures with its current arms; `since`/`until` override its period,
        `any_arms` pools every version of the arms."""
        start, end = spec.run_ms()
        return cls(
            spec.name,
            start if since is None else since,
            end if until is None else until,
            None if any_arms else spec.arms_version,
        )

    def params(self) -> dict:
        return {
            "e": self.experiment,
            "since": OPEN_START if self.since is None else self.since,
            "until": OPEN_END if self.until is None else self.until,
            "arms": self.arms,
        }


# The run's decisions (alias a).
RUN_DECISIONS = (
    "a.experiment = %(e)s AND a.ts >= %(since)s AND a.ts < %(until)s"
    " AND (%(arms)s::text IS NULL OR a.arms = %(arms)s)"
)


def first_exposures(conn: psycopg.Connection, run: Run, columns: str) -> list[tuple]:
    """`columns` of each user's first decision in the run (f) and its outcome (o); users whose
    window is still open are not counted yet."""
    query = (
        f"SELECT {columns} FROM ("
        f"  SELECT DISTINCT ON (a.user_id) a.* FROM actions a WHERE {RUN_DECISIONS}"
        "  ORDER BY a.user_id, a.ts, a.decision_id) f"
        " JOIN action_outcomes o USING (decision_id)"
    )
    return conn.cursor(row_factory=tuple_row).execute(query, run.params()).fetchall()


def user_outcomes(config: Settings, run: Run) -> list[UserOutcome]:
    with psycopg.connect(config.postgres.conninfo()) as conn:
        return exposures(conn, run)


def exposures(conn: psycopg.Connection, run: Run) -> list[UserOutcome]:
    """Each user at their first decision in the run, with its outcome."""
    columns = "f.variant, f.user_id, f.ts, o.converted, o.revenue"
    return [UserOutcome(*row) for row in first_exposures(conn, run, columns)]


def histories(
    conn: psycopg.Connection,
    run: Run,
    outcomes: list[UserOutcome],
    pre_period_ms: int,
    archive_id,
) -> dict[str, UserHistory]:
    """The UserHistory of each user in `outcomes`; `archive_id` names a user as the event archive
    does (their id, or its pseudonym with privacy.pseudonymize_archive)."""
    users = [o.user_id for o in outcomes]
    cursor = conn.cursor(row_factory=tuple_row)
    before = dict.fromkeys(users, (0, 0.0))
    before |= {
        user: (purchases, revenue)
        for user, purchases, revenue in cursor.execute(
            "SELECT u.user_id, count(e.event_id),"
            " coalesce(sum((e.properties ->> 'total')::double precision), 0)"
            " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(user_id, archived, first_ts)"
            " LEFT JOIN events e ON e.user_id = u.archived AND e.type = 'purchase'"
            "  AND e.ts_ms >= u.first_ts - %s AND e.ts_ms < u.first_ts"
            " GROUP BY u.user_id",
            (users, [archive_id(u) for u in users], [o.first_ts for o in outcomes], pre_period_ms),
        )
    }
    # An exposed session: one with a decision of the experiment in the run, counted when its
    # outcome is known (a decision without an event, from a timer, is a session of its own).
    sessions = dict.fromkeys(users, (0, 0))
    sessions |= {
        user: (n, converted)
        for user, n, converted in cursor.execute(
            "SELECT a.user_id, count(DISTINCT coalesce(e.session_id, a.decision_id)),"
            " count(DISTINCT coalesce(e.session_id, a.decision_id)) FILTER (WHERE o.converted)"
            " FROM unnest(%(users)s::text[], %(first)s::bigint[]) AS u(user_id, first_ts)"
            f" JOIN actions a ON a.user_id = u.user_id AND a.ts >= u.first_ts AND {RUN_DECISIONS}"
            " JOIN action_outcomes o ON o.decision_id = a.decision_id"
            " LEFT JOIN events e ON e.event_id = a.event_id"
            " GROUP BY a.user_id",
            {"users": users, "first": [o.first_ts for o in outcomes], **run.params()},
        )
    }
    return {u: UserHistory(*before[u], *sessions[u]) for u in users}


def archive_naming(privacy: Privacy):
    """How the event archive names a user: by their id, or with privacy.pseudonymize_archive
    by their pseudonym."""
    return configured_subject(privacy) if privacy.pseudonymize_archive else str


def control_of(spec: Experiment) -> str:
    return next((v.name for v in spec.variants if v.control), spec.variants[0].name)


def experiment_result(rows, spec: Experiment, users: dict[str, UserHistory] | None = None) -> dict:
    """The report of the experiment `spec` from its user_outcomes rows (and their histories)."""
    return analyse(rows, {v.name: v.weight for v in spec.variants}, control_of(spec), users)


def experiment_report(
    conn: psycopg.Connection, spec: Experiment, privacy: Privacy, run: Run | None = None
) -> tuple[list[UserOutcome], dict]:
    """The whole report of one run of `spec` (default: the run it configures)."""
    run = run or Run.configured(spec)
    rows = exposures(conn, run)
    pre_period = spec.pre_period_days * DAY_MS
    users = histories(conn, run, rows, pre_period, archive_naming(privacy))
    result = experiment_result(rows, spec, users)
    result["run"] = {
        "since": run.since,
        "until": run.until,
        "arms": run.arms,
        "pre_period_days": spec.pre_period_days,
    }
    return rows, result


def arms_of(rows) -> dict[str, Arm]:
    """Exposed and converted users per variant, from user_outcomes rows."""
    users: dict[str, int] = defaultdict(int)
    converted: dict[str, int] = defaultdict(int)
    for row in rows:
        users[row.variant] += 1
        converted[row.variant] += row.converted
    return {v: Arm(users[v], converted[v]) for v in users}


def analyse(rows, weights: dict[str, float], control: str, users=None) -> dict:
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
    by_variant = defaultdict(list)
    for row in rows:
        by_variant[row.variant].append(row)
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
        if users is not None and min(len(by_variant[control]), len(by_variant[v])) >= 2:
            result["against_control"][v] |= per_user_metrics(
                by_variant[control], by_variant[v], users
            )
    return result


def per_user_metrics(control: list, treated: list, users: dict[str, UserHistory]) -> dict:
    """Conversion and revenue per user, each without and with CUPED adjustment by its own
    pre-exposure counterpart; conversion per exposed session (delta method); and the balance of
    the pre-exposure purchases between the arms."""

    def column(rows, pick):
        return [pick(r, users[r.user_id]) for r in rows]

    metrics = {}
    for name, outcome, covariate in (
        ("conversion", lambda r, h: float(r.converted), lambda r, h: h.pre_purchases),
        ("revenue_per_user", lambda r, h: r.revenue, lambda r, h: h.pre_revenue),
    ):
        m = mean_effect(
            column(control, outcome),
            column(treated, outcome),
            column(control, covariate),
            column(treated, covariate),
        )
        metrics[name] = {
            "unadjusted": effect_dict(m.unadjusted),
            "cuped": effect_dict(m.adjusted),
            "variance_reduction": m.variance_reduction,
        }
    sessions = [
        (column(rows, lambda r, h: h.converted_sessions), column(rows, lambda r, h: h.sessions))
        for rows in (control, treated)
    ]
    if all(sum(den) > 0 for _, den in sessions):
        control_ratio, treated_ratio, effect = ratio_effect(*sessions)
        metrics["conversion_per_exposed_session"] = {
            "control": control_ratio,
            "treated": treated_ratio,
            **effect_dict(effect),
        }
    b = balance(
        column(control, lambda r, h: h.pre_purchases), column(treated, lambda r, h: h.pre_purchases)
    )
    metrics["balance"] = {
        "covariate": "pre_purchases",
        "control_mean": b.control_mean,
        "treated_mean": b.treated_mean,
        "standardized_difference": b.standardized_difference,
        "p_value": b.p_value,
        "imbalanced": b.imbalanced,
    }
    return metrics


def effect_dict(e: Effect) -> dict:
    return {"lift": e.estimate, "ci": list(e.ci), "p_value": e.p_value}


def plot(rows, path: Path, experiment: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for variant in sorted({r.variant for r in rows}):
        mine = sorted((r.first_ts, r.converted) for r in rows if r.variant == variant)
        days, rates, n, hits = [], [], 0, 0
        for ts, bought in mine:
            n, hits = n + 1, hits + bought
            days.append(ts / DAY_MS)
            rates.append(hits / n)
        start = min(r.first_ts for r in rows) / DAY_MS
        ax.plot([d - start for d in days], rates, label=f"{variant} ({n} users)")
    ax.set_xlabel("days since the first exposure (event time)")
    ax.set_ylabel("cumulative conversion of exposed users")
    ax.set_title(f"experiment {experiment}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def epoch_ms(text: str) -> int:
    """An ISO date or time on the command line (UTC unless it says otherwise) as epoch ms."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def interval(ci) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def period_of(run: dict) -> str:
    """A run's period as printed: its bounds in ISO time (UTC), or open."""
    return " to ".join(
        "open" if t is None else datetime.fromtimestamp(t / 1000, UTC).isoformat()
        for t in (run["since"], run["until"])
    )


def print_report(spec: Experiment, result: dict, out: Path) -> None:
    control = control_of(spec)
    run = result["run"]
    period = period_of(run)
    arms = "any version" if run["arms"] is None else f"version {run['arms']}"
    print(
        f"experiment {spec.name} (control: {control}), first exposures from {period},"
        f" arms of {arms}"
    )
    for v, a in result["arms"].items():
        print(f"  {v:<16}{a['users']:>7,} users{a['converted']:>7,} converted  {a['rate']:.3f}")
    for v, c in result["against_control"].items():
        print(
            f"  {v} vs {control}: lift {c['absolute_lift']:+.4f} {interval(c['absolute_ci'])},"
            f" p = {c['p_value']:.3g}, always-valid p = {c['always_valid_p']:.3g}"
        )
        for metric in ("conversion", "revenue_per_user"):
            if metric in c:
                m = c[metric]
                print(
                    f"    {metric:<18} unadjusted {m['unadjusted']['lift']:+.4f}"
                    f" {interval(m['unadjusted']['ci'])}   CUPED {m['cuped']['lift']:+.4f}"
                    f" {interval(m['cuped']['ci'])}"
                    f"   variance reduced {m['variance_reduction']:.0%}"
                )
        if "conversion_per_exposed_session" in c:
            r = c["conversion_per_exposed_session"]
            print(
                f"    conversion per exposed session {r['control']:.4f} -> {r['treated']:.4f}:"
                f" {r['lift']:+.4f} {interval(r['ci'])} (delta method)"
            )
        if "balance" in c:
            b = c["balance"]
            verdict = "IMBALANCED" if b["imbalanced"] else "ok"
            print(
                f"    balance of pre-exposure purchases: {b['control_mean']:.3f} vs"
                f" {b['treated_mean']:.3f}, standardized difference"
                f" {b['standardized_difference']:+.3f}, p = {b['p_value']:.3g} ({verdict})"
            )
    srm = result["sample_ratio"]
    if srm["checked"]:
        verdict = "MISMATCH" if srm["mismatch"] else "ok"
        print(f"  sample ratio: p = {srm['p_value']:.3g} ({verdict})")
    else:
        print("  sample ratio: not checked (an arm expects fewer than 5 users)")
    print(f"  written: {out / (spec.name + '.png')}, {out / (spec.name + '.json')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.report", description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument(
        "--from",
        dest="since",
        type=epoch_ms,
        help="first exposures from (ISO date or time, UTC);"
        " default: the experiment's configured start",
    )
    parser.add_argument(
        "--until", type=epoch_ms, help="first exposures before (ISO); default: its configured end"
    )
    parser.add_argument(
        "--any-arms",
        action="store_true",
        help="pool the decisions of every version of the arms (default: the configured one)",
    )
    parser.add_argument("--out", default=".local/reports", help="folder for the PNG and JSON")
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    policy = load_policy(config.actions.actions_file, config.actions.experiments_file)
    spec = next((e for e in policy.experiments if e.name == args.experiment), None)
    if spec is None:
        known = ", ".join(e.name for e in policy.experiments) or "none"
        print(f"error: no experiment {args.experiment!r} (configured: {known})", file=sys.stderr)
        return 2
    out = Path(args.out)
    if spec.leads:
        return report_on_leads(config, spec, args.since, args.until, out)
    with psycopg.connect(config.postgres.conninfo()) as conn:
        run = Run.configured(spec, args.since, args.until, args.any_arms)
        rows, result = experiment_report(conn, spec, config.privacy, run)
    if not rows:
        print(f"experiment {spec.name}: no exposed users with an outcome in the run yet")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{spec.name}.json").write_text(json.dumps(result, indent=2))
    plot(rows, out / f"{spec.name}.png", spec.name)
    print_report(spec, result, out)
    return 0


def report_on_leads(config: Settings, spec: Experiment, since, until, out: Path) -> int:
    """An experiment about lead scoring has a report of its own (it imports this module)."""
    from jobs import lead_report

    with psycopg.connect(config.postgres.conninfo()) as conn:
        horizon = config.leads.horizon_ms
        rows, result = lead_report.lead_experiment_report(conn, spec, horizon, since, until)
    if not rows:
        waiting = result["run"]["left_out_without_outcome"]
        print(
            f"experiment {spec.name}: no lead scores with an outcome in the run yet"
            f" ({waiting:,} whose horizon of {horizon / DAY_MS:g} days outlasts the archived"
            " events)"
        )
        return 0
    lead_report.write(spec, result, out)
    lead_report.print_lead_report(spec, result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
