import math

import pytest

from udfs.signature import Baseline, TransitionModel, prior_reach, reach_within
from udfs.states import EXIT, STATE_INDEX, K

BROWSE, VIEW, CART = STATE_INDEX["browse"], STATE_INDEX["view"], STATE_INDEX["cart"]


def test_a_session_path_counts_its_moves_and_its_exit():
    model = TransitionModel()
    model.add_session([BROWSE, VIEW, VIEW], memory=1.0)
    assert model.counts == {BROWSE * K + VIEW: 1.0, VIEW * K + VIEW: 1.0, VIEW * K + EXIT: 1.0}


def test_transition_probabilities_are_the_dirichlet_posterior_mean():
    model = TransitionModel()
    model.add_session([BROWSE, VIEW, VIEW], memory=1.0)
    p = model.matrix(prior_strength=2.0)
    alpha = 2.0 / 12
    assert p[VIEW][VIEW] == pytest.approx((alpha + 1) / (2 + 2))  # view row saw 2 moves
    assert p[VIEW][CART] == pytest.approx(alpha / 4)
    assert p[BROWSE][VIEW] == pytest.approx((alpha + 1) / (2 + 1))
    assert p[CART] == pytest.approx([1 / 12] * 12)  # no data: the prior alone
    assert all(sum(row) == pytest.approx(1.0) for row in p)


def test_memory_ages_earlier_sessions_at_each_close():
    model = TransitionModel()
    model.add_session([BROWSE, VIEW], memory=0.5)
    model.add_session([BROWSE, CART], memory=0.5)
    assert model.counts[BROWSE * K + VIEW] == 0.5
    assert model.counts[BROWSE * K + CART] == 1.0


def test_reach_within_one_step_is_the_transition_probability():
    p = TransitionModel({BROWSE * K + VIEW: 3.0}).matrix(2.0)
    table = reach_within(p, [VIEW, CART], steps=1)
    assert table[BROWSE] == pytest.approx([p[BROWSE][VIEW], p[BROWSE][CART]])


def test_reach_within_two_steps_adds_paths_through_other_states_but_not_through_exit():
    p = TransitionModel({BROWSE * K + VIEW: 3.0, VIEW * K + CART: 2.0}).matrix(2.0)
    table = reach_within(p, [CART], steps=2)
    expected = p[BROWSE][CART] + sum(
        p[BROWSE][y] * p[y][CART] for y in range(K) if y not in (CART, EXIT)
    )
    assert table[BROWSE][0] == pytest.approx(expected)


def test_prior_reach_of_a_new_user():
    # Uniform rows: 1/12 now, plus 10/12 (neither the target nor exit) times 1/12 next.
    assert prior_reach(2.0, (CART,), 1)[BROWSE][0] == pytest.approx(1 / 12)
    assert prior_reach(2.0, (CART,), 2)[BROWSE][0] == pytest.approx(1 / 12 + 10 / 144)


def test_baseline_is_a_running_mean_and_variance_that_forgets_beyond_its_window():
    baseline = Baseline()
    baseline.update([2.0], window=2)
    baseline.update([4.0], window=2)
    assert (baseline.mean, baseline.var) == ([3.0], [1.0])
    baseline.update([6.0], window=2)  # weight 1/2 from now on: d = 3
    assert baseline.mean == [4.5]
    assert baseline.var == [pytest.approx(0.5 * (1.0 + 0.5 * 9.0))]


def test_z_scores_need_enough_sessions_and_spread():
    baseline = Baseline()
    for x in (2.0, 4.0):
        baseline.update([x, 1.0], window=20)
    assert baseline.z_scores([5.0, 3.0], min_sessions=3) == [0.0, 0.0]
    assert baseline.z_scores([5.0, 3.0], min_sessions=2) == [2.0, 0.0]  # (5-3)/1; no spread
    assert math.isfinite(baseline.z_scores([1e9, 1.0], min_sessions=2)[0])
