"""Offer-uplift models from labelled outcomes: the exported file round-trips, the model recovers
a known uplift that grows with a score, ONNX agrees with scikit-learn, and too few decisions of
an arm give no model (with the reason) rather than a bad one."""

import random

import numpy as np
import pytest

from conf.policy import SCORES
from models import uplift
from models.outcomes import OUTCOME_COLUMNS, read_outcomes, write_outcomes
from udfs.scoring import OnnxModel

T0 = 1_767_225_600_000


def outcomes(n: int, seed: int = 3, control_share: float = 0.5) -> list[dict]:
    """Decisions whose conversion is 0.1 + 0.2 * abandonment, plus 0.3 * abandonment when the
    offer was delivered: the true uplift is 0.3 * abandonment (0.15 on average)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        abandonment = rng.random()
        delivered = rng.random() >= control_share
        p = 0.1 + 0.2 * abandonment + (0.3 * abandonment if delivered else 0.0)
        rows.append(
            {
                "decision_id": f"d{i}",
                "user_id": f"u{i % 500}",
                "decided_ts": T0 + i * 60_000,
                "action": "discount_offer",
                "experiment": "e",
                "variant": "discount" if delivered else "control",
                "delivered": delivered,
                "converted": rng.random() < p,
                "revenue": 0.0,
                "model_version": 1,
                **{s: None for s in SCORES},
                "abandonment": abandonment,
                "churn": rng.random(),
            }
        )
    return rows


def test_exported_outcomes_read_back_and_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "outcomes.csv"
    write_outcomes(outcomes(5), path)
    back = read_outcomes(path)
    assert [r["decision_id"] for r in back] == [f"d{i}" for i in range(5)]
    assert list(back[0]) == list(OUTCOME_COLUMNS) and back[0]["drift"] == ""
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a labelled-outcomes file"):
        read_outcomes(tmp_path / "other.csv")


def test_the_model_recovers_an_uplift_that_grows_with_the_score(tmp_path):
    path = tmp_path / "outcomes.csv"
    write_outcomes(outcomes(8000), path)  # through the file, as `make train` reads it
    [artifact], report = uplift.fit(read_outcomes(path), 0.3, 17, progress=lambda _: None)
    metrics = report["discount_offer"]
    assert metrics["predicted_uplift"] == pytest.approx(0.15, abs=0.03)
    assert metrics["observed_uplift"] == pytest.approx(0.15, abs=0.05)
    assert metrics["roc_auc"] > 0.55

    onnx = OnnxModel(artifact.model, artifact.features, artifact.metadata["fill"])

    def uplift_at(abandonment: float) -> float:
        scores = artifact.metadata["fill"] | {"abandonment": abandonment, "churn": 0.5}
        treated = scores | {"delivered": 1.0} | {f"delivered*{s}": scores[s] for s in SCORES}
        untreated = scores | {"delivered": 0.0} | {f"delivered*{s}": 0.0 for s in SCORES}
        rows = onnx.rows([treated, untreated])
        p = onnx.positive_probability(rows)
        assert np.abs(p - artifact.estimator.predict_proba(rows)[:, 1]).max() < 1e-6
        return float(p[0] - p[1])

    assert uplift_at(0.9) > uplift_at(0.1) + 0.1  # the true uplifts: 0.27 and 0.03


def test_too_few_control_decisions_give_no_model():
    artifacts, report = uplift.fit(
        outcomes(600, control_share=0.05), 0.3, 17, progress=lambda _: None
    )
    assert artifacts == [] and report["discount_offer"]["model"] is None
    assert report["discount_offer"]["not_delivered"] < uplift.MIN_PER_ARM
