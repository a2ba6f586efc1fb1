"""Offer-uplift models, trained on labelled outcomes (what happened after each decision).

A labelled outcome is one decision: the scores the decision step saw, whether the action was
delivered (a control arm's decision is not), and whether the user bought within the attribution
window. Per action, one logistic model (an "S-learner") predicts conversion from the scores,
the delivered flag and their products, so the effect of delivering may depend on the scores:

    uplift(scores) = P(convert | scores, delivered) - P(convert | scores, not delivered)

It needs both arms: without a control, delivered and not delivered are not comparable.
Evaluated on the latest decisions held out: ROC AUC, and the mean predicted uplift against the
observed difference of conversion rates between the arms.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conf.policy import SCORES
from models.export import export
from models.registry import Artifact

FEATURES = (*SCORES, "delivered", *(f"delivered*{s}" for s in SCORES))
MIN_PER_ARM = 50  # decisions of each arm (and each label) before a model is worth fitting


def number(text) -> float:
    return float(text) if text not in (None, "") else float("nan")


def flag(text) -> int:
    return int(str(text).lower() in ("true", "1", "t"))


def design(scores: np.ndarray, delivered: np.ndarray) -> np.ndarray:
    """Rows of FEATURES from score rows (missing scores already filled) and delivered flags."""
    d = delivered.reshape(-1, 1).astype(np.float64)
    return np.hstack([scores, d, scores * d])


def fit_action(
    rows: list[dict], action: str, holdout_fraction: float, opset: int, progress: Callable
) -> tuple[Artifact | None, dict]:
    """The uplift model of one action from its labelled outcomes, or None (with the reason in
    the report) when there are too few decisions of an arm or label."""
    mine = sorted((r for r in rows if r["action"] == action), key=lambda r: int(r["decided_ts"]))
    delivered = np.array([flag(r["delivered"]) for r in mine], dtype=np.int64)
    y = np.array([flag(r["converted"]) for r in mine], dtype=np.int64)
    counts = {
        "delivered": int(delivered.sum()),
        "not_delivered": int(len(mine) - delivered.sum()),
        "converted": int(y.sum()),
        "not_converted": int(len(mine) - y.sum()),
    }
    if min(counts.values()) < MIN_PER_ARM:
        progress(f"[train] uplift {action}: too few decisions ({counts}); needs {MIN_PER_ARM}")
        return None, {"decisions": len(mine), **counts, "model": None}
    raw = np.array([[number(r[s]) for s in SCORES] for r in mine])
    split = int(len(mine) * (1 - holdout_fraction))
    # Medians of the training part; a score never seen (no model registered) is a constant 0.
    fill = np.array(
        [np.median(c[~np.isnan(c)]) if (~np.isnan(c)).any() else 0.0 for c in raw[:split].T]
    )
    scores = np.where(np.isnan(raw), fill, raw)
    X = design(scores, delivered)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    model.fit(X[:split], y[:split])
    Xt, yt, dt = X[split:], y[split:], delivered[split:]
    treated = model.predict_proba(design(scores[split:], np.ones(len(yt))))[:, 1]
    untreated = model.predict_proba(design(scores[split:], np.zeros(len(yt))))[:, 1]
    both_arms = dt.any() and not dt.all()
    metrics = {
        "decisions": len(mine),
        **counts,
        "holdout": int(len(yt)),
        "roc_auc": (
            round(float(roc_auc_score(yt, model.predict_proba(Xt)[:, 1])), 4)
            if len(set(yt)) == 2
            else None
        ),
        "predicted_uplift": round(float(np.mean(treated - untreated)), 4),
        "observed_uplift": (
            round(float(yt[dt == 1].mean() - yt[dt == 0].mean()), 4) if both_arms else None
        ),
    }
    progress(
        f"[train] uplift {action}: {len(mine):,} decisions, hold-out ROC AUC {metrics['roc_auc']},"
        f" predicted uplift {metrics['predicted_uplift']:+.3f}"
        f" (observed {metrics['observed_uplift']})"
    )
    artifact = Artifact(
        f"uplift-{action}",
        "uplift",
        list(FEATURES),
        export(model, len(FEATURES), opset),
        target=action,
        estimator=model,
        metadata={
            "algorithm": "s_learner_logistic",
            "fill": dict(zip(SCORES, map(float, fill), strict=True)),
            "metrics": metrics,
        },
    )
    return artifact, metrics


def fit(
    rows: list[dict], holdout_fraction: float, opset: int, progress: Callable
) -> tuple[list[Artifact], dict]:
    """An uplift model per action that has enough labelled outcomes of both arms."""
    artifacts, report = [], {}
    for action in sorted({r["action"] for r in rows}):
        artifact, report[action] = fit_action(rows, action, holdout_fraction, opset, progress)
        if artifact is not None:
            artifacts.append(artifact)
    return artifacts, report
