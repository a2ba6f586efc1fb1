"""A continuous Flink SQL query submitted to the standalone cluster (`make submit JOB=sql
FILE=...`) runs as a long-running job and writes its results: hourly purchases of the stream
run's events topic, into a table the analyst made, through Flink's JDBC catalog."""

import json
import time
import urllib.request
from collections import Counter

import psycopg
import pytest

from conf import stack
from tests.integration.conftest import closed_hours, config_file
from udfs.timeunits import HOUR_MS

pytestmark = pytest.mark.cluster

SCRIPT = """
-- Purchases and revenue per hour of event time, kept up to date as events arrive.
SET 'execution.runtime-mode' = 'streaming';
USE CATALOG pg;
INSERT INTO analyst_hourly_purchases
SELECT EXTRACT(EPOCH FROM window_start) * 1000, COUNT(*), SUM(total)
FROM TABLE(TUMBLE(TABLE default_catalog.kafka.events, DESCRIPTOR(event_time), INTERVAL '1' HOUR))
WHERE type = 'purchase'
GROUP BY window_start, window_end;
"""


def running_jobs(settings, name_part: str) -> list[str]:
    url = f"http://localhost:{settings.flink.rest_port}/jobs/overview"
    with urllib.request.urlopen(url, timeout=10) as response:
        jobs = json.load(response)["jobs"]
    return [j["jid"] for j in jobs if j["state"] == "RUNNING" and name_part in j["name"]]


def cancel(settings, job_id: str) -> None:
    url = f"http://localhost:{settings.flink.rest_port}/jobs/{job_id}?mode=cancel"
    urllib.request.urlopen(urllib.request.Request(url, method="PATCH"), timeout=10).close()


def test_a_continuous_query_on_the_cluster_writes_its_results(
    flink_cluster, stream_run, tmp_path, monkeypatch, figures
):
    settings = stream_run.settings
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE analyst_hourly_purchases (window_start bigint PRIMARY KEY,"
            " purchases bigint NOT NULL, revenue double precision NOT NULL)"
        )
    # The cluster's client reads the run's own topics and database from this configuration.
    monkeypatch.setenv("BEHAVIOR_CONFIG", config_file(settings, tmp_path))
    script = tmp_path / "hourly_purchases.sql"
    script.write_text(SCRIPT)

    assert stack.submit(settings, "sql", ["--file", str(script), "--detach"]) == 0
    [job] = running_jobs(settings, "analyst_hourly_purchases")  # left running: a long job
    purchases = [e for e in stream_run.events if e["type"] == "purchase"]
    hours = closed_hours(stream_run.events, settings)
    expected = Counter(e["ts"] // HOUR_MS * HOUR_MS for e in purchases)
    expected = {h: n for h, n in expected.items() if h in hours}
    revenue = Counter()
    for e in purchases:
        revenue[e["ts"] // HOUR_MS * HOUR_MS] += e["total"]
    try:
        deadline = time.monotonic() + 180
        while True:
            with psycopg.connect(settings.postgres.conninfo()) as conn:
                rows = conn.execute(
                    "SELECT window_start, purchases, revenue FROM analyst_hourly_purchases"
                ).fetchall()
            written = {start: n for start, n, _ in rows if start in hours}
            if written == expected or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert written == expected
        assert {s: r for s, _, r in rows if s in hours} == pytest.approx(
            {h: revenue[h] for h in expected}
        )
        assert running_jobs(settings, "analyst_hourly_purchases") == [job]
        figures(f"{len(written)} hourly rows written by the cluster job {job}")
    finally:
        cancel(settings, job)
