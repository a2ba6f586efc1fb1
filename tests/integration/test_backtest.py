"""Backtests (jobs/backtest.py): a generated month goes through the real broker and the profile
job, which archives it and decides; then the job's own pipeline runs over that archive in
Flink's batch mode. With the policy the job ran, the backtest decides exactly what the job
decided; `make backtest` with two policies writes their comparison, and never touches the live
tables."""

import json
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from conf.policy import load_policy
from jobs import backtest
from jobs import profile as profile_job
from models.generator import EventGenerator
from tests.conftest import assert_nearly_equal, event_bytes, without_ranked_items
from tests.integration.conftest import (
    config_file,
    outputs_of_own,
    publish,
    without_recommendations,
)
from udfs.pseudonyms import configured_subject

MONTH_START_MS = 1_790_812_800_000  # 2026-10-01T00:00:00Z: this test's own stretch of time
USERS, DAYS, SEED = 40, 30, 77
STRICTER_DISCOUNT = 0.85  # the second candidate offers the discount only above this


@pytest.fixture(scope="module")
def archived_month(local_stack, trained, tmp_path_factory):
    """A generated month published and run through the profile job (bounded), which archives
    every event and records its decisions in its own database."""
    with outputs_of_own(local_stack, ("events", "control", "consent")) as own:
        models = own.models.model_copy(update={"directory": str(trained.registry.directory)})
        generator = own.generator.model_copy(update={"start_ts_ms": MONTH_START_MS, "late_rate": 0})
        settings = without_recommendations(
            own.model_copy(update={"models": models, "generator": generator})
        )
        history = EventGenerator(generator, USERS, DAYS, SEED).generate()
        batch = publish(settings, [(e["user_id"], event_bytes(e)) for e in history.events])
        profile_job.run(settings, *batch.bounds())
        yield settings, history, tmp_path_factory.mktemp("backtest")


def job_decisions(settings) -> dict[str, dict]:
    with psycopg.connect(settings.postgres.conninfo(), row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM actions").fetchall()
    return {r["decision_id"]: r for r in rows}


def comparable(decision: dict) -> dict:
    """A decision as the job and the backtest both record it; the item ids of a list depend on
    what the ranking step knew when it ranked, not on the decision."""
    return {**decision, "payload": without_ranked_items(decision["payload"])}


def test_a_backtest_of_the_policy_the_job_ran_decides_what_the_job_decided(archived_month, figures):
    settings, history, _ = archived_month
    manifest = backtest.manifest_of(settings, None)
    records = backtest.in_force(settings, backtest.Candidate("configured", None), manifest)
    first, last, events, users = backtest.archive_span(settings, None, None)
    assert events == len(history.events) and users == USERS
    decided = {
        d["decision_id"]: d
        for d in backtest.run_candidate(settings, records, first, last + 1, last)
    }
    job = job_decisions(settings)
    figures(
        f"{events:,} archived events of {users} users over {DAYS} days: the job made"
        f" {len(job)} decisions, the batch backtest {len(decided)}"
    )
    assert len(job) >= 20, "the month gives the policy something to decide"
    assert set(decided) == set(job)
    for decision_id, row in job.items():
        assert_nearly_equal(comparable(decided[decision_id]), comparable(row), decision_id)


def write_policy(settings, folder: Path, name: str, discount_threshold: float | None) -> Path:
    """The configured policy in one file (actions and experiments), with the discount offered
    above `discount_threshold` if given."""
    actions = yaml.safe_load(Path(settings.actions.actions_file).read_text())
    experiments = yaml.safe_load(Path(settings.actions.experiments_file).read_text())
    for action in actions["actions"]:
        if action["name"] == "discount_offer" and discount_threshold is not None:
            action["threshold"] = discount_threshold
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**actions, **experiments}))
    load_policy(path, path)  # a valid policy
    return path


def test_make_backtest_compares_two_policies_and_leaves_the_live_tables_alone(
    archived_month, monkeypatch, capsys
):
    settings, _, folder = archived_month
    shipped = write_policy(settings, folder, "shipped", None)
    stricter = write_policy(settings, folder, "stricter", STRICTER_DISCOUNT)
    before = job_decisions(settings)
    monkeypatch.setenv("BEHAVIOR_CONFIG", config_file(settings, folder))
    out = folder / "results"
    argv = ["--policy", str(shipped), str(stricter), "--out", str(out)]
    assert backtest.main(argv) == 0
    printed = capsys.readouterr().out
    [run] = list(out.iterdir())
    comparison = json.loads((run / "comparison.json").read_text())
    decided = {name: read_decisions(run / f"{name}.jsonl") for name in ("shipped", "stricter")}
    assert set(comparison["candidates"]) == set(decided)
    # The files name users as the analytical outputs do.
    subject = configured_subject(settings.privacy)
    assert {r["user_id"] for r in decided["shipped"]} == {
        subject(r["user_id"]) for r in before.values()
    }
    assert {r["decision_id"] for r in decided["shipped"]} == set(before)

    offers = comparison["against_first"]["stricter"]["by_action"]["discount_offer"]
    targeted = {
        name: {r["user_id"] for r in rows if r["action"] == "discount_offer"}
        for name, rows in decided.items()
    }
    assert (offers["users_a"], offers["users_b"]) == (
        len(targeted["shipped"]),
        len(targeted["stricter"]),
    )
    assert offers["both"] == len(targeted["shipped"] & targeted["stricter"])
    assert any(
        r["score"] < STRICTER_DISCOUNT
        for r in decided["shipped"]
        if r["action"] == "discount_offer"
    )
    assert all(
        r["score"] >= STRICTER_DISCOUNT
        for r in decided["stricter"]
        if r["action"] == "discount_offer"
    )
    assert "stricter against shipped" in printed and "discount_offer" in printed
    assert (run / "decisions_per_day.png").read_bytes()[:4] == b"\x89PNG"
    assert job_decisions(settings) == before, "a backtest writes nothing to the live tables"


def read_decisions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
