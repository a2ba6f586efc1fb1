"""Experiment assignment: deterministic, balanced by weight (chi-square over 100k users),
exclusive within a layer, and validated configuration."""

from collections import Counter

import pytest
import yaml
from scipy.stats import chisquare

from conf.policy import Policy, load_policy
from conf.settings import ConfigError
from udfs.experiments import assignment_for, assignments, variant_of

USERS = [f"user-{i}" for i in range(100_000)]


def action(name, score="abandonment", **extra):
    return {"name": name, "score": score, "threshold": 0.5, "priority": 1, **extra}


def experiment(name, layer, traffic, actions, weights=(1, 1), salt=None):
    variants = [{"name": f"v{i}", "weight": w} for i, w in enumerate(weights)]
    variants[0]["control"] = True
    return {
        "name": name,
        "layer": layer,
        "traffic": traffic,
        "salt": salt or name,
        "actions": actions,
        "variants": variants,
    }


def policy(*experiments, actions=("a", "b", "c")):
    return Policy.model_validate(
        {"actions": [action(a) for a in actions], "experiments": list(experiments)}
    )


def test_the_shipped_policy_is_valid_and_reproduces_the_brief():
    p = load_policy()
    offer, recommend = p.action("discount_offer"), p.action("recommendation_offer")
    assert (offer.score, offer.threshold, offer.discount_percent) == ("abandonment", 0.7, 10)
    assert (recommend.score, recommend.threshold) == ("drift", 0.8)
    assert offer.priority > recommend.priority


def test_assignment_is_deterministic():
    p = policy(experiment("e", "layer", 1.0, ["a"], weights=(1, 2, 1)))
    first = [variant_of(p.experiments[0], u).name for u in USERS[:1000]]
    again = [variant_of(p.experiments[0], u).name for u in USERS[:1000]]
    assert first == again


def test_variants_follow_their_weights_over_100k_users():
    weights = (1, 2, 1)
    p = policy(experiment("e", "layer", 1.0, ["a"], weights=weights))
    counts = Counter(variant_of(p.experiments[0], u).name for u in USERS)
    observed = [counts[f"v{i}"] for i in range(3)]
    expected = [len(USERS) * w / sum(weights) for w in weights]
    result = chisquare(observed, expected)
    print(f"\n  observed {observed}, expected {expected}, p = {result.pvalue:.3f}")
    assert result.pvalue > 0.001


def test_a_changed_salt_reshuffles_users():
    a = policy(experiment("e", "layer", 1.0, ["a"], salt="one")).experiments[0]
    b = policy(experiment("e", "layer", 1.0, ["a"], salt="two")).experiments[0]
    same = sum(variant_of(a, u).name == variant_of(b, u).name for u in USERS[:10_000])
    assert 4_500 < same < 5_500  # independent halves agree about half of the time


def test_experiments_in_one_layer_never_share_a_user_and_take_their_traffic():
    p = policy(
        experiment("first", "layer", 0.3, ["a"]),
        experiment("second", "layer", 0.5, ["b"]),
        experiment("elsewhere", "other", 1.0, ["c"]),
    )
    per_user = [assignments(p, u) for u in USERS[:20_000]]
    in_layer = Counter()
    for found in per_user:
        layer = [a.experiment.name for a in found if a.experiment.layer == "layer"]
        assert len(layer) <= 1
        in_layer[layer[0] if layer else None] += 1
        assert [a.experiment.name for a in found if a.experiment.layer == "other"] == ["elsewhere"]
    assert in_layer["first"] / 20_000 == pytest.approx(0.3, abs=0.015)
    assert in_layer["second"] / 20_000 == pytest.approx(0.5, abs=0.015)
    assert assignment_for(p, USERS[0], "c").experiment.name == "elsewhere"


@pytest.mark.parametrize(
    "experiments, message",
    [
        ([experiment("e", "l", 0.7, ["a"]), experiment("f", "l", 0.6, ["b"])], "give more"),
        ([experiment("e", "l", 1.0, ["a"]), experiment("f", "m", 1.0, ["a"])], "share a layer"),
        ([experiment("e", "l", 1.0, ["zzz"])], "unknown actions"),
        ([experiment("e", "l", 1.0, ["a"], weights=(1,))], "at least two variants"),
    ],
)
def test_conflicting_or_broken_experiments_are_refused(experiments, message, tmp_path):
    actions = tmp_path / "actions.yaml"
    actions.write_text(
        "actions:\n"
        + "".join(f"  - {{name: {a}, score: drift, threshold: 0.5, priority: 1}}\n" for a in "abc")
    )
    (tmp_path / "experiments.yaml").write_text(yaml.safe_dump({"experiments": experiments}))
    with pytest.raises(ConfigError, match=message):
        load_policy(actions, tmp_path / "experiments.yaml")


def test_an_unknown_score_or_payload_field_is_refused(tmp_path):
    path = tmp_path / "actions.yaml"
    path.write_text("actions:\n  - {name: x, score: mood, threshold: 0.5, priority: 1}\n")
    with pytest.raises(ConfigError, match="score 'mood'"):
        load_policy(path, tmp_path / "none.yaml")
    path.write_text(
        "actions:\n  - {name: x, score: drift, threshold: 0.5, priority: 1,"
        " payload: {a: '${secret}'}}\n"
    )
    with pytest.raises(ConfigError, match="unknown"):
        load_policy(path, tmp_path / "none.yaml")


def test_the_assignment_for_an_action_is_the_one_among_all_of_the_users_assignments():
    p = policy(
        experiment("first", "layer", 0.3, ["a"]),
        experiment("second", "layer", 0.5, ["b"]),
        experiment("elsewhere", "other", 1.0, ["c"]),
    )
    for user in USERS[:2_000]:
        everything = assignments(p, user)
        known = {}  # shared across the actions, as one decision shares it
        for name in ("a", "b", "c"):
            expected = next((x for x in everything if name in x.experiment.actions), None)
            assert assignment_for(p, user, name) == expected
            assert assignment_for(p, user, name, known) == expected


def test_the_arms_version_changes_with_the_arms_and_who_gets_them_not_with_the_run():
    base = experiment("e", "layer", 0.5, ["a"])
    version = policy(base).experiments[0].arms_version

    def changed(**update) -> str:
        return policy({**base, **update}).experiments[0].arms_version

    heavier = [dict(base["variants"][0]), {**base["variants"][1], "weight": 2}]
    stricter = [
        dict(base["variants"][0]),
        {**base["variants"][1], "actions": {"a": {"threshold": 0.9}}},
    ]
    for arms in (heavier, stricter):
        assert changed(variants=arms) != version
    assert changed(salt="reshuffled") != version and changed(traffic=0.6) != version
    assert changed(start="2026-11-01", end="2026-12-01", pre_period_days=14) == version
    assert changed(active=False) == version
