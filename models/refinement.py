"""Refinement of an experiment from its outcomes: a Thompson-sampling bandit over variant weights.

Each variant's conversion rate gets a Beta(1 + converted, 1 + not converted) posterior; the
probability that a variant is the best is estimated from seeded posterior draws, and each
non-control variant's share of the experiment moves towards that probability. The changes are
bounded: the control keeps its configured share (the baseline every lift is measured against),
no variant's share moves by more than `max_step` at once or leaves [min_share, max_share], and
nothing moves until every arm has `min_users` measured users. Because assignment is a hash of the
user id against the weights, a change moves only the users between the old and new boundaries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bounds:
    min_share: float = 0.05
    max_share: float = 0.8
    max_step: float = 0.1
    min_users: int = 100
    draws: int = 20_000


@dataclass(frozen=True)
class Change:
    variant: str
    old_share: float
    new_share: float
    p_best: float


def probability_best(arms: dict[str, tuple[int, int]], draws: int, seed: int) -> dict[str, float]:
    """arms: variant -> (users, converted)."""
    rng = np.random.default_rng(seed)
    names = list(arms)
    samples = np.column_stack(
        [rng.beta(1 + c, 1 + u - c, size=draws) for u, c in (arms[n] for n in names)]
    )
    best = np.bincount(samples.argmax(axis=1), minlength=len(names)) / draws
    return dict(zip(names, best.tolist(), strict=True))


def refine(
    weights: dict[str, float],
    control: str,
    arms: dict[str, tuple[int, int]],
    bounds: Bounds = Bounds(),
    seed: int = 0,
) -> tuple[dict[str, float], list[Change]]:
    """New weights (as shares summing to 1) and what changed; the same weights when the data
    is too thin."""
    total = sum(weights.values())
    shares = {v: w / total for v, w in weights.items()}
    if any(arms.get(v, (0, 0))[0] < bounds.min_users for v in weights):
        return shares, []
    treated = [v for v in weights if v != control]
    p_best = probability_best({v: arms[v] for v in treated}, bounds.draws, seed)
    room = 1.0 - shares[control]
    low = {v: max(bounds.min_share, shares[v] - bounds.max_step) for v in treated}
    high = {v: min(bounds.max_share, shares[v] + bounds.max_step) for v in treated}
    target = {v: room * p_best[v] for v in treated}
    new = dict(shares)
    new.update(_closest_within(target, low, high, room))
    changes = [
        Change(v, shares[v], new[v], p_best[v]) for v in treated if abs(new[v] - shares[v]) > 1e-9
    ]
    return new, changes


def _closest_within(target, low, high, total, rounds: int = 60) -> dict[str, float]:
    """x = clip(target + shift, low, high) with the shift found by bisection so that the x
    sum to `total` (the control keeps its share); plain clipping if no shift can."""

    def shifted(shift):
        return {v: min(high[v], max(low[v], target[v] + shift)) for v in target}

    lo, hi = -1.0, 1.0
    for _ in range(rounds):
        mid = (lo + hi) / 2
        if sum(shifted(mid).values()) < total:
            lo = mid
        else:
            hi = mid
    return shifted((lo + hi) / 2)
