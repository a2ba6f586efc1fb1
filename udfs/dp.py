"""Differential privacy for aggregates meant for sharing (docs/privacy.md): counts released with
discrete Laplace noise calibrated by OpenDP, under a privacy budget.

A release is a vector of counts over bins fixed before the data is read (cohorts of the model,
variants of the experiment, every window of the range), so which bins exist says nothing. Its
`sensitivity` is how much the whole vector can move, in L1, when one user is added or removed;
the noise's scale is sensitivity / epsilon, and OpenDP's privacy map checks that the
measurement spends no more than epsilon. The budget is a total epsilon per period (sequential
composition: the epsilons of the period's releases add up); a release that would exceed it is
refused before anything is computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import opendp.prelude as dp

# OpenDP ships its Laplace measurement as a contributed (not yet formally vetted) feature.
dp.enable_features("contrib")

PERIODS = ("day", "week", "month")


class BudgetExceeded(Exception):
    pass


@dataclass(frozen=True)
class Counts:
    """What to release: counts by bin, and the L1 change one user can make to them."""

    name: str
    bins: list[str]
    counts: list[int]
    sensitivity: int

    def __post_init__(self):
        if len(self.bins) != len(self.counts) or not self.bins:
            raise ValueError(f"{self.name}: one count per bin, and at least one bin")
        if self.sensitivity < 1:
            raise ValueError(f"{self.name}: sensitivity must be at least 1")


def laplace(sensitivity: int, epsilon: float):
    """The OpenDP measurement: integer vectors, discrete Laplace noise of scale
    sensitivity / epsilon, checked to spend at most epsilon at that sensitivity."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, not {epsilon}")
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=int)),
        dp.l1_distance(T=int),
        scale=sensitivity / epsilon,
    )
    spent = measurement.map(sensitivity)
    if spent > epsilon * (1 + 1e-9):
        raise ValueError(f"the measurement spends {spent}, more than epsilon {epsilon}")
    return measurement


def noisy(counts: Counts, epsilon: float) -> list[int]:
    return list(laplace(counts.sensitivity, epsilon)(counts.counts))


def period_start(now: datetime, period: str) -> datetime:
    """The start (UTC) of the budget period `now` falls in."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"period must be one of {PERIODS}, not {period!r}")


@dataclass(frozen=True)
class Budget:
    total: float  # epsilon per period
    period: str

    def check(self, spent: float, epsilon: float) -> None:
        """Raises BudgetExceeded when a release of `epsilon` on top of `spent` in this period
        would go over the total."""
        if spent + epsilon > self.total * (1 + 1e-9):
            raise BudgetExceeded(
                f"the privacy budget is {self.total:g} per {self.period}: {spent:g} spent,"
                f" {max(self.total - spent, 0):g} left, and this release asks for {epsilon:g}"
            )
