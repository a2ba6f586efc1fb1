"""Anomaly alerts of the metrics job on three generated weeks of a busier shop: one with a
payment outage injected from day 14 for three days (checkouts fail, users land on error and
support pages), one clean. The outage is alerted within `metrics.max_alert_delay_ms` of event
time after its onset; the clean weeks raise at most FALSE_ALARM_BOUND alerts."""

import json

import psycopg
import pytest
from psycopg.rows import dict_row

from conf.settings import OUTPUT_TOPICS, Incident
from models.generator import EventGenerator
from tests.integration.conftest import (
    closed_hours,
    hourly_event_windows,
    outputs_of_own,
    publish,
    run_metrics_job,
    topic_records,
)
from udfs import contracts
from udfs.timeunits import HOUR_MS

START_MS = 1_777_593_600_000  # 2026-05-01T00:00:00Z
USERS, DAYS = 1000, 21
OUTAGE = Incident(start_day=14, days=3)
# At most this many alerts over the clean weeks (of 3 rules x about 500 hourly windows).
FALSE_ALARM_BOUND = 2


def metrics_run(local_stack, incident: Incident | None, seed: int) -> dict:
    with outputs_of_own(local_stack, ("events", *OUTPUT_TOPICS)) as own:
        generator = own.generator.model_copy(
            update={"start_ts_ms": START_MS, "support_page_rate": 0.03, "incident": incident}
        )
        metrics = own.metrics.model_copy(update={"window_sizes": ("hour",)})
        settings = own.model_copy(update={"generator": generator, "metrics": metrics})
        history = EventGenerator(generator, users=USERS, days=DAYS, seed=seed).generate()
        publish(settings, [(e["user_id"], json.dumps(e).encode()) for e in history.events])
        hours = closed_hours(history.events, settings)
        run_metrics_job(settings, lambda: hourly_event_windows(settings, hours) == len(hours))
        with psycopg.connect(settings.postgres.conninfo(), row_factory=dict_row) as conn:
            alerts = conn.execute("SELECT * FROM alerts ORDER BY window_start").fetchall()
        records = topic_records(settings, settings.kafka.topics.alerts)
        return {
            "settings": settings,
            "history": history,
            "alerts": alerts,
            "records": records,
            "hours": len(hours),
        }


@pytest.fixture(scope="module")
def outage(local_stack):
    return metrics_run(local_stack, OUTAGE, seed=31)


@pytest.fixture(scope="module")
def clean(local_stack):
    return metrics_run(local_stack, None, seed=32)


def test_an_outage_is_alerted_within_the_configured_delay(outage, figures):
    [incident] = outage["history"].incidents
    during = [
        a for a in outage["alerts"] if incident.start_ms <= a["window_start"] < incident.end_ms
    ]
    assert during, "no alert during the outage"
    first = during[0]
    delay = first["window_end"] - incident.start_ms
    assert delay <= outage["settings"].metrics.max_alert_delay_ms
    assert first["severity"] in ("warning", "critical")
    kinds = sorted({a["metric"] for a in during})
    figures(
        f"outage from {incident.start_ms}: first alert {first['metric']} "
        f"({first['severity']}, z {first['z_score']:.1f}) {delay / HOUR_MS:.1f} h of event time "
        f"after onset; {len(during)} alerts during the outage ({', '.join(kinds)})"
    )


def test_alerts_before_the_outage_and_on_clean_weeks_stay_within_the_bound(outage, clean, figures):
    [incident] = outage["history"].incidents
    before = [a for a in outage["alerts"] if a["window_end"] <= incident.start_ms]
    false_alarms = [*before, *clean["alerts"]]
    rules = len(clean["settings"].metrics.alert_rules)
    figures(
        f"false alarms: {len(clean['alerts'])} in {clean['hours']} clean hours and "
        f"{len(before)} before the outage, {rules} rules each (bound {FALSE_ALARM_BOUND})"
    )
    for a in false_alarms:
        figures(f"  {a['alert_id']}: observed {a['observed']:.3f}, z {a['z_score']:.1f}")
    assert len(false_alarms) <= FALSE_ALARM_BOUND


def test_alert_records_meet_their_contract_and_equal_the_alerts_table(outage):
    _, value_valid = contracts.validators("alerts")
    topic = {}
    for record in outage["records"]:
        alert = json.loads(record.value)
        value_valid(alert)
        topic[alert["alert_id"]] = alert
    assert topic and topic.keys() == {a["alert_id"] for a in outage["alerts"]}
    for a in outage["alerts"]:
        assert topic[a["alert_id"]]["observed"] == a["observed"]
