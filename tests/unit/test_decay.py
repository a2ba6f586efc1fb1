import pytest

from udfs.decay import advance, decay

H = 3_600_000


def test_weight_halves_every_half_life():
    assert decay(0, H) == 1.0
    assert decay(H, H) == 0.5
    assert decay(2 * H, H) == 0.25


def test_a_newer_event_ages_the_sums_and_counts_fully():
    assert advance(None, 5, H) == (5, 1.0, 1.0)
    assert advance(0, H, H) == (H, 0.5, 1.0)


def test_an_older_event_counts_with_the_weight_it_would_have_by_now():
    assert advance(2 * H, H, H) == (2 * H, 1.0, 0.5)


def test_arrival_order_does_not_change_the_decayed_sum():
    def total(times):
        ref, value = None, 0.0
        for ts in times:
            ref, age, w = advance(ref, ts, H)
            value = value * age + w
        return value

    assert total([0, H, 3 * H]) == pytest.approx(0.125 + 0.25 + 1)
    assert total([3 * H, 0, H]) == pytest.approx(total([0, H, 3 * H]))
