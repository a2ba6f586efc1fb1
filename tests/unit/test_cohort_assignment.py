"""Online cohort assignment: hysteresis keeps a user on a border from flapping; a clear margin
or a long enough dwell moves them; a new model version re-assigns at once."""

from udfs.cohort_assignment import DWELL, FIRST, MARGIN, MODEL, decide, due
from udfs.timeunits import DAY_MS, HOUR_MS
from udfs.timeunits import MINUTE_MS as MINUTE

MARGIN_FRACTION = 0.15
DWELL_MS = HOUR_MS
T0 = 1_767_225_600_000


def run(distances_seq, version=1, state=None, step_ms=MINUTE):
    moves = []
    for i, distances in enumerate(distances_seq):
        state, move = decide(state, distances, T0 + i * step_ms, version, MARGIN_FRACTION, DWELL_MS)
        if move:
            moves.append(move)
    return state, moves


def test_the_first_observation_assigns_the_nearest_cohort():
    state, [move] = run([[3.0, 1.0, 2.0]])
    assert (state.cohort, move.from_cohort, move.to_cohort, move.reason) == (1, None, 1, FIRST)
    assert move.ts == T0 and move.model_version == 1


def test_a_user_on_the_border_does_not_flap():
    # The nearest cohort alternates on every event, each time by less than the margin.
    border = [[1.00, 0.95] if i % 2 else [0.95, 1.00] for i in range(200)]
    state, moves = run(border)
    assert [m.reason for m in moves] == [FIRST]
    assert state.cohort == 0
    # Without hysteresis (margin 0, no dwell) the same user would move 199 times.
    flapping = []
    state = None
    for i, d in enumerate(border):
        state, move = decide(state, d, T0 + i * MINUTE, 1, 0.0, 0)
        flapping += [move] if move else []
    assert len(flapping) == 200


def test_a_clearly_nearer_cohort_takes_the_user_at_once():
    state, moves = run([[1.0, 2.0], [1.0, 0.8]])  # 20 % nearer > 15 % margin
    assert [(m.from_cohort, m.to_cohort, m.reason) for m in moves] == [
        (None, 0, FIRST),
        (0, 1, MARGIN),
    ]
    assert state.cohort == 1 and state.since_ts == T0 + MINUTE


def test_a_slightly_nearer_cohort_takes_the_user_after_the_dwell_time():
    slightly = [[1.0, 0.9]] * 62  # 10 % nearer, below the margin, for 61 minutes
    state, moves = run([[0.9, 1.0], *slightly])
    assert [m.reason for m in moves] == [FIRST, DWELL]
    # The challenger appeared at minute 1 and is taken once it has been nearest for an hour.
    assert moves[1].ts == T0 + 61 * MINUTE


def test_the_dwell_clock_restarts_when_the_challenger_loses_the_lead():
    pattern = [[0.9, 1.0]] + ([[1.0, 0.9]] * 40 + [[0.9, 1.0]]) * 3
    _, moves = run(pattern)
    assert [m.reason for m in moves] == [FIRST]


def test_a_new_model_version_reassigns_without_waiting():
    state, _ = run([[1.0, 2.0]], version=1)
    state, [move] = run([[2.0, 1.9, 1.0]], version=2, state=state)
    assert (move.from_cohort, move.to_cohort, move.reason) == (0, 2, MODEL)
    assert (move.from_model_version, move.model_version) == (1, 2)
    assert state.model_version == 2


def test_cohorts_are_assessed_again_only_when_what_they_see_changed_or_a_dwell_is_up():
    state, _ = decide(None, [1.0, 5.0], T0, 1, MARGIN_FRACTION, DWELL_MS)
    state.assessed_changes = 2
    assert not due(state, 1, long_term_changes=2, ts=T0 + DAY_MS, dwell_ms=DWELL_MS)
    assert due(None, 1, 2, T0, DWELL_MS)  # never assessed
    assert due(state, 2, 2, T0, DWELL_MS)  # a new model version
    assert due(state, 1, 3, T0, DWELL_MS)  # a session closed: a new signature
    state.challenger, state.challenger_since = 1, T0
    assert not due(state, 1, 2, T0 + DWELL_MS - 1, DWELL_MS)
    assert due(state, 1, 2, T0 + DWELL_MS, DWELL_MS)  # the challenger may take the user now
