"""How well lead scores found buyers, per arm of a lead-scoring experiment (conf/policy.py:
`leads: true`, a variant's `lead_modifiers`): each lead score's outcome is whether its user
purchased within the horizon after it (udfs/user_pipeline.py). Per arm: how many leads and
users, their conversion, the ROC AUC of the score served against that outcome and the conversion
of the top tenth of leads. Then the arms compared (AUC difference), and, on the same leads, the
score served against the one without cohort modifiers (every lead record carries both).

Intervals are percentile bootstraps over users: one user's lead scores share their outcome, so
resampling single leads would make the intervals too narrow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

RESAMPLES = 1000
TOP_SHARE = 0.1


class LeadOutcome(NamedTuple):
    user: str
    variant: str
    score: float  # as served
    unmodified_score: float  # without cohort modifiers
    converted: bool


@dataclass(frozen=True)
class LeadArm:
    variant: str
    leads: int
    users: int
    conversion: float  # share of lead scores followed by a purchase
    auc: float | None  # None: the arm's leads all converted, or none did
    auc_ci: tuple[float, float] | None
    top_conversion: float  # conversion of the top tenth of its leads by score


@dataclass(frozen=True)
class AucDifference:
    difference: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class LeadReport:
    arms: tuple[LeadArm, ...]
    # Each arm against the first (its AUC minus the first's), by variant.
    against_first: dict[str, AucDifference]
    # Per arm, on its own leads: the score served minus the one without modifiers.
    served_vs_unmodified: dict[str, AucDifference]


def auc(scores: np.ndarray, converted: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (ties count half): sklearn's roc_auc_score gives
    the same, at many times the cost over thousands of resamples."""
    positives = int(converted.sum())
    negatives = len(converted) - positives
    if not positives or not negatives:
        return None
    ranks = rankdata(scores)
    return float(
        (ranks[converted].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


class ByUser:
    """One arm's leads grouped by user, to resample users."""

    def __init__(self, rows: Sequence[LeadOutcome]):
        rows = sorted(rows, key=lambda r: r.user)  # each user's leads side by side
        self.score = np.array([r.score for r in rows])
        self.unmodified = np.array([r.unmodified_score for r in rows])
        self.converted = np.array([r.converted for r in rows], dtype=bool)
        users = np.array([r.user for r in rows])
        self.starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        self.lengths = np.diff(np.r_[self.starts, len(rows)])

    @property
    def users(self) -> int:
        return len(self.starts)

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        """The indices of the leads of as many users drawn with replacement."""
        picked = rng.integers(self.users, size=self.users)
        lengths = self.lengths[picked]
        # Each drawn user's run of indices: its start, plus 0, 1, ... within the run.
        ends = np.cumsum(lengths)
        within = np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)
        return np.repeat(self.starts[picked], lengths) + within


def interval(values: list[float], confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(
    statistic: Callable[[np.random.Generator], float | None], seed: int, confidence: float
) -> tuple[float, float] | None:
    """Percentile interval of `statistic` over resamples (one that is undefined on a resample,
    all leads of one outcome, is left out); None when most resamples leave it undefined."""
    rng = np.random.default_rng(seed)
    values = [v for v in (statistic(rng) for _ in range(RESAMPLES)) if v is not None]
    return interval(values, confidence) if len(values) >= RESAMPLES // 2 else None


def top_conversion(scores: np.ndarray, converted: np.ndarray) -> float:
    n = max(1, int(round(len(scores) * TOP_SHARE)))
    return float(converted[np.argsort(-scores, kind="stable")[:n]].mean())


def lead_report(
    rows: Sequence[LeadOutcome], variants: Sequence[str], confidence: float = 0.95, seed: int = 0
) -> LeadReport:
    """`variants`: the experiment's arms in config order (the first is the reference)."""
    by_arm = {v: [r for r in rows if r.variant == v] for v in variants}
    empty = [v for v, found in by_arm.items() if not found]
    if empty:
        raise ValueError(f"no lead outcomes yet for {empty}")
    groups = {v: ByUser(found) for v, found in by_arm.items()}
    arms = []
    for v, g in groups.items():

        def served(rng, g=g):
            idx = g.resample(rng)
            return auc(g.score[idx], g.converted[idx])

        arms.append(
            LeadArm(
                v,
                len(g.score),
                g.users,
                float(g.converted.mean()),
                auc(g.score, g.converted),
                bootstrap(served, seed, confidence),
                top_conversion(g.score, g.converted),
            )
        )
    first = arms[0]
    against_first = {}
    for arm in arms[1:]:
        a, b = groups[first.variant], groups[arm.variant]
        if arm.auc is None or first.auc is None:
            continue

        def difference(rng, a=a, b=b):
            ia, ib = a.resample(rng), b.resample(rng)
            x, y = auc(a.score[ia], a.converted[ia]), auc(b.score[ib], b.converted[ib])
            return None if x is None or y is None else y - x

        ci = bootstrap(difference, seed, confidence)
        if ci is not None:
            against_first[arm.variant] = AucDifference(arm.auc - first.auc, ci)
    paired = {}
    for arm in arms:
        g = groups[arm.variant]
        if arm.auc is None or np.array_equal(g.score, g.unmodified):
            continue  # an arm without modifiers serves the unmodified score

        def gain(rng, g=g):
            idx = g.resample(rng)
            x, y = auc(g.unmodified[idx], g.converted[idx]), auc(g.score[idx], g.converted[idx])
            return None if x is None or y is None else y - x

        ci = bootstrap(gain, seed, confidence)
        if ci is not None:
            paired[arm.variant] = AucDifference(arm.auc - auc(g.unmodified, g.converted), ci)
    return LeadReport(tuple(arms), against_first, paired)
