"""An experiment about lead scoring (conf/experiments.yaml `lead_modifiers`): the arm without
modifiers is scored without them, every lead record names the user's arm, and each lead score
of the experiment's users gets one outcome, a purchase within `leads.horizon_ms` or none."""

import dataclasses
import json

import pytest

from conf.policy import Policy, load_policy
from jobs.control import MODIFIERS, POLICY, ControlRecord, ScoringSettings, plain, policy_content
from tests.unit.profile_events import MINUTE, T0, page, purchase, view
from tests.unit.test_profile_job import CONFIG, TAG, Harness
from udfs import outputs, user_scores
from udfs.experiments import lead_assignment

HORIZON = CONFIG.leads.horizon_ms
SCORING = ScoringSettings(CONFIG.models, CONFIG.leads, registry_dir=None, actions=CONFIG.actions)
# Applies to every cohort (below, every user is in one): intent up by half.
BOOST = (1, "cohort", "always", 50.0, 0.0)


@pytest.fixture(autouse=True)
def everyone_in_a_cohort(monkeypatch):
    """Without trained models nobody has a cohort, and modifiers match cohort names."""
    real = user_scores.lead_score

    def in_a_cohort(intent, capacity, cohort_name, competitor_view, modifiers):
        return real(intent, capacity, cohort_name or "Test cohort", competitor_view, modifiers)

    monkeypatch.setattr(user_scores, "lead_score", in_a_cohort)


def in_force(policy_files=None):
    files = policy_files or (CONFIG.actions.actions_file, CONFIG.actions.experiments_file)
    return (
        ControlRecord(POLICY, 1, policy_content(*files)),
        ControlRecord(MODIFIERS, 1, plain([BOOST])),
    )


def user_in(variant: str) -> str:
    policy = load_policy(CONFIG.actions.actions_file, CONFIG.actions.experiments_file)
    for i in range(100):
        found = lead_assignment(policy, f"u{i}")
        if found is not None and found.variant.name == variant:
            return f"u{i}"
    raise AssertionError(f"nobody in {variant}")


def as_user(event, user_id):
    return dataclasses.replace(event, user_id=user_id)


def run(variant: str, with_purchase: bool):
    """A user of the arm: three updates, then a purchase within the horizon or none."""
    user = user_in(variant)
    h = Harness(scoring=SCORING, in_force=in_force())
    for i, make in enumerate([page, view, view]):
        h.send(as_user(make(T0 + i * MINUTE), user))
    if with_purchase:
        h.send(as_user(purchase(T0 + HORIZON // 2, total=80.0), user))
    h.advance(T0 + 2 * HORIZON)
    return h


def lead_outcomes(h) -> list[dict]:
    return [json.loads(r.record) for r in h.scored[TAG[outputs.LEAD_OUTCOMES].tag_id]]


def test_the_arm_without_modifiers_is_scored_without_them_and_each_record_names_its_arm():
    with_, without = run("with_modifiers", False), run("without_modifiers", False)
    for h, variant, applied in ((with_, "with_modifiers", "1"), (without, "without_modifiers", "")):
        leads = h.scored["leads"]
        assert leads and {(r.experiment, r.variant) for r in leads} == {("lead_modifiers", variant)}
        assert {r.modifiers for r in leads} == {applied}
    boosted = with_.scored["leads"][0]
    assert boosted.intent == pytest.approx(min(1.0, 1.5 * boosted.base_intent))
    plain_lead = without.scored["leads"][0]
    assert plain_lead.score == pytest.approx(plain_lead.base_intent * plain_lead.base_capacity)


def test_every_lead_score_gets_one_outcome_a_purchase_within_the_horizon_converts():
    bought_at = T0 + HORIZON // 2
    for h, purchased in (
        (run("with_modifiers", True), True),
        (run("without_modifiers", False), False),
    ):
        leads, found = h.scored["leads"], lead_outcomes(h)
        assert [o["profile_version"] for o in found] == sorted(r.profile_version for r in leads)
        by_version = {o["profile_version"]: o for o in found}
        converted = 0
        for lead in leads:
            o = by_version[lead.profile_version]
            assert (o["scored_ts"], o["score"], o["variant"]) == (lead.ts, lead.score, lead.variant)
            assert o["unmodified_score"] == pytest.approx(lead.base_intent * lead.base_capacity)
            # Scores before the purchase convert; one it brought awaits a later purchase.
            if purchased and lead.ts < bought_at:
                assert (o["converted"], o["outcome_ts"], o["revenue"]) == (True, bought_at, 80.0)
                converted += 1
            else:
                assert (o["converted"], o["outcome_ts"]) == (False, lead.ts + HORIZON)
        assert (converted > 0) == purchased
        assert h.user().awaiting_leads is None  # every outcome is out


def test_without_an_experiment_about_leads_records_name_no_arm_and_await_nothing(tmp_path):
    policy = load_policy(CONFIG.actions.actions_file, CONFIG.actions.experiments_file)
    kept = [e for e in policy.experiments if not e.leads]
    experiments = tmp_path / "experiments.json"
    experiments.write_text(json.dumps({"experiments": [e.model_dump(mode="json") for e in kept]}))
    h = Harness(scoring=SCORING, in_force=in_force((CONFIG.actions.actions_file, experiments)))
    h.send(page(T0))
    h.send(purchase(T0 + MINUTE))
    [lead, *_] = h.scored["leads"]
    assert (lead.experiment, lead.variant, lead.modifiers) == (None, None, "1")
    assert lead_outcomes(h) == [] and h.user().awaiting_leads is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"actions": ["discount_offer"]}, "no actions and no control variant"),
        ({"leads": False}, "names its actions"),
    ],
)
def test_an_experiment_about_leads_is_validated(change, message):
    data = load_policy(CONFIG.actions.actions_file, CONFIG.actions.experiments_file).model_dump()
    for e in data["experiments"]:
        if e["leads"]:
            e.update(change)
    with pytest.raises(ValueError, match=message):
        Policy.model_validate(data)
