"""Experiment analysis from counts: conversion rate per arm, absolute and relative lift with
confidence intervals, a two-proportion z-test, an always-valid p-value (mixture sequential
probability ratio test, so looking at the results any number of times keeps its error rate),
and a sample-ratio-mismatch check."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import chisquare, norm

# mSPRT mixing variance for a difference of conversion rates: effects of a few points matter.
MIXING_VARIANCE = 0.05**2
SRM_ALPHA = 0.001
MIN_EXPECTED_PER_ARM = 5


@dataclass(frozen=True)
class Arm:
    users: int
    conversions: int

    @property
    def rate(self) -> float:
        return self.conversions / self.users if self.users else 0.0


@dataclass(frozen=True)
class Comparison:
    absolute_lift: float
    absolute_ci: tuple[float, float]
    relative_lift: float | None
    relative_ci: tuple[float, float] | None
    z: float
    p_value: float
    always_valid_p: float


def compare(control: Arm, treatment: Arm, confidence: float = 0.95) -> Comparison:
    """Treatment against control. Needs at least one user in each arm."""
    if not control.users or not treatment.users:
        raise ValueError("each arm needs at least one user")
    pc, pt = control.rate, treatment.rate
    q = norm.ppf(0.5 + confidence / 2)
    diff = pt - pc
    variance = pc * (1 - pc) / control.users + pt * (1 - pt) / treatment.users
    se = math.sqrt(variance)
    pooled = (control.conversions + treatment.conversions) / (control.users + treatment.users)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / control.users + 1 / treatment.users))
    z = diff / pooled_se if pooled_se > 0 else 0.0
    relative = relative_ci = None
    if control.conversions and treatment.conversions:
        relative = pt / pc - 1
        # Delta method on the log of the ratio of rates.
        log_se = math.sqrt((1 - pc) / control.conversions + (1 - pt) / treatment.conversions)
        log_ratio = math.log(pt / pc)
        relative_ci = (math.exp(log_ratio - q * log_se) - 1, math.exp(log_ratio + q * log_se) - 1)
    return Comparison(
        diff,
        (diff - q * se, diff + q * se),
        relative,
        relative_ci,
        z,
        float(2 * norm.sf(abs(z))),
        always_valid_p(diff, variance),
    )


def always_valid_p(diff: float, variance: float, tau2: float = MIXING_VARIANCE) -> float:
    """1 / the mixture likelihood ratio (normal mixture over the effect, Johari et al.), capped
    at 1. A report over time keeps the running minimum of these values."""
    if variance <= 0:
        return 1.0
    log_ratio = 0.5 * math.log(variance / (variance + tau2)) + (
        tau2 * diff * diff / (2 * variance * (variance + tau2))
    )
    return min(1.0, math.exp(-log_ratio))


@dataclass(frozen=True)
class SampleRatio:
    checked: bool  # False when an arm expects fewer than MIN_EXPECTED_PER_ARM users
    p_value: float | None
    mismatch: bool


def sample_ratio(users: list[int], weights: list[float]) -> SampleRatio:
    """Chi-square test of the users per arm against the configured weights."""
    total = sum(users)
    expected = [total * w / sum(weights) for w in weights]
    if min(expected, default=0) < MIN_EXPECTED_PER_ARM:
        return SampleRatio(False, None, False)
    p = float(chisquare(users, expected).pvalue)
    return SampleRatio(True, p, p < SRM_ALPHA)
