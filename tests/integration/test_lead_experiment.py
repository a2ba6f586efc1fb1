"""The experiment about lead scoring (conf/experiments.yaml `lead_modifiers`) in the shared
stream run (80 users, four days, real broker and PostgreSQL; a lead's horizon is a day there):
every lead score of the experiment's users gets exactly one outcome, in topic and table, which
says whether its user bought within the horizon after it; the arm without modifiers is served
unmodified scores; and `make report` gives each arm the AUC the outcomes give."""

import json
from collections import defaultdict

import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row
from sklearn.metrics import roc_auc_score

from conf.policy import load_policy
from jobs import report
from jobs.lead_report import lead_experiment_report
from tests.integration.conftest import config_file
from udfs.pseudonyms import configured_subject

EXPERIMENT = "lead_modifiers"


@pytest.fixture(scope="module")
def outcomes(stream_topics) -> list[dict]:
    return [json.loads(r.value) for r in stream_topics["lead_outcomes"]]


@pytest.fixture(scope="module")
def spec(stream_run):
    s = stream_run.settings
    policy = load_policy(s.actions.actions_file, s.actions.experiments_file)
    return next(e for e in policy.experiments if e.name == EXPERIMENT)


def test_each_lead_score_of_the_experiment_gets_one_outcome_in_topic_and_table(
    stream_run, stream_topics, outcomes, figures
):
    scored = [json.loads(r.value) for r in stream_topics["lead_scores"] if r.value is not None]
    in_experiment = {(v["user_id"], v["profile_version"]) for v in scored if v["experiment"]}
    assert {v["experiment"] for v in scored} == {EXPERIMENT}, "every user is in the experiment"
    ids = [(o["user_id"], o["profile_version"]) for o in outcomes]
    assert len(ids) == len(set(ids)) and set(ids) == in_experiment
    with psycopg.connect(stream_run.settings.postgres.conninfo(), row_factory=dict_row) as conn:
        table = conn.execute("SELECT * FROM lead_outcomes").fetchall()
    assert sorted(table, key=lambda o: (o["user_id"], o["profile_version"])) == sorted(
        outcomes, key=lambda o: (o["user_id"], o["profile_version"])
    )
    figures(
        f"{len(outcomes)} lead scores of {len({o['user_id'] for o in outcomes})} users,"
        f" {sum(o['converted'] for o in outcomes)} followed by a purchase within the horizon"
    )


def test_an_outcome_says_whether_its_user_bought_within_the_horizon_after_the_score(
    stream_run, outcomes
):
    s = stream_run.settings
    subject = configured_subject(s.privacy)
    purchases = defaultdict(list)
    for e in stream_run.events:
        if e["type"] == "purchase":
            purchases[subject(e["user_id"])].append(e["ts"])
    horizon = s.leads.horizon_ms
    for o in outcomes:
        bought = sorted(t for t in purchases[o["user_id"]] if o["scored_ts"] < t)
        within = [t for t in bought if t < o["scored_ts"] + horizon]
        assert o["converted"] == bool(within), o
        expected_ts = within[0] if within else o["scored_ts"] + horizon
        assert o["outcome_ts"] == expected_ts, o


def test_the_arm_without_modifiers_is_served_unmodified_scores(outcomes, spec):
    without = {v.name for v in spec.variants if not v.lead_modifiers}
    by_arm = defaultdict(list)
    for o in outcomes:
        by_arm[o["variant"]].append(o)
    assert set(by_arm) == {v.name for v in spec.variants}
    for variant, found in by_arm.items():
        same = [o["score"] == pytest.approx(o["unmodified_score"]) for o in found]
        if variant in without:
            assert all(same)
        else:
            assert not all(same), f"no lead of {variant} was modified: the arms would not differ"


def test_the_report_gives_each_arm_the_auc_of_its_outcomes(
    stream_run, outcomes, spec, capsys, tmp_path, monkeypatch, figures
):
    s = stream_run.settings
    with psycopg.connect(s.postgres.conninfo()) as conn:
        horizon = s.leads.horizon_ms
        rows, result = lead_experiment_report(conn, spec, horizon)
        data_end = conn.execute("SELECT max(ts_ms) FROM events").fetchone()[0]
    # A lead whose horizon the data does not cover has no outcome yet, converted or not.
    measured = [o for o in outcomes if o["scored_ts"] + horizon <= data_end]
    assert result["run"]["left_out_without_outcome"] == len(outcomes) - len(measured) > 0
    for variant, arm in result["arms"].items():
        found = [o for o in measured if o["variant"] == variant]
        converted = np.array([o["converted"] for o in found])
        assert arm["leads"] == len(found)
        assert arm["auc"] == pytest.approx(roc_auc_score(converted, [o["score"] for o in found]))
        low, high = arm["auc_ci"]
        assert low < arm["auc"] < high
    monkeypatch.setenv("BEHAVIOR_CONFIG", config_file(s, tmp_path))
    assert report.main(["--experiment", EXPERIMENT, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert all(v.name in printed for v in spec.variants) and "AUC" in printed
    figures(
        "; ".join(
            f"{v}: {a['leads']} leads, AUC {a['auc']:.3f} [{a['auc_ci'][0]:.3f},"
            f" {a['auc_ci'][1]:.3f}]"
            for v, a in result["arms"].items()
        )
        + f"; {result['run']['left_out_without_outcome']} left out (horizon past the data)"
    )
