"""What the live dashboard (jobs/dashboard.html, served by jobs/api.py) shows, read from
PostgreSQL in one go: event rates by type, the funnel, cohort sizes over time (the metrics
job's windows), score distributions, actions and outcomes by kind and variant, each
experiment's lift with its interval, and the latest alerts.

The windows shown are the `hours` before the latest window the metrics job wrote, not before
the wall clock: replayed history shows as well as live traffic."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from conf.policy import Policy
from jobs import report

HOUR_MS = 3_600_000
SCORES = ("purchase", "abandonment", "drift")
BINS = 20  # of a score distribution, over [0, 1]


def metric_series(conn: psycopg.Connection, metric: str, since: int) -> dict[str, list]:
    """Dimension -> [[window start, value], ...] of an hourly metric since `since`."""
    series: dict[str, list] = {}
    for row in conn.execute(
        "SELECT dimension, window_start, value FROM metrics WHERE metric = %s"
        " AND window_size = 'hour' AND window_start >= %s ORDER BY window_start",
        (metric, since),
    ).fetchall():
        series.setdefault(row["dimension"] or metric, []).append(
            [row["window_start"], row["value"]]
        )
    return series


def funnel(conn: psycopg.Connection, since: int) -> list[dict]:
    """Users at each funnel stage over the shown hours' latest window that has any."""
    return conn.execute(
        "SELECT dimension AS stage, value AS users FROM metrics WHERE metric = 'funnel_users'"
        " AND window_size = 'hour' AND window_start = (SELECT max(window_start) FROM metrics"
        "  WHERE metric = 'funnel_users' AND window_size = 'hour' AND window_start >= %s)"
        " ORDER BY value DESC",
        (since,),
    ).fetchall()


def score_histograms(conn: psycopg.Connection) -> dict[str, list[int]]:
    """Users per bin of [0, 1] of each learned score, from their latest scores."""
    histograms = {}
    for score in SCORES:
        counts = [0] * BINS
        rows = conn.execute(
            f"SELECT least(width_bucket({score}, 0, 1, %s), %s) AS bin, count(*) AS n"
            f" FROM user_scores WHERE {score} IS NOT NULL GROUP BY 1",
            (BINS, BINS),
        ).fetchall()
        for row in rows:
            counts[max(row["bin"], 1) - 1] += row["n"]
        histograms[score] = counts
    return histograms


def actions_by_variant(conn: psycopg.Connection) -> list[dict]:
    return conn.execute(
        "SELECT a.action, coalesce(a.experiment || '/' || a.variant, '-') AS arm,"
        " count(*) AS decided, count(*) FILTER (WHERE a.delivered) AS delivered,"
        " count(o.decision_id) AS measured, count(*) FILTER (WHERE o.converted) AS converted"
        " FROM actions a LEFT JOIN action_outcomes o USING (decision_id)"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()


def experiments(conn: psycopg.Connection, policy: Policy | None) -> list[dict]:
    """Each configured experiment's arms and lift against its control, with the interval."""
    shown = []
    for spec in policy.experiments if policy else ():
        if spec.leads:
            continue  # no lift of an action: its report is about the lead scores' quality
        result = report.experiment_result(report.exposures(conn, report.Run.configured(spec)), spec)
        shown.append({"experiment": spec.name, "control": report.control_of(spec), **result})
    return shown


def alerts(conn: psycopg.Connection, limit: int = 20) -> list[dict]:
    return conn.execute(
        "SELECT metric, dimension, window_size, window_start, observed, expected_low,"
        " expected_high, severity FROM alerts ORDER BY window_start DESC, alert_id LIMIT %s",
        (limit,),
    ).fetchall()


def panels(conn: psycopg.Connection, policy: Policy | None, hours: int) -> dict[str, Any]:
    conn.row_factory = dict_row
    latest = conn.execute("SELECT max(window_start) FROM metrics").fetchone()["max"]
    since = (latest or 0) - (hours - 1) * HOUR_MS
    return {
        "latest_window": latest,
        "event_rates": metric_series(conn, "events", since),
        "funnel": funnel(conn, since),
        "cohort_sizes": metric_series(conn, "cohort_users", since),
        "scores": {"bins": BINS, "histograms": score_histograms(conn)},
        "actions": actions_by_variant(conn),
        "experiments": experiments(conn, policy),
        "alerts": alerts(conn),
    }
