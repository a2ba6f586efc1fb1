"""The experiment report from per-user rows: counts per arm, lift against the control, and the
sample-ratio check against the configured weights; on generated history with a known uplift,
lift with and without CUPED adjustment, conversion per exposed session and the balance check;
the picture is written."""

import random

import pytest

from conf.policy import Experiment
from jobs.report import UserHistory, UserOutcome, analyse, plot, print_report
from models.generator import EventGenerator
from udfs.experiments import variant_of
from udfs.timeunits import DAY_MS


def rows(variant, users, converted, start=0):
    return [
        UserOutcome(variant, f"{variant}-{i}", start + i * 1000, i < converted)
        for i in range(users)
    ]


def test_arms_and_lift_against_the_control(tmp_path):
    data = rows("control", 500, 50) + rows("treated", 500, 80)
    result = analyse(data, {"control": 1, "treated": 1}, "control")
    assert result["arms"]["control"] == {"users": 500, "converted": 50, "rate": 0.1}
    lift = result["against_control"]["treated"]
    assert lift["absolute_lift"] == pytest.approx(0.06)
    assert lift["absolute_ci"][0] > 0 and lift["p_value"] < 0.05
    assert result["sample_ratio"]["mismatch"] is False
    plot(data, tmp_path / "e.png", "e")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_a_skewed_split_is_reported_as_a_sample_ratio_mismatch():
    data = rows("control", 700, 70) + rows("treated", 300, 30)
    result = analyse(data, {"control": 1, "treated": 1}, "control")
    assert result["sample_ratio"]["mismatch"] is True


EXPERIMENT = Experiment.model_validate(
    {
        "name": "offer",
        "layer": "checkout",
        "traffic": 1.0,
        "salt": "cuped-test",
        "actions": ["discount_offer"],
        "variants": [
            {"name": "control", "weight": 1, "control": True},
            {"name": "offer", "weight": 1},
        ],
    }
)
ACCEPT = 0.15  # a treated user also buys with this probability: the known uplift's source
PRE_DAYS, WINDOW_DAYS = 28, 7


@pytest.fixture(scope="module")
def generated_experiment(settings):
    """Every generated user is exposed on day 28 of their history; the outcome is a purchase in
    the next 7 days, which a treated user also makes when they accept the offer. The
    covariate is what the report reads from the archive: purchases and revenue in the 28 days
    before exposure."""
    history = EventGenerator(settings.generator, users=400, days=PRE_DAYS + WINDOW_DAYS, seed=17)
    events = history.generate().events
    exposed_at = settings.generator.start_ts_ms + PRE_DAYS * DAY_MS
    answers = random.Random(4)
    purchases: dict[str, list[dict]] = {}
    for e in events:
        purchases.setdefault(e["user_id"], [])
        if e["type"] == "purchase":
            purchases[e["user_id"]].append(e)
    outcomes, users, organic = [], {}, {}
    for user, bought in sorted(purchases.items()):
        variant = variant_of(EXPERIMENT, user).name
        window = [b for b in bought if exposed_at <= b["ts"] < exposed_at + WINDOW_DAYS * DAY_MS]
        before = [b for b in bought if exposed_at - PRE_DAYS * DAY_MS <= b["ts"] < exposed_at]
        organic[user] = bool(window)
        accepted = variant != "control" and answers.random() < ACCEPT
        revenue = sum(b["total"] for b in window) + (50.0 if accepted and not window else 0.0)
        outcomes.append(UserOutcome(variant, user, exposed_at, bool(window) or accepted, revenue))
        sessions = 1 + answers.randrange(3)
        users[user] = UserHistory(
            len(before), sum(b["total"] for b in before), sessions, int(bool(window) or accepted)
        )
    truth = ACCEPT * (1 - sum(organic.values()) / len(organic))
    return analyse(outcomes, {"control": 1, "offer": 1}, "control", users), truth


def test_cuped_narrows_the_interval_on_generated_history_and_both_cover_the_true_uplift(
    generated_experiment,
):
    result, truth = generated_experiment
    conversion = result["against_control"]["offer"]["conversion"]
    plain, cuped = conversion["unadjusted"], conversion["cuped"]
    assert plain["lift"] == pytest.approx(result["against_control"]["offer"]["absolute_lift"])
    assert plain["ci"][0] <= truth <= plain["ci"][1]
    assert cuped["ci"][0] <= truth <= cuped["ci"][1]
    assert cuped["ci"][1] - cuped["ci"][0] < plain["ci"][1] - plain["ci"][0]
    assert conversion["variance_reduction"] > 0.1  # past purchases predict the next week's
    revenue = result["against_control"]["offer"]["revenue_per_user"]
    assert revenue["variance_reduction"] > 0


def test_randomized_arms_are_balanced_on_pre_exposure_purchases(generated_experiment):
    result, _ = generated_experiment
    b = result["against_control"]["offer"]["balance"]
    assert not b["imbalanced"] and abs(b["standardized_difference"]) < 0.25


def test_the_printed_report_shows_both_lifts_with_intervals(generated_experiment, tmp_path, capsys):
    result, _ = generated_experiment
    arms = EXPERIMENT.arms_version
    result["run"] = {"since": 0, "until": None, "arms": arms, "pre_period_days": PRE_DAYS}
    print_report(EXPERIMENT, result, tmp_path)
    printed = capsys.readouterr().out
    cuped = result["against_control"]["offer"]["conversion"]["cuped"]
    assert f"CUPED {cuped['lift']:+.4f} [{cuped['ci'][0]:+.4f}, {cuped['ci'][1]:+.4f}]" in printed
    assert "unadjusted" in printed and "delta method" in printed and "balance" in printed
    assert f"1970-01-01T00:00:00+00:00 to open, arms of version {arms}" in printed
