"""Propensity models: logistic regression and gradient boosting, both calibrated, trained per
target on a time-based split, per cohort where a cohort has enough samples, with a global model
as the fallback. Each is evaluated on the hold-out."""

from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV, calibration_curve

# Classic gradient boosting rather than the histogram variant: its trees compare float32
# values, as ONNX tree ensembles do, so exported scores match scikit-learn's exactly.
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from models.datasets import Sample


def candidates() -> dict[str, Pipeline]:
    """Models see complete rows: missing features are filled with the training medians recorded
    in each model's metadata, by the scoring wrapper (udfs/scoring.py).

    Calibration with `ensemble=False`: the cross-validation folds only give the calibrator its
    unbiased predictions, and one classifier trained on all the rows is kept. The default keeps
    one classifier and calibrator per fold, so the exported graph would run three of each on
    every update (three times the trees of a gradient-boosted model)."""
    return {
        "logistic": make_pipeline(
            StandardScaler(),
            CalibratedClassifierCV(
                LogisticRegression(max_iter=3000), method="sigmoid", cv=3, ensemble=False
            ),
        ),
        "gradient_boosting": make_pipeline(
            CalibratedClassifierCV(
                GradientBoostingClassifier(
                    n_estimators=150,
                    learning_rate=0.1,
                    max_depth=3,
                    subsample=0.7,
                    min_samples_leaf=50,
                    random_state=0,
                ),
                method="sigmoid",
                cv=3,
                ensemble=False,
                n_jobs=2,
            ),
        ),
    }


def time_split(
    samples: list[Sample], target: str, holdout_fraction: float
) -> tuple[list[Sample], list[Sample]]:
    """Train on the earlier samples, hold out the latest `holdout_fraction` by sample time."""
    rows = sorted((x for x in samples if target in x.labels), key=lambda x: x.ts)
    split = rows[int(len(rows) * (1 - holdout_fraction))].ts
    return [x for x in rows if x.ts < split], [x for x in rows if x.ts >= split]


def arrays(samples: list[Sample], target: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.array([x.features for x in samples], dtype=np.float64)
    y = np.array([x.labels[target] for x in samples], dtype=np.int64)
    return X, y


def evaluate(p: np.ndarray, y: np.ndarray) -> dict:
    """ROC AUC, PR AUC, Brier score and a 10-bin calibration table (mean predicted vs observed)."""
    if len(set(y)) < 2:
        return {"samples": int(len(y)), "positives": int(y.sum()), "roc_auc": None}
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    return {
        "samples": int(len(y)),
        "positives": int(y.sum()),
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
        "pr_auc": round(float(average_precision_score(y, p)), 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
        "calibration": [
            {"predicted": round(float(a), 4), "observed": round(float(b), 4)}
            for a, b in zip(predicted, observed, strict=True)
        ],
    }
