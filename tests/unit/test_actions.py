"""The decision step: priority, thresholds, eligibility, cooldowns and daily caps in event time,
experiment variants (including a control arm that is logged but not delivered), payloads."""

import pytest

from conf.policy import Policy, load_policy
from tests.unit.dataclass_fields import differences, fields_at_default
from udfs.actions import Ledger, UserContext, decide, render
from udfs.experiments import variant_of
from udfs.timeunits import DAY_MS

T0 = 1_767_225_600_000  # midnight UTC
HOUR = 3_600_000
NO_EXPERIMENTS = load_policy().model_copy(update={"experiments": ()})


def ctx(ts=T0, user="u1", open_cart=True, allowed=("personalization", "marketing"), **scores):
    return UserContext(
        user_id=user,
        ts=ts,
        event_id=f"e{ts}",
        scores=scores,
        open_cart=open_cart,
        events=100,
        cart_total=45.0,
        top_category="books",
        cohort_name="Search-led researchers",
        model_version=3,
        allowed=frozenset(allowed),
    )


def test_the_default_policy_offers_a_discount_of_ten_percent_of_the_cart():
    d = decide(NO_EXPERIMENTS, ctx(abandonment=0.75, drift=0.9), Ledger())
    assert d.action == "discount_offer" and d.delivered
    assert d.payload == {"kind": "discount", "percent": 10, "amount": 4.5, "cart_total": 45.0}
    assert (d.score_name, d.score, d.threshold, d.model_version) == ("abandonment", 0.75, 0.7, 3)


def test_else_drift_gives_recommendations_else_nothing():
    d = decide(NO_EXPERIMENTS, ctx(abandonment=0.6, drift=0.85), Ledger())
    assert d.action == "recommendation_offer" and d.payload["category"] == "books"
    assert decide(NO_EXPERIMENTS, ctx(abandonment=0.7, drift=0.8), Ledger()) is None  # not over


def test_an_ineligible_action_gives_way_to_the_next():
    d = decide(NO_EXPERIMENTS, ctx(open_cart=False, abandonment=0.9, drift=0.9), Ledger())
    assert d.action == "recommendation_offer"


def test_cooldown_holds_in_event_time():
    ledger = Ledger()
    assert (
        decide(NO_EXPERIMENTS, ctx(T0 + HOUR, drift=0.9), ledger).action == "recommendation_offer"
    )
    cooldown = NO_EXPERIMENTS.action("recommendation_offer").cooldown_ms
    assert decide(NO_EXPERIMENTS, ctx(T0 + HOUR + cooldown - 1, drift=0.9), ledger) is None
    assert decide(NO_EXPERIMENTS, ctx(T0 + HOUR + cooldown, drift=0.9), ledger) is not None


def test_the_daily_cap_holds_and_resets_on_the_next_utc_day():
    policy = Policy.model_validate(
        {
            "actions": [
                {"name": "a", "score": "churn", "threshold": 0.1, "priority": 1, "cap_per_day": 2}
            ]
        }
    )
    ledger = Ledger()
    fired = [decide(policy, ctx(T0 + i * HOUR, churn=0.5), ledger) for i in range(5)]
    assert [d is not None for d in fired] == [True, True, False, False, False]
    assert decide(policy, ctx(T0 + DAY_MS - 1, churn=0.5), ledger) is None
    assert decide(policy, ctx(T0 + DAY_MS, churn=0.5), ledger) is not None


def test_variants_change_the_offer_and_the_control_arm_is_logged_not_delivered():
    policy = load_policy()
    experiment = policy.experiments[0]
    users = {}
    for i in range(200):
        users.setdefault(variant_of(experiment, f"u{i}").name, f"u{i}")
    decisions = {
        v: decide(policy, ctx(user=u, abandonment=0.8), Ledger()) for v, u in users.items()
    }
    assert {v: d.delivered for v, d in decisions.items()} == {
        "control": False,
        "discount_10": True,
        "discount_15": True,
    }
    assert decisions["discount_15"].payload["amount"] == pytest.approx(6.75)
    assert decisions["discount_10"].payload["amount"] == pytest.approx(4.5)
    assert {d.experiment for d in decisions.values()} == {"abandonment_offer"}
    assert {d.arms for d in decisions.values()} == {experiment.arms_version}


def test_a_control_decision_counts_against_cooldown_like_a_delivered_one():
    policy = load_policy()
    control = next(
        f"u{i}" for i in range(100) if variant_of(policy.experiments[0], f"u{i}").control
    )
    ledger = Ledger()
    assert decide(policy, ctx(user=control, abandonment=0.8), ledger).delivered is False
    assert decide(policy, ctx(T0 + HOUR, user=control, abandonment=0.8), ledger) is None


def test_the_decision_id_is_the_same_when_the_update_is_replayed():
    first = decide(NO_EXPERIMENTS, ctx(abandonment=0.8), Ledger())
    again = decide(NO_EXPERIMENTS, ctx(abandonment=0.8), Ledger())
    assert first.decision_id == again.decision_id == f"u1|{T0}|e{T0}|discount_offer"
    assert first.arms is None  # in no experiment


def test_security_alerts_stay_out_of_experiments_and_win_by_priority():
    d = decide(load_policy(), ctx(deviation=5.0, abandonment=0.9), Ledger())
    assert (d.action, d.experiment, d.delivered) == ("security_alert", None, True)


def test_payload_templates():
    fields = {"user_id": "u1", "score": 0.5, "top_category": None}
    assert render(
        {"a": "${score}", "b": "user ${user_id}!", "c": 3, "d": "${top_category}"}, fields
    ) == {
        "a": 0.5,
        "b": "user u1!",
        "c": 3,
        "d": None,
    }


def test_the_ledger_survives_the_state_round_trip():
    ledger = Ledger()
    decide(NO_EXPERIMENTS, ctx(drift=0.9), ledger)
    assert fields_at_default(ledger) == [], "the fixture must set every field"
    back = Ledger.from_json(ledger.to_json())
    assert differences(ledger, back) == []
    assert decide(NO_EXPERIMENTS, ctx(T0 + HOUR, drift=0.9), back) is None


def test_an_action_the_users_consent_does_not_allow_is_passed_over_and_its_purpose_named():
    refused = []
    d = decide(NO_EXPERIMENTS, ctx(abandonment=0.75, drift=0.9, allowed=()), Ledger(), refused)
    assert d is None  # the discount and the recommendations both need marketing
    assert refused == ["marketing", "marketing", "personalization"]
