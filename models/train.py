"""`make train`: generate a training history, build point-in-time samples with the profile
code, fit cohorts and propensity models, evaluate them on a time-based hold-out, export them to
ONNX and register them (files under `models.directory` and PostgreSQL `model_registry`). When
labelled outcomes were exported (`make export-outcomes`), an offer-uplift model per action is
fitted from them too (models/uplift.py).

Every step prints what it did; the report (metrics per model, cohort names, agreement with the
generator's hidden archetypes) is written next to the models as `report.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import adjusted_rand_score

from conf import settings as settings_module
from conf.settings import Settings
from models import cohorts as cohort_models
from models import datasets, propensity, uplift
from models.export import export
from models.generator import EventGenerator
from models.outcomes import read_outcomes
from models.registry import Artifact, Registry, register_in_postgres
from udfs.events import Event, EventParser, EventType, SourceRef
from udfs.model_features import COHORT_FEATURES, FEATURES, vector
from udfs.profile import UserProfile
from udfs.timeunits import DAY_MS

COHORT_COLUMNS = [FEATURES.index(name) for name in COHORT_FEATURES]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def training_log(config: Settings, users: int, days: float, seed: int):
    """Generated events, parsed by the same parser the jobs use, and the hidden truth."""
    history = EventGenerator(config.generator, users=users, days=days, seed=seed).generate()
    start = config.generator.start_ts_ms
    end = start + int(days * DAY_MS)
    parser = EventParser(
        config.events.max_bytes,
        config.events.min_ts_ms,
        config.events.max_future_skew_ms,
        now_ms=lambda: end,
    )
    events = [
        parser.parse(json.dumps(e).encode(), SourceRef("generated", 0, i))
        for i, e in enumerate(history.events)
    ]
    return [e for e in events if isinstance(e, Event)], history, start, end


def user_vectors(events: list[Event], config: Settings, until_ts: int) -> dict[str, list[float]]:
    """Each user's cohort features from their events before `until_ts`."""
    s = config.profile
    profiles: dict[str, UserProfile] = {}
    for e in sorted(events, key=lambda e: (e.ts, e.event_id)):
        if e.ts >= until_ts or e.type is EventType.CONSENT_UPDATE:
            continue
        profile = profiles.get(e.user_id) or UserProfile.new(e.user_id, s)
        profile.close_sessions(e.ts, s)
        profile.apply(e, e.ts, s)
        profiles[e.user_id] = profile
    for profile in profiles.values():
        profile.close_sessions(until_ts, s)
    return {u: vector(p.snapshot(s), COHORT_FEATURES) for u, p in profiles.items()}


def fill_values(X: np.ndarray, names) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, np.median(X, axis=0), strict=True)}


def train(
    config: Settings, users: int, days: float, seed: int, outcomes: list[dict] | None = None
) -> tuple[dict, dict]:
    """Cohort and propensity models from generated history; offer-uplift models from labelled
    outcomes when given."""
    m = config.models
    began = time.monotonic()
    events, history, start, end = training_log(config, users, days, seed)
    progress(f"[train] {len(events):,} events of {users} users over {days:g} days (seed {seed})")
    samples = datasets.build(events, config.profile, m, end)
    progress(f"[train] {len(samples):,} point-in-time samples ({time.monotonic() - began:.0f}s)")
    holdout_start = start + int((1 - m.holdout_fraction) * (end - start))

    # Cohorts: fitted on the users as they were before the hold-out, compared with the truth
    # on everyone as of the end of the log.
    train_users = user_vectors(events, config, holdout_start)
    X_users = np.array(list(train_users.values()))
    cohorts = cohort_models.fit(X_users, m, progress)
    final = user_vectors(events, config, end)
    archetype = {u.user_id: u.archetype for u in history.users}
    assigned = cohorts.kmeans.predict(np.array(list(final.values())))
    ari = adjusted_rand_score([archetype[u] for u in final], assigned)
    progress(f"[train] {cohorts.k} cohorts; adjusted Rand index vs hidden archetypes {ari:.3f}")
    for profile in cohorts.profiles:
        progress(f"[train]     {profile['cohort']}: {profile['name']} ({profile['size']} users)")
    artifacts = [
        Artifact(
            "cohorts-kmeans",
            "cohorts",
            list(COHORT_FEATURES),
            export(cohorts.kmeans, len(COHORT_FEATURES), m.onnx_opset),
            estimator=cohorts.kmeans,
            metadata={
                "cohorts": cohorts.profiles,
                "fill": fill_values(X_users, COHORT_FEATURES),
                "metrics": {"silhouette": cohorts.silhouette, "adjusted_rand_index": ari},
            },
        ),
        Artifact(
            "cohorts-dbscan",
            "dense_cohorts",
            list(COHORT_FEATURES),
            export(cohorts.dbscan_neighbors, len(COHORT_FEATURES), m.onnx_opset),
            estimator=cohorts.dbscan_neighbors,
            metadata={
                "core_labels": cohorts.dbscan_labels,
                "eps": cohorts.dbscan_eps,
                "fill": fill_values(X_users, COHORT_FEATURES),
                "metrics": {"dense_cohorts": len(set(cohorts.dbscan_labels) - {-1})},
            },
        ),
    ]
    report = {
        "training": {"users": users, "days": days, "seed": seed, "events": len(events)},
        "cohorts": {
            "k": cohorts.k,
            "silhouette": cohorts.silhouette,
            "adjusted_rand_index": round(ari, 4),
            "profiles": cohorts.profiles,
        },
        "propensity": {},
    }
    # The targets side by side: a calibrated model's final refit runs on one core, and while
    # it does another target's folds take the other.
    fitted = Parallel(n_jobs=2)(
        delayed(propensity_models)(target, samples, cohorts, m) for target in datasets.TARGETS
    )
    for target, (models, evaluation) in zip(datasets.TARGETS, fitted, strict=True):
        artifacts += models
        report["propensity"][target] = evaluation
    if outcomes:
        models, report["uplift"] = uplift.fit(outcomes, m.holdout_fraction, m.onnx_opset, progress)
        artifacts += models
    return report, {"artifacts": artifacts, "window": (start, holdout_start), "samples": samples}


