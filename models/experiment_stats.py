"""Experiment analysis from counts: conversion rate per arm, absolute and relative lift with
confidence intervals, a two-proportion z-test, an always-valid p-value (mixture sequential
probability ratio test, so looking at the results any number of times keeps its error rate),
and a sample-ratio-mismatch check; from per-user values, differences of means with and without
CUPED adjustment, ratio metrics by the delta method, and the balance of a pre-exposure
covariate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import chisquare, norm, ttest_ind
from statsmodels.regression.linear_model import OLS

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


# Per-user metrics: means with and without a pre-exposure covariate, ratios, balance.


@dataclass(frozen=True)
class Effect:
    """Treatment minus control, with its confidence interval and two-sided p-value."""

    estimate: float
    ci: tuple[float, float]
    p_value: float
    std_error: float


@dataclass(frozen=True)
class AdjustedEffect:
    """A difference of means without and with CUPED adjustment by a pre-exposure covariate;
    `variance_reduction` is the share of the estimate's variance the covariate removed."""

    unadjusted: Effect
    adjusted: Effect
    variance_reduction: float


def _treatment_effect(y: np.ndarray, design: np.ndarray, confidence: float) -> Effect:
    """The coefficient of column 1 (the treatment indicator) of an OLS fit with HC2 errors,
    which stay valid when the arms' variances and sizes differ."""
    fit = OLS(y, design).fit(cov_type="HC2")
    low, high = fit.conf_int(alpha=1 - confidence)[1]
    return Effect(
        float(fit.params[1]), (float(low), float(high)), float(fit.pvalues[1]), float(fit.bse[1])
    )


def mean_effect(
    control_y, treated_y, control_x=None, treated_x=None, confidence: float = 0.95
) -> AdjustedEffect:
    """Difference of the per-user means of a metric (conversion as 0/1, revenue), unadjusted
    and CUPED-adjusted: the regression of the metric on the treatment and the centred
    pre-exposure covariate, whose slope is pooled over both arms (Deng et al. 2013). Without a
    covariate, or one that never varies, the adjusted effect is the unadjusted one."""
    y = np.concatenate([np.asarray(control_y, float), np.asarray(treated_y, float)])
    if len(control_y) < 2 or len(treated_y) < 2:
        raise ValueError("each arm needs at least two users")
    treated = np.r_[np.zeros(len(control_y)), np.ones(len(treated_y))]
    plain = _treatment_effect(y, np.column_stack([np.ones_like(y), treated]), confidence)
    if control_x is None:
        return AdjustedEffect(plain, plain, 0.0)
    x = np.concatenate([np.asarray(control_x, float), np.asarray(treated_x, float)])
    if np.ptp(x) == 0:
        return AdjustedEffect(plain, plain, 0.0)
    design = np.column_stack([np.ones_like(y), treated, x - x.mean()])
    adjusted = _treatment_effect(y, design, confidence)
    reduction = 1 - (adjusted.std_error / plain.std_error) ** 2 if plain.std_error else 0.0
    return AdjustedEffect(plain, adjusted, float(reduction))


def ratio_effect(
    control: tuple, treated: tuple, confidence: float = 0.95
) -> tuple[float, float, Effect]:
    """A ratio metric whose unit of analysis (an exposed session) is finer than the unit of
    randomization (a user): each arm is (numerators, denominators) per user, its ratio
    sum(num) / sum(den), and the variance of that ratio comes from the delta method, since
    sessions of one user are not independent (Deng et al. 2018). Returns the control's and
    treated arm's ratios and their difference."""
    q = norm.ppf(0.5 + confidence / 2)
    ratios, variances = [], []
    for numerators, denominators in (control, treated):
        num, den = np.asarray(numerators, float), np.asarray(denominators, float)
        n = len(num)
        if n < 2 or den.sum() <= 0:
            raise ValueError("each arm needs at least two users and one exposed session")
        ratio = num.sum() / den.sum()
        covariance = np.cov(num, den)  # per-user variances and covariance
        variance = (
            covariance[0, 0] - 2 * ratio * covariance[0, 1] + ratio**2 * covariance[1, 1]
        ) / (n * den.mean() ** 2)
        ratios.append(float(ratio))
        variances.append(float(variance))
    diff = ratios[1] - ratios[0]
    se = math.sqrt(sum(variances))
    p = float(2 * norm.sf(abs(diff) / se)) if se > 0 else 1.0
    return ratios[0], ratios[1], Effect(diff, (diff - q * se, diff + q * se), p, se)


BALANCE_ALPHA = 0.001


@dataclass(frozen=True)
class Balance:
    """The pre-exposure covariate compared between two arms, which randomization makes equal
    in expectation: its standardized mean difference and a Welch test. A significant
    difference means the assignment, or who gets exposed, depends on the user's past."""

    control_mean: float
    treated_mean: float
    standardized_difference: float
    p_value: float
    imbalanced: bool


def balance(control_x, treated_x) -> Balance:
    c, t = np.asarray(control_x, float), np.asarray(treated_x, float)
    pooled_sd = math.sqrt((c.var(ddof=1) + t.var(ddof=1)) / 2)
    if pooled_sd == 0:
        return Balance(float(c.mean()), float(t.mean()), 0.0, 1.0, False)
    p = float(ttest_ind(t, c, equal_var=False).pvalue)
    return Balance(
        float(c.mean()),
        float(t.mean()),
        float((t.mean() - c.mean()) / pooled_sd),
        p,
        p < BALANCE_ALPHA,
    )
