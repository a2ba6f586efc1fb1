"""Scoring inside the profile job with a registered model version: per-cohort models with a
global fallback, the merged ranking, abandonment only with an open cart, and a model swap on a
running keyed function that keeps the user's profile."""

import pytest

from jobs.control import MODELS, ControlRecord, LiveModels, ScoringSettings
from tests.unit.profile_events import MINUTE, T0, cart, page, view
from tests.unit.test_profile_job import CONFIG, Harness
from udfs.model_features import FEATURES, FeatureVector
from udfs.profile import UserProfile
from udfs.scoring import NOISE, ModelSet
from udfs.user_scores import MODEL_SOURCE, score_user

S = CONFIG.profile


def scoring(registry_dir):
    return ScoringSettings(CONFIG.models, CONFIG.leads, str(registry_dir))


def models_record(manifest: dict, sequence: int) -> ControlRecord:
    return ControlRecord(MODELS, sequence, manifest)


@pytest.fixture(scope="module")
def model_set(trained):
    return ModelSet(trained.manifest, trained.registry.model_bytes)


def snapshot_after(events):
    profile = UserProfile.new("u1", S)
    for e in events:
        profile.apply(e, e.ts, S)
    return profile.snapshot(S)


def test_every_target_uses_its_cohorts_own_model_or_the_global_one(trained, model_set):
    assert model_set.version == 1 and set(model_set.targets) == {"abandonment", "drift", "purchase"}
    own = {
        (e["target"], e["cohort"])
        for e in trained.manifest["models"].values()
        if e["cohort"] is not None
    }
    features = FeatureVector([0.0] * len(FEATURES))
    for cohort in model_set.cohort_names:
        for p in model_set.propensities(features, cohort):
            expected = (
                f"{p.target}-cohort{cohort}" if (p.target, cohort) in own else f"{p.target}-global"
            )
            assert p.model == expected and 0.0 <= p.p <= 1.0


def test_learned_scores_are_ranked_with_the_model_free_ones(model_set):
    snapshot = snapshot_after([page(T0), view(T0 + MINUTE)])
    m, leads = CONFIG.models, CONFIG.leads
    scored = score_user(snapshot, model_set, None, "e2", False, m, leads, [])
    sc = scored.scores
    assert set(sc.learned) == {"drift", "purchase"}  # no cart, so no abandonment score
    assert (
        sc.cohort in model_set.cohort_names and sc.cohort_name == model_set.cohort_names[sc.cohort]
    )
    assert sc.dense_cohort == NOISE or sc.dense_cohort in model_set.core_labels
    assert [r["p"] for r in sc.ranked] == sorted((r["p"] for r in sc.ranked), reverse=True)
    learned = [r for r in sc.ranked if r["source"] == MODEL_SOURCE]
    assert {r["score"] for r in learned} == {"drift", "purchase"}
    assert all(r["version"] == 1 and r["model"] for r in learned)
    assert scored.move.reason == "first" and scored.cohort_state.cohort == sc.cohort
    assert sc.lead.base_intent == sc.learned["purchase"].p


def test_abandonment_is_scored_while_a_cart_is_open(model_set):
    snapshot = snapshot_after([page(T0), view(T0 + MINUTE), cart(T0 + 2 * MINUTE)])
    scored = score_user(snapshot, model_set, None, "e3", False, CONFIG.models, CONFIG.leads, [])
    assert 0.0 <= scored.scores.learned["abandonment"].p <= 1.0


def test_without_models_only_the_model_free_scores_are_ranked():
    snapshot = snapshot_after([page(T0)])
    scored = score_user(snapshot, None, None, "e1", False, CONFIG.models, CONFIG.leads, [])
    assert scored.scores.model_version is None and scored.move is None
    assert {r["source"] for r in scored.scores.ranked} == {"profile"}


def test_a_newly_published_version_is_used_by_the_running_function(trained, tmp_path):
    registry = type(trained.registry)(tmp_path)
    v1 = registry.write(1, list(trained.artifacts.values()), (0, 1))
    h = Harness(scoring=scoring(tmp_path), in_force=[models_record(v1, 1)])
    h.send(page(T0))
    h.send(view(T0 + MINUTE))
    v2 = registry.write(2, list(trained.artifacts.values()), (0, 1))
    h.send(view(T0 + 2 * MINUTE))  # registered, not yet published: still version 1
    h.control(models_record(v2, 2))
    [profile] = h.send(view(T0 + 3 * MINUTE))
    versions = [s.model_version for s in h.scored["scores"]]
    assert versions == [1, 1, 1, 2]
    reasons = [m.reason for m in h.scored["cohort_moves"]]
    assert reasons == ["first", "model"]
    swap = h.scored["cohort_moves"][1]
    assert (
        swap.model_version,
        swap.from_cohort_name is not None,
        swap.to_cohort_name is not None,
    ) == (2, True, True)
    assert profile.events == 4  # the profile carried on across the swap
    assert h.function.live.swaps == 1


def test_a_broken_new_version_leaves_the_current_one_in_use(trained, tmp_path):
    registry = type(trained.registry)(tmp_path)
    v1 = registry.write(1, list(trained.artifacts.values()), (0, 1))
    live = LiveModels(scoring(tmp_path), [models_record(v1, 1)])
    manifest = registry.write(2, list(trained.artifacts.values()), (0, 1))
    (tmp_path / manifest["models"]["drift-global"]["path"]).write_bytes(b"not a model")
    assert not live.apply(models_record(manifest, 2))
    assert live.models.version == 1 and live.swaps == 0
