"""Thompson-sampling refinement of variant weights: towards the better arm, bounded, control
share kept, nothing on thin data, reproducible."""

import pytest

from models.refinement import Bounds, probability_best, refine

WEIGHTS = {"control": 1, "a": 1, "b": 1}


def test_a_clearly_better_arm_gains_share_within_the_step_bound():
    arms = {"control": (1000, 100), "a": (1000, 100), "b": (1000, 160)}
    shares, changes = refine(WEIGHTS, "control", arms)
    assert shares["control"] == pytest.approx(1 / 3)
    assert shares["b"] > 1 / 3 > shares["a"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(abs(c.new_share - c.old_share) <= 0.1 + 1e-9 for c in changes)
    assert {c.variant for c in changes} == {"a", "b"}


def test_shares_stay_within_their_bounds_over_many_rounds():
    arms = {"control": (5000, 500), "a": (5000, 400), "b": (5000, 700)}
    weights = dict(WEIGHTS)
    for round_ in range(20):
        weights, _ = refine(weights, "control", arms, seed=round_)
    assert weights["a"] >= 0.05 * 0.999 and weights["b"] <= 0.8
    assert weights["control"] == pytest.approx(1 / 3)


def test_nothing_moves_while_an_arm_has_too_few_users():
    arms = {"control": (1000, 100), "a": (99, 50), "b": (1000, 100)}
    shares, changes = refine(WEIGHTS, "control", arms, Bounds(min_users=100))
    assert changes == [] and shares == pytest.approx({v: 1 / 3 for v in WEIGHTS})


def test_probability_best_is_reproducible_and_sensible():
    arms = {"a": (500, 50), "b": (500, 50)}
    first = probability_best(arms, 20_000, seed=3)
    assert first == probability_best(arms, 20_000, seed=3)
    assert first["a"] == pytest.approx(0.5, abs=0.03)


def test_new_weights_are_written_to_a_valid_experiments_file(tmp_path):
    import shutil

    from conf.policy import default_paths, load_policy
    from jobs.refine import rewrite_weights

    actions, experiments = default_paths()
    shutil.copy(actions, tmp_path / "actions.yaml")
    shutil.copy(experiments, tmp_path / "experiments.yaml")
    shares = {"control": 1 / 3, "discount_10": 0.25, "discount_15": 5 / 12}
    rewrite_weights(tmp_path / "experiments.yaml", "abandonment_offer", shares)
    policy = load_policy(tmp_path / "actions.yaml", tmp_path / "experiments.yaml")
    weights = {v.name: v.weight for v in policy.experiments[0].variants}
    assert weights == pytest.approx(shares, abs=1e-6)
    assert (tmp_path / "experiments.yaml").read_text().startswith("# Experiments over actions")
