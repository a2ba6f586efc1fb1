"""What a candidate targeting policy would have achieved, estimated from an experiment's logged
decisions (off-policy evaluation).

The logs are one unit per user: the scores the decision step saw at the user's first exposure,
the arm the experiment's hash gave them (with the known probability of its weight), and whether
they converted in the attribution window. A candidate picks an arm for each unit from its
scores; its value is the conversion rate the logged users would have had under it. Two
estimators:

- inverse propensity weighting (IPW): the units whose logged arm is the one the candidate picks,
  weighted by 1 / the probability of that arm;
- doubly robust (DR): an outcome model's prediction for the candidate's arm, corrected by the
  weighted residual of the matching units. The outcome model is a logistic regression of
  conversion on the scores, the arm and their products (the uplift models' S-learner, one
  indicator per arm), cross-fitted on two halves so no unit is predicted by a model that saw it.
  DR is consistent when either the propensities or the outcome model are right; here the
  propensities are known exactly, so it stays unbiased, and a good outcome model narrows it.

Intervals are normal, from the per-unit terms' standard error. The difference from giving
everyone the control arm is estimated on the same units, so its interval is narrower than the
two values' intervals suggest.

The estimate is supported only where the logs can speak: a candidate that picks an arm the
experiment never assigned, treats users below the score the logged policy triggered at (nobody
there was ever decided for), or whose chosen arm matched too few logged units is reported as
unsupported, with the reason, and no number is given for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conf.policy import SCORES, Candidate

MIN_MATCHED = 30  # logged units of an arm the candidate picks, for its value to be estimable


@dataclass(frozen=True)
class LoggedUnit:
    user_id: str
    scores: dict[str, float]  # by conf.policy.SCORES name; absent = not available then
    arm: str
    converted: bool
    trigger: tuple[str, float]  # the score and threshold the logged decision fired at


@dataclass(frozen=True)
class Estimate:
    value: float
    ci: tuple[float, float]
    std_error: float


@dataclass(frozen=True)
class Evaluation:
    candidate: str
    supported: bool
    reasons: tuple[str, ...]  # why not, when unsupported
    units: int
    arms_picked: dict[str, int]  # units per arm the candidate picks
    matched: dict[str, int]  # of those, units whose logged arm is the one picked
    logged_value: float  # conversion rate of the logs as they were
    ipw: Estimate | None = None
    doubly_robust: Estimate | None = None
    lift_over_control: Estimate | None = None  # DR, against the control arm for everyone
    effective_sample_size: float | None = None


def support(
    candidate: Candidate, units: list[LoggedUnit], propensities: dict[str, float]
) -> tuple[list[str], dict[str, int], dict[str, int]]:
    """Why the logs cannot estimate the candidate (empty: they can), and per arm the units it
    picks and how many of them were logged with that arm."""
    reasons = []
    picked = [candidate.arm_for(u.scores) for u in units]
    for arm in sorted({r.arm for r in candidate.rules} | {candidate.otherwise}):
        if propensities.get(arm, 0.0) <= 0:
            reasons.append(f"arm {arm!r} was never assigned in the logs")
    triggers = {u.trigger for u in units}
    if len(triggers) > 1:
        # An arm with its own threshold logs users the others never decide for: the arms'
        # logged users are then not alike, and the weights are no longer the propensities.
        reasons.append(f"the logged decisions fired at different thresholds: {sorted(triggers)}")
        return reasons, {}, {}
    [(score, threshold)] = triggers
    for rule in candidate.rules:
        bound = rule.when.get(score)
        low = bound.min if bound is not None else None
        if low is not None and low < threshold:
            reasons.append(
                f"a rule targets {score} from {low:g}, but the logged policy decided only from"
                f" {threshold:g}: nobody below was ever assigned an arm"
            )
    counts = {arm: picked.count(arm) for arm in sorted(set(picked))}
    matched = {
        arm: sum(1 for u, p in zip(units, picked, strict=True) if p == arm and u.arm == arm)
        for arm in counts
    }
    for arm, n in matched.items():
        if n < MIN_MATCHED and propensities.get(arm, 0.0) > 0:
            reasons.append(
                f"arm {arm!r}: only {n} logged units match the candidate's choice"
                f" (needs {MIN_MATCHED})"
            )
    return reasons, counts, matched


def design(scores: np.ndarray, arms: list[str], arm_names: list[str]) -> np.ndarray:
    """Scores, one indicator per non-first arm, and their products with the scores."""
    onehot = np.array([[float(a == name) for name in arm_names[1:]] for a in arms])
    products = [scores * onehot[:, [j]] for j in range(onehot.shape[1])]
    return np.hstack([scores, onehot, *products])


def score_matrix(units: list[LoggedUnit]) -> np.ndarray:
    """The scores seen in the logs (columns of SCORES some unit has), missing ones at the
    column's median."""
    names = [s for s in SCORES if any(s in u.scores for u in units)]
    raw = np.array([[u.scores.get(s, np.nan) for s in names] for u in units], dtype=float)
    medians = np.nanmedian(raw, axis=0) if len(names) else np.array([])
    return np.where(np.isnan(raw), medians, raw)


