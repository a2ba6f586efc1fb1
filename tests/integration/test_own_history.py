"""A shop's own log (tests/data/returning_customers.csv.gz, customers who come back after two to
six quiet months) through `make replay`, the profile job and `make train` from the archive, on
the real broker and PostgreSQL: exact purchase history per customer across gaps longer than the
short-term retention, dormant profiles that say so in the table and on the topic, and a model
version learned from the archived history with its report and gate decision."""

import csv
import gzip
import json
import re
import shutil
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from jobs import local_run
from models import datasets
from models.history import ArchiveHistory
from models.registry import Registry
from models.train import collect, register, train
from tests.data import shop_log
from tests.integration.conftest import topic_records, without_recommendations
from udfs.pseudonyms import configured_subject
from udfs.timeunits import DAY_MS

MAPPING = Path(__file__).resolve().parents[2] / "conf" / "mappings" / "retail_clickstream.yaml"


def from_the_log() -> tuple[dict, dict, int]:
    """Computed from the CSV alone: per customer (orders, spend, last order time), per visitor
    the time of their last row that is a valid event (a view with its price, a cart add, a
    purchase), and how many rows are valid events."""
    with gzip.open(shop_log.PATH, "rt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    orders, last_valid, valid_rows = {}, {}, 0
    for row in rows:
        ts, user = int(row["timestamp"]), row["visitorid"]
        valid = row["event"] in ("addtocart", "transaction") or (
            row["event"] == "view" and row["price"]
        )
        if valid:
            last_valid[user] = max(last_valid.get(user, ts), ts)
            valid_rows += 1
        if row["event"] == "transaction":
            count, total, last = orders.get(user, (0, 0.0, 0))
            orders[user] = (count + 1, total + float(row["price"]), max(last, ts))
    return orders, last_valid, valid_rows


def latest_records(settings) -> dict[str, dict | None]:
    latest = {}
    for record in topic_records(settings):
        user = record.key.decode()
        latest[user] = json.loads(record.value) if record.value is not None else None
    return latest


def test_a_shops_log_keeps_exact_purchases_across_quiet_months_and_trains_from_the_archive(
    own_outputs, trained, tmp_path, figures, capsys
):
    models = own_outputs.models.model_copy(update={"directory": str(trained.registry.directory)})
    settings = without_recommendations(own_outputs.model_copy(update={"models": models}))
    ttl, long_ttl = settings.profile.ttl_ms, settings.profile.long_term_ttl_ms
    # `make run FILE=... MAPPING=...`
    assert local_run.run_log(settings, shop_log.PATH, MAPPING) == 0
    summary = capsys.readouterr().out
    assert re.search(r"accounted for +all rows", summary), summary

    orders, last_valid, valid_rows = from_the_log()
    # The outputs name each visitor by pseudonym: back to the log's ids.
    subject = configured_subject(settings.privacy)
    visitor = {subject(u): u for u in last_valid}
    with psycopg.connect(settings.postgres.conninfo(), row_factory=dict_row) as conn:
        profiles = conn.execute("SELECT * FROM user_profiles").fetchall()
    rows = {visitor[r["user_id"]]: r for r in profiles}
    # The log is longer than the long-term retention: visitors not seen for that long before
    # it ended are forgotten, their rows deleted and their records tombstoned.
    end = max(last_valid.values())
    forgotten = {u for u, ts in last_valid.items() if ts + long_ttl < end - DAY_MS}
    assert len(forgotten) > 50 and not forgotten & set(rows)
    assert re.search(rf"users forgotten +{len(forgotten)} ", summary), summary
    assert {u for u, ts in last_valid.items() if ts + long_ttl > end} <= set(rows)
    latest = {visitor[u]: record for u, record in latest_records(settings).items()}
    assert all(latest[u] is None for u in forgotten)

    # Exact standard RFM for every customer still known, those back after long silences too.
    came_back = 0
    for user, (count, total, last_order) in orders.items():
        if user in forgotten:
            continue
        row = rows[user]
        assert row["as_of_ts"] == last_valid[user], user
        assert (row["purchase_count"], row["spend_total"]) == (count, pytest.approx(total)), user
        assert row["spend_mean"] == pytest.approx(total / count), user
        assert row["days_since_purchase"] == pytest.approx((row["as_of_ts"] - last_order) / DAY_MS)
        assert 1 <= row["rfm_r"] <= 5 and 1 <= row["rfm_f"] <= 5 and 1 <= row["rfm_m"] <= 5
        came_back += user.startswith("1") and count >= 3
    assert came_back >= 40, "customers with three orders or more, months apart"
    assert all(row["purchase_count"] == 0 for u, row in rows.items() if u not in orders)

    # Dormant: no event for longer than the short-term retention before the log ended (the
    # end of the input itself expires nobody).
    quiet = {u for u, ts in last_valid.items() if ts + ttl < end - DAY_MS} - forgotten
    recent = {u for u, ts in last_valid.items() if ts + ttl > end}
    assert len(quiet) > 100 and recent
    assert {u for u in quiet if rows[u]["dormant"]} == quiet
    assert not any(rows[u]["dormant"] for u in recent)
    # The topic says what the table says.
    for user, row in rows.items():
        record = latest[user]
        assert (record["version"], record["dormant"]) == (row["version"], row["dormant"]), user
        assert record["purchase_count"] == row["purchase_count"], user
    figures(
        f"{len(orders)} customers' orders exact; {came_back} came back 3+ times months apart; "
        f"{len(quiet)} dormant profiles and {len(forgotten)} forgotten users, in table and topic"
    )

    # `make train` from the archive of this log.
    collected = collect(ArchiveHistory(settings), settings.models, settings.profile)
    assert collected.events == valid_rows
    report, result = train(settings, collected, trained.manifest, trained.registry)
    directory = tmp_path / "models"
    shutil.copytree(trained.registry.directory, directory)
    own = settings.model_copy(
        update={"models": settings.models.model_copy(update={"directory": str(directory)})}
    )
    manifest = register(own, report, result, postgres=True)
    trained_targets = [t for t in datasets.TARGETS if "skipped" not in report["propensity"][t]]
    assert "abandonment" in trained_targets
    for target in trained_targets:
        evaluation = report["propensity"][target]
        assert {"model", "baseline", "active"} <= set(evaluation), target
        assert evaluation["active"]["version"] == 1
        # The log has no page views: dwell and scroll are missing, so no model uses them.
        assert {"log_dwell_s", "scroll_mean"} <= set(evaluation["dropped_features"]), target
        features = manifest["models"][f"{target}-global"]["features"]
        assert "log_dwell_s" not in features and "log_events" in features
    decision = report["gate"]["decision"]
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        statuses = conn.execute(
            "SELECT DISTINCT status FROM model_registry WHERE version = 2"
        ).fetchall()
    assert statuses == [(decision,)]
    registry = Registry(directory)
    assert registry.load()["version"] == (2 if decision == "active" else 1)
    assert manifest["rfm_breakpoints"]["frequency"][0] >= 1
    summary = (directory / "reports" / "v2" / "report.md").read_text()
    assert summary.startswith(f"# Model version 2: {decision}")
    figures(
        "trained from the archive: "
        + ", ".join(
            f"{t} ROC AUC {report['propensity'][t]['model']['roc_auc']} (baseline "
            f"{report['propensity'][t]['baseline']['roc_auc']}, active v1 "
            f"{report['propensity'][t]['active']['roc_auc']})"
            for t in trained_targets
        )
        + f"; gate: {decision}"
    )