def propensity_models(target, samples, cohorts, m) -> tuple[list[Artifact], dict]:
    """The target's global model and the cohorts' own, with their evaluation for the report."""
    train_rows, test_rows = propensity.time_split(samples, target, m.holdout_fraction)
    X, y = propensity.arrays(train_rows, target)
    Xt, yt = propensity.arrays(test_rows, target)
    cohort_of = cohorts.kmeans.predict(X[:, COHORT_COLUMNS])
    cohort_of_test = cohorts.kmeans.predict(Xt[:, COHORT_COLUMNS])
    results, artifacts = {}, []
    fitted = {}
    for algorithm, model in propensity.candidates().items():
        model.fit(X, y)
        fitted[algorithm] = model
        results[algorithm] = propensity.evaluate(model.predict_proba(Xt)[:, 1], yt)
        progress(
            f"[train] {target:<12} global {algorithm:<18} ROC AUC "
            f"{results[algorithm]['roc_auc']}  (train {len(y):,}, hold-out {len(yt):,})"
        )
    champion = max(results, key=lambda a: results[a]["roc_auc"] or 0)
    global_model = fitted[champion]
    artifacts.append(
        propensity_artifact(
            f"{target}-global", target, None, global_model, champion, X, results, m.onnx_opset
        )
    )
    per_cohort = {}
    for cohort in range(cohorts.k):
        rows, test = cohort_of == cohort, cohort_of_test == cohort
        if rows.sum() < m.min_cohort_samples or len(set(y[rows])) < 2 or test.sum() == 0:
            per_cohort[cohort] = "global fallback (too few samples)"
            continue
        model = propensity.candidates()[champion].fit(X[rows], y[rows])
        own = propensity.evaluate(model.predict_proba(Xt[test])[:, 1], yt[test])
        fallback = propensity.evaluate(global_model.predict_proba(Xt[test])[:, 1], yt[test])
        if (own["roc_auc"] or 0) > (fallback["roc_auc"] or 0):
            per_cohort[cohort] = {"model": own, "global_on_cohort": fallback}
            artifacts.append(
                propensity_artifact(
                    f"{target}-cohort{cohort}",
                    target,
                    cohort,
                    model,
                    champion,
                    X[rows],
                    {champion: own, "global_on_cohort": fallback},
                    m.onnx_opset,
                )
            )
        else:
            per_cohort[cohort] = "global fallback (no better on the hold-out)"
    return artifacts, {"champion": champion, "global": results, "cohorts": per_cohort}


def propensity_artifact(name, target, cohort, model, algorithm, X, metrics, opset) -> Artifact:
    trees = algorithm == "gradient_boosting"
    return Artifact(
        name,
        "propensity",
        list(FEATURES),
        export(model, len(FEATURES), opset, float32=trees),
        target=target,
        cohort=cohort,
        estimator=model,
        metadata={"algorithm": algorithm, "fill": fill_values(X, FEATURES), "metrics": metrics},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__)
    config = settings_module.load_or_exit()
    m = config.models
    parser.add_argument("--users", type=int, default=m.train_users)
    parser.add_argument("--days", type=float, default=m.train_days)
    parser.add_argument("--seed", type=int, default=m.train_seed)
    parser.add_argument("--no-postgres", action="store_true", help="only write the files")
    parser.add_argument(
        "--outcomes",
        default=m.outcomes_file,
        help="labelled outcomes (CSV of `make export-outcomes`) for the uplift models, if present",
    )
    args = parser.parse_args(argv)
    outcomes = None
    if Path(args.outcomes).exists():
        outcomes = read_outcomes(Path(args.outcomes))
        progress(f"[train] {len(outcomes):,} labelled outcomes from {args.outcomes}")
    report, trained = train(config, args.users, args.days, args.seed, outcomes)
    registry = Registry(m.directory)
    version = registry.next_version()
    manifest = registry.write(version, trained["artifacts"], trained["window"])
    (Path(m.directory) / "report.json").write_text(json.dumps(report, indent=2))
    if not args.no_postgres:
        register_in_postgres(config, manifest)
    progress(f"[train] registered version {version}: {len(manifest['models'])} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