def outcome_predictions(
    units: list[LoggedUnit], arm_names: list[str], seed: int = 0
) -> dict[str, np.ndarray]:
    """Cross-fitted P(convert | scores, arm) of every unit for every arm."""
    X = score_matrix(units)
    y = np.array([u.converted for u in units], dtype=int)
    logged = [u.arm for u in units]
    folds = np.random.default_rng(seed).permutation(len(units)) % 2
    predicted = {arm: np.empty(len(units)) for arm in arm_names}
    for fold in (0, 1):
        train, test = folds != fold, folds == fold
        if len(set(y[train])) < 2:  # one label only: its rate is the prediction
            for arm in arm_names:
                predicted[arm][test] = y[train].mean() if train.any() else 0.0
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        model.fit(design(X[train], [logged[i] for i in np.flatnonzero(train)], arm_names), y[train])
        for arm in arm_names:
            rows = design(X[test], [arm] * int(test.sum()), arm_names)
            predicted[arm][test] = model.predict_proba(rows)[:, 1]
    return predicted


def normal(terms: np.ndarray, confidence: float) -> Estimate:
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else float("inf")
    q = float(norm.ppf(0.5 + confidence / 2))
    return Estimate(value, (value - q * se, value + q * se), se)


def evaluate(
    candidate: Candidate,
    units: list[LoggedUnit],
    propensities: dict[str, float],
    control: str,
    confidence: float = 0.95,
) -> Evaluation:
    """The candidate's estimated conversion rate on the logged units, if the logs support it.
    `propensities`: each arm's assignment probability (the experiment's weights, normalized)."""
    if not units:
        return Evaluation(candidate.name, False, ("no logged units",), 0, {}, {}, 0.0)
    reasons, counts, matched = support(candidate, units, propensities)
    y = np.array([u.converted for u in units], dtype=float)
    base = Evaluation(
        candidate.name, not reasons, tuple(reasons), len(units), counts, matched, float(y.mean())
    )
    if reasons:
        return base
    arm_names = sorted(propensities, key=lambda a: (a != control, a))
    picked = [candidate.arm_for(u.scores) for u in units]
    p_logged = np.array([propensities[u.arm] for u in units])
    match = np.array([u.arm == p for u, p in zip(units, picked, strict=True)], dtype=float)
    weights = match / p_logged
    ipw = weights * y
    mu = outcome_predictions(units, arm_names)
    rows = np.arange(len(units))
    index = {arm: i for i, arm in enumerate(arm_names)}
    stacked = np.vstack([mu[arm] for arm in arm_names])
    mu_picked = stacked[[index[p] for p in picked], rows]
    mu_logged = stacked[[index[u.arm] for u in units], rows]
    dr = mu_picked + weights * (y - mu_logged)
    # Everyone given the control: the same estimator, so the difference is paired per unit.
    is_control = np.array([u.arm == control for u in units], dtype=float)
    dr_control = mu[control] + is_control / propensities[control] * (y - mu_logged)
    return Evaluation(
        **{
            **base.__dict__,
            "ipw": normal(ipw, confidence),
            "doubly_robust": normal(dr, confidence),
            "lift_over_control": normal(dr - dr_control, confidence),
            "effective_sample_size": float(weights.sum() ** 2 / (weights**2).sum()),
        }
    )
