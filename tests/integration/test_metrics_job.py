"""The metrics job (Flink SQL) over the stream run: its windows equal the same counts made here
in Python from the valid events and the actions topic, and its topic equals its table."""

import json
from collections import Counter, defaultdict

import psycopg
import pytest

from tests.integration.conftest import closed_hours
from udfs.timeunits import HOUR_MS, MINUTE_MS

SUPPORT_PREFIXES = ("/help/", "/error/", "/support/")  # the default metrics.support_pages
FUNNEL = {"product_view": "1_view", "add_to_cart": "2_cart", "checkout_start": "3_checkout"}
FUNNEL["purchase"] = "4_purchase"


def metric_rows(settings, window_size: str) -> dict[tuple, float]:
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT metric, dimension, window_start, value FROM metrics WHERE window_size = %s",
            (window_size,),
        ).fetchall()
    return {(m, d, start): value for m, d, start, value in rows}


def expected_event_metrics(events: list[dict], size_ms: int, windows: set[int]) -> dict:
    """Every events-topic metric of the windows starting at `windows`, counted here."""
    by_window = defaultdict(list)
    for e in events:
        start = e["ts"] // size_ms * size_ms
        if start in windows:
            by_window[start].append(e)
    expected = {}
    for start, window in by_window.items():
        types = Counter(e["type"] for e in window)
        for t, n in types.items():
            expected["events", t, start] = n
        expected["event_rate", "", start] = len(window)
        expected["active_users", "", start] = len({e["user_id"] for e in window})
        pages = [e for e in window if e["type"] == "page_view"]
        for url, n in Counter(e["url"] for e in pages).items():
            expected["page_views", url, start] = n
        if pages:
            support = sum(e["url"].startswith(SUPPORT_PREFIXES) for e in pages)
            expected["support_page_share", "", start] = support / len(pages)
        reached = defaultdict(set)
        for e in window:
            if e["type"] in FUNNEL:
                reached[e["type"]].add(e["user_id"])
        for t, users in reached.items():
            expected["funnel_users", FUNNEL[t], start] = len(users)
        if reached["product_view"]:
            conversion = len(reached["purchase"]) / len(reached["product_view"])
            expected["funnel_conversion", "", start] = conversion
        if types["checkout_start"]:
            expected["checkout_conversion", "", start] = types["purchase"] / types["checkout_start"]
    return expected


EVENT_METRICS = {
    "events",
    "event_rate",
    "active_users",
    "page_views",
    "support_page_share",
    "funnel_users",
    "funnel_conversion",
    "checkout_conversion",
}


def only(rows: dict, metrics: set[str], windows: set[int]) -> dict:
    return {k: v for k, v in rows.items() if k[0] in metrics and k[2] in windows}


def test_hourly_metrics_equal_counts_of_the_valid_events(stream_run, figures):
    hours = closed_hours(stream_run.events, stream_run.settings)
    expected = expected_event_metrics(stream_run.events, HOUR_MS, hours)
    rows = only(metric_rows(stream_run.settings, "hour"), EVENT_METRICS, hours)
    assert rows == pytest.approx(expected)
    assert any(k[0] == "support_page_share" and v > 0 for k, v in rows.items())
    figures(f"{len(rows)} hourly metric values over {len(hours)} hours equal the counts")


def test_minute_metrics_equal_counts_of_the_valid_events(stream_run):
    hours = closed_hours(stream_run.events, stream_run.settings)
    minutes = {h + m * MINUTE_MS for h in hours for m in range(60)}
    expected = expected_event_metrics(stream_run.events, MINUTE_MS, minutes)
    rows = only(metric_rows(stream_run.settings, "minute"), EVENT_METRICS, minutes)
    assert rows == pytest.approx(expected)


def late_hours(records, lag_ms: int) -> set[int]:
    """Hours with an action that reached its partition of the topic after the partition had
    moved more than `lag_ms` past it (event time): the metrics job may have closed that hour's
    window before the action came, and left it out. The profile job's parallel subtasks write
    each partition, so in a replay much faster than real time some actions come that late
    (docs/sql-and-metrics.md)."""
    latest: dict[int, int] = {}
    hours = set()
    for record in records:
        ts = json.loads(record.value)["ts"]
        if ts < latest.get(record.partition, ts) - lag_ms:
            hours.add(ts // HOUR_MS * HOUR_MS)
        latest[record.partition] = max(latest.get(record.partition, ts), ts)
    return hours


def test_action_metrics_count_the_actions_topic(stream_run, stream_topics, figures):
    records = stream_topics["actions"]
    actions = [json.loads(r.value) for r in records]
    hours = closed_hours(actions, stream_run.settings)
    expected = Counter(
        ("actions", f"{a['action']}/{a['variant'] or '-'}", a["ts"] // HOUR_MS * HOUR_MS)
        for a in actions
        if a["ts"] // HOUR_MS * HOUR_MS in hours
    )
    counted = only(metric_rows(stream_run.settings, "hour"), {"actions"}, hours)
    late = late_hours(records, stream_run.settings.profile.out_of_orderness_ms)
    on_time = {k: n for k, n in expected.items() if k[2] not in late}
    assert on_time, "every hour had a late action"
    assert {k: n for k, n in counted.items() if k[2] not in late} == on_time
    for key, n in counted.items():  # an hour with late actions: never more than the topic's
        assert n <= expected[key], f"{key}: {n} counted, {expected[key]} on the topic"
    figures(f"actions: {len(hours) - len(late & hours)} of {len(hours)} hours counted exactly")


def test_the_metrics_topic_holds_the_rows_of_the_metrics_table(stream_run, stream_topics):
    topic = {
        (m["metric"], m["dimension"], m["window_size"], m["window_start"], m["value"])
        for m in (json.loads(r.value) for r in stream_topics["metrics"])
    }
    with psycopg.connect(stream_run.settings.postgres.conninfo()) as conn:
        table = set(
            conn.execute(
                "SELECT metric, dimension, window_size, window_start, value FROM metrics"
            ).fetchall()
        )
    assert table and topic == table
