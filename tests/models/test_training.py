"""`make train` at its default size: the quality bar on the time-based hold-out, and one contract
for every exported model (ONNX agrees with scikit-learn, feature order recorded, missing
features handled). The session's one training run (tests/conftest.py) serves every test here."""

import json
import random
import shutil
from dataclasses import replace

import numpy as np
import pytest
from onnx import load_model_from_string

from conf import settings as settings_module
from models import datasets, propensity
from models.registry import Registry
from udfs.model_features import COHORT_FEATURES, FEATURES
from udfs.scoring import OnnxModel

CONFIG = settings_module.load("local")
ALWAYS = ("cohorts-kmeans", "cohorts-dbscan", *(f"{t}-global" for t in datasets.TARGETS))


def unpack(trained):
    return trained.artifacts, trained.manifest, trained.registry, trained.samples


def holdout_rows(samples, target=None, n=400, features=FEATURES):
    """Hold-out rows with the columns of `features` (a model's own, FEATURES by default)."""
    target = target or "drift"
    _, test = propensity.time_split(samples, target, CONFIG.models.holdout_fraction)
    X, _ = propensity.arrays(test[:n], target)
    return X[:, [FEATURES.index(name) for name in features]]


def test_holdout_meets_the_quality_bar(trained):
    report = trained.report
    auc = {t: report["propensity"][t]["global"] for t in datasets.TARGETS}
    best = {t: max(r["roc_auc"] for r in auc[t].values()) for t in auc}
    print("\n  hold-out ROC AUC", json.dumps(best), "ARI", report["cohorts"]["adjusted_rand_index"])
    assert best["abandonment"] >= 0.85
    assert best["drift"] >= 0.80
    assert report["cohorts"]["adjusted_rand_index"] >= 0.5


def test_every_propensity_report_has_the_evaluation_measures(trained):
    report = trained.report
    for target in datasets.TARGETS:
        for result in report["propensity"][target]["global"].values():
            assert {"roc_auc", "pr_auc", "brier", "calibration"} <= set(result)
            assert 0 <= result["brier"] <= 0.25 and len(result["calibration"]) >= 5


@pytest.mark.parametrize("name", ALWAYS)
def test_onnx_agrees_with_scikit_learn(trained, name):
    artifacts, manifest, registry, samples = unpack(trained)
    artifact = artifacts[name]
    entry = manifest["models"][name]
    onnx = OnnxModel(registry.model_bytes(entry), entry["features"], entry["fill"])
    X = holdout_rows(samples)
    if artifact.kind == "propensity":
        X = holdout_rows(samples, features=entry["features"])
        expected = artifact.estimator.predict_proba(X)[:, 1]
        assert np.abs(onnx.positive_probability(X) - expected).max() < 1e-5
        return
    Xc = X[:, [FEATURES.index(f) for f in COHORT_FEATURES]]
    if artifact.kind == "cohorts":
        labels, distances = onnx.run(Xc)
        assert (labels == artifact.estimator.predict(Xc)).all()
        assert np.abs(distances - artifact.estimator.transform(Xc)).max() < 1e-5
    else:
        indices, distances = onnx.run(Xc)
        scaled = artifact.estimator[0].transform(Xc)
        expected, expected_index = artifact.estimator[1].kneighbors(scaled)
        assert (indices.ravel() == expected_index.ravel()).all()
        assert np.abs(distances.ravel() - expected.ravel()).max() < 1e-5


@pytest.mark.parametrize("name", ALWAYS)
def test_feature_order_is_recorded_and_missing_features_are_filled(trained, name):
    _, manifest, registry, samples = unpack(trained)
    entry = manifest["models"][name]
    if entry["kind"] == "propensity":
        report = trained.report["propensity"][entry["target"]]
        expected_order = [f for f in FEATURES if f not in report["dropped_features"]]
    else:
        expected_order = list(COHORT_FEATURES)
    assert entry["features"] == expected_order
    onnx = OnnxModel(registry.model_bytes(entry), entry["features"], entry["fill"])
    row = dict(zip(FEATURES, holdout_rows(samples, n=1)[0], strict=True))
    dropped = entry["features"][0]
    del row[dropped]
    row[entry["features"][1]] = float("nan")
    X = onnx.rows([row])
    assert X[0, 0] == entry["fill"][dropped] and np.isfinite(X).all()
    assert X[0, 1] == entry["fill"][entry["features"][1]]
    assert all(np.isfinite(output).all() for output in onnx.run(X))


def test_per_cohort_models_agree_with_scikit_learn_too(trained):
    artifacts, manifest, registry, samples = unpack(trained)
    cohort_models = [
        a for a in artifacts.values() if a.kind == "propensity" and a.cohort is not None
    ]
    assert cohort_models, "at least one cohort earned its own model"
    for artifact in cohort_models:
        entry = manifest["models"][artifact.name]
        X = holdout_rows(samples, features=entry["features"])
        onnx = OnnxModel(registry.model_bytes(entry), entry["features"], entry["fill"])
        expected = artifact.estimator.predict_proba(X)[:, 1]
        assert np.abs(onnx.positive_probability(X) - expected).max() < 1e-5, artifact.name


def test_a_propensity_model_exports_one_classifier(trained):
    """Calibration keeps one classifier (not one per fold): every update runs each graph once."""
    artifacts, manifest, registry, _ = unpack(trained)
    for artifact in artifacts.values():
        if artifact.kind != "propensity":
            continue
        graph = load_model_from_string(registry.model_bytes(manifest["models"][artifact.name]))
        ops = [node.op_type for node in graph.graph.node]
        # A logistic regression is one MatMul, a gradient-boosted ensemble one tree node.
        classifiers = ops.count("TreeEnsembleClassifier") + ops.count("MatMul")
        assert classifiers == 1, (artifact.name, ops)


