"""Layer 3, the long-term signature: a Markov transition model over behavioural states with a
Dirichlet prior, and a baseline (running mean and variance) of per-session metrics. Both are
refreshed when a session closes, never per event."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

from udfs.states import EXIT, STATES, K


@dataclass(slots=True)
class TransitionModel:
    # Sparse transition counts: key i*K + j counts moves from state i to state j.
    counts: dict[int, float] = field(default_factory=dict)

    def add_session(self, path: list[int], memory: float) -> None:
        """Ages past counts by `memory`, then counts the session's moves and its exit."""
        if memory != 1.0:
            self.counts = {k: c * memory for k, c in self.counts.items()}
        for a, b in zip(path, [*path[1:], EXIT], strict=True):
            key = a * K + b
            self.counts[key] = self.counts.get(key, 0.0) + 1.0

    def summary(self, prior_strength: float) -> dict[str, float]:
        """The long-term habits in a few numbers: the share of moves made from each state, and
        posterior probabilities of the steps towards a purchase and of leaving early."""
        out_of = [0.0] * K
        for key, count in self.counts.items():
            out_of[key // K] += count
        moves = sum(out_of) or 1.0
        summary = {f"from_{STATES[i]}": out_of[i] / moves for i in range(EXIT)}
        alpha = prior_strength / K

        def p(a: str, b: str) -> float:
            i, j = STATES.index(a), STATES.index(b)
            return (alpha + self.counts.get(i * K + j, 0.0)) / (prior_strength + out_of[i])

        summary["view_to_cart"] = p("view", "cart")
        summary["cart_to_checkout"] = p("cart", "checkout")
        summary["checkout_to_purchase"] = p("checkout", "purchase")
        summary["browse_to_exit"] = p("browse", "exit")
        summary["view_to_exit"] = p("view", "exit")
        return summary

    def matrix(self, prior_strength: float) -> list[list[float]]:
        """Posterior mean of each row under a symmetric Dirichlet prior of total strength
        `prior_strength`: P[i][j] = (prior_strength/K + n_ij) / (prior_strength + n_i)."""
        return transition_matrix(tuple(sorted(self.counts.items())), prior_strength)


def transition_matrix(
    counts: tuple[tuple[int, float], ...], prior_strength: float
) -> list[list[float]]:
    alpha = prior_strength / K
    rows = [[alpha] * K for _ in range(K)]
    for key, count in counts:
        rows[key // K][key % K] += count
    return [[x / sum(row) for x in row] for row in rows]


def reach_within(matrix: list[list[float]], targets: list[int], steps: int) -> list[list[float]]:
    """table[x][i]: probability that, from state x, the walk enters targets[i] within the next
    `steps` moves (a session exit ends the walk)."""
    table = [[0.0] * len(targets) for _ in range(K)]
    for i, target in enumerate(targets):
        # h[y]: probability of entering the target within m moves having just arrived at y.
        h = [1.0 if y == target else 0.0 for y in range(K)]
        for _ in range(steps - 1):
            h = [
                1.0
                if y == target
                else 0.0
                if y == EXIT
                else sum(p * hz for p, hz in zip(matrix[y], h, strict=True))
                for y in range(K)
            ]
        for x in range(K):
            table[x][i] = sum(p * hz for p, hz in zip(matrix[x], h, strict=True))
    return table


@cache
def prior_reach(prior_strength: float, targets: tuple[int, ...], steps: int) -> tuple:
    """The table for a user with no closed session yet (shared by all of them)."""
    table = reach_within(transition_matrix((), prior_strength), list(targets), steps)
    return tuple(tuple(row) for row in table)


@dataclass(slots=True)
class Baseline:
    """Running mean and (population) variance of a few metrics, updated once per session.
    Weight 1/n for the first `window` sessions, then 1/window, so old sessions fade out:
    mean += w*d; var = (1 - w)*(var + w*d^2), with d = x - mean."""

    n: int = 0
    mean: list[float] = field(default_factory=list)
    var: list[float] = field(default_factory=list)

    def update(self, values: list[float], window: int) -> None:
        if not self.mean:
            self.mean, self.var = [0.0] * len(values), [0.0] * len(values)
        self.n += 1
        w = 1.0 / min(self.n, window)
        for i, x in enumerate(values):
            d = x - self.mean[i]
            self.mean[i] += w * d
            self.var[i] = (1.0 - w) * (self.var[i] + w * d * d)

    def z_scores(self, values: list[float], min_sessions: int) -> list[float]:
        """(x - mean) / std per metric; 0 until min_sessions sessions, or when std is 0."""
        if self.n < min_sessions:
            return [0.0] * len(values)
        return [
            (x - m) / math.sqrt(v) if v > 1e-12 else 0.0
            for x, m, v in zip(values, self.mean, self.var, strict=True)
        ]