def test_a_tampered_artifact_is_refused(trained, tmp_path):
    entry = trained.manifest["models"]["drift-global"]
    copy = Registry(tmp_path)  # the session's registry stays intact for the other tests
    path = copy.directory / entry["path"]
    path.parent.mkdir(parents=True)
    path.write_bytes(trained.registry.model_bytes(entry) + b"x")
    with pytest.raises(ValueError, match="sha256"):
        copy.model_bytes(entry)


def shuffled_labels(samples, every: int, seed: int) -> list:
    """Every `every`-th sample, with each target's training labels shuffled among them (the
    hold-out keeps the true ones): a challenger that learned nothing, judged on the truth."""
    rng = random.Random(seed)
    kept = [replace(x, labels=dict(x.labels)) for x in samples[::every]]
    for target in datasets.TARGETS:
        training, _ = propensity.time_split(kept, target, CONFIG.models.holdout_fraction)
        values = [x.labels[target] for x in training]
        rng.shuffle(values)
        for x, value in zip(training, values, strict=True):
            x.labels[target] = value
    return kept


def test_a_challenger_trained_on_shuffled_labels_is_refused_and_kept_as_rejected(
    trained, settings, tmp_path
):
    from models.train import register, train

    collected = replace(trained.collected, samples=shuffled_labels(trained.samples, 3, seed=1))
    report, result = train(settings, collected, trained.manifest, trained.registry)
    gate = report["gate"]
    assert gate["decision"] == "rejected", gate
    for target in datasets.TARGETS:
        evaluation = report["propensity"][target]
        assert evaluation["active"]["version"] == 1
        assert evaluation["model"]["roc_auc"] < evaluation["active"]["roc_auc"] - 0.1
    # Registered next to the active version, which stays.
    directory = tmp_path / "models"
    shutil.copytree(trained.registry.directory, directory)
    models = settings.models.model_copy(update={"directory": str(directory)})
    register(settings.model_copy(update={"models": models}), report, result, postgres=False)
    registry = Registry(directory)
    assert registry.load()["version"] == 1
    assert json.loads((directory / "candidates" / "v2.json").read_text())["version"] == 2
    assert registry.next_version() == 3
    summary = (directory / "reports" / "v2" / "report.md").read_text()
    assert summary.startswith("# Model version 2: rejected")
    assert all((directory / "reports" / "v2" / f"{t}.png").stat().st_size for t in datasets.TARGETS)


def test_the_report_sets_each_model_beside_a_baseline_on_the_same_hold_out(trained):
    for target in datasets.TARGETS:
        evaluation = trained.report["propensity"][target]
        model, baseline = evaluation["model"], evaluation["baseline"]
        assert (model["samples"], model["positives"]) == (
            baseline["samples"],
            baseline["positives"],
        )
        assert {"roc_auc", "pr_auc", "brier", "calibration"} <= set(baseline)
        assert model["roc_auc"] > baseline["roc_auc"], target


def test_optics_cohorts_are_exported_and_served_like_dbscan_and_measured_on_the_archetypes(
    trained, tmp_path, figures
):
    """OPTICS selected in config, fitted on the session's collected users: the registered
    artifact is served by the scoring step's own lookup, every clustered user is served their
    own OPTICS cluster, and the training report's quality against the archetypes is recorded."""
    from sklearn.metrics import adjusted_rand_score

    from models import cohorts as cohort_models
    from models.train import cohort_artifacts
    from udfs.model_features import FeatureVector
    from udfs.scoring import NOISE, ModelSet

    m = CONFIG.models.model_copy(update={"dense_algorithm": "optics"})
    collected = trained.collected
    X = np.array(list((collected.cohort_train or collected.cohort_final).values()))
    fitted = cohort_models.fit(X, m, progress=lambda line: None)
    labels, references, radii = cohort_models.dense_fit(fitted.kmeans[0].transform(X), m)
    assert len(set(labels) - {NOISE}) >= 2 and 0 < len(references) < len(X)
    assert (fitted.dense_cohorts(X)[references] == labels[references]).all()

    dense = {"algorithm": "optics"}
    artifacts = cohort_artifacts(fitted, X, {}, dense, m)
    registry = Registry(tmp_path)
    manifest = registry.write(1, artifacts, (0, 1))
    assert manifest["models"]["cohorts-optics"]["algorithm"] == "optics"
    served = ModelSet(manifest, registry.model_bytes)
    rows = list(collected.cohort_final.values())
    expected = fitted.dense_cohorts(np.array(rows))
    for row, cohort in zip(rows, expected, strict=True):
        values = [0.0] * len(FEATURES)
        for name, value in zip(COHORT_FEATURES, row, strict=True):
            values[FEATURES.index(name)] = float(value)
        assert served.dense_cohort(FeatureVector(values)) == cohort

    truth = [collected.archetypes[u] for u in collected.cohort_final]
    optics_ari = adjusted_rand_score(truth, expected)
    dbscan = trained.report["cohorts"]["dense"]
    assert dbscan["algorithm"] == "dbscan" and "adjusted_rand_index" in dbscan
    figures(
        f"dense cohorts against the hidden archetypes (adjusted Rand index): OPTICS"
        f" {optics_ari:.3f} ({(expected == NOISE).mean():.0%} noise), DBSCAN"
        f" {dbscan['adjusted_rand_index']:.3f} ({dbscan['noise_share']:.0%} noise)"
    )
    assert optics_ari > 0.1, "OPTICS finds more of the archetypes' structure than chance"
