"""`make train`: learn cohorts, propensity models and standard-RFM breakpoints from a history,
evaluate them on a time-based hold-out against a simple baseline and the active version, and
register them if they pass the champion/challenger gate.

History (models/history.py): the PostgreSQL event archive (`FROM=`/`UNTIL=` in event time), a
log through a replay mapping (`FILE= MAPPING=`), or the generator. By default the archive, or the
generator while the archive is empty. Point-in-time samples come from the profile code the job
runs (models/datasets.py), user by user, so memory stays bounded.

Per target: features that are constant (or absent) in the training rows are dropped from its
models and listed in the report. The report (`<models.directory>/reports/v<N>/`: report.json,
report.md and a ROC and calibration plot per target) puts each model next to a logistic
regression on a handful of raw counts and the active version, on the same hold-out. A version
that is worse than the active one on any target by more than `models.gate_margin` (ROC AUC) is
kept as a rejected candidate and the active version stays. With labelled outcomes
(`make export-outcomes`) offer-uplift models are fitted too (models/uplift.py). Recommendations
are evaluated offline on a generated history of their own (models/recommendations.py) and
reported with the models.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conf import settings as settings_module
from conf.settings import ConfigError, Models, Settings
from jobs.progress import Progress
from models import cohorts as cohort_models
from models import datasets, propensity, recommendations, report_files, uplift
from models.export import export
from models.history import ArchiveHistory, GeneratedHistory, LogHistory
from models.outcomes import read_outcomes
from models.registry import Artifact, Registry, register_in_postgres
from udfs.model_features import COHORT_FEATURES, FEATURES
from udfs.rfm import RfmBreakpoints
from udfs.scoring import OnnxModel

# The baseline every model must beat: a logistic regression on a handful of raw counts.
BASELINE_FEATURES = (
    "log_events",
    "log_sessions",
    "session_events",
    "session_product_views",
    "session_cart_adds",
)
MIN_TARGET_SAMPLES = 50  # per split and class, below which a target is not trained
MIN_COHORT_USERS_PER_K = 10


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Collected:
    """What one pass over a history gives training."""

    description: str
    span: tuple[int, int]  # first and last event time
    split_ts: int  # hold-out start
    events: int
    users: int
    samples_seen: int  # samples the history gave; `samples` keeps a uniform sample of them
    samples: list[datasets.Sample]
    cohort_train: dict[str, np.ndarray]  # user -> cohort features before the hold-out
    cohort_final: dict[str, np.ndarray]  # user -> cohort features at the end
    breakpoints: RfmBreakpoints | None
    skipped: dict[str, int]
    archetypes: dict[str, str] | None = None  # the generator's hidden truth, if generated


def collect(history, m: Models, s, report=progress) -> Collected:
    """Replays the history user by user through the profile code; keeps a bounded uniform
    sample of the samples and the users' cohort vectors."""
    began = time.monotonic()
    span = history.span()
    if span is None:
        raise ConfigError(f"no events in {history.description}")
    split_ts = span.first_ts + int((1 - m.holdout_fraction) * (span.last_ts - span.first_ts))
    samples = datasets.Reservoir(m.max_samples, seed=m.train_seed)
    users = datasets.Reservoir(m.max_cohort_users, seed=m.train_seed + 1)
    days, counts, means = [], [], []
    replaying = Progress("[train] replaying", span.users, "users")
    for user, events in history.users():
        replayed = datasets.replay_user(events, s, m, span.last_ts, split_ts)
        for sample in replayed.samples:
            samples.add(sample)
        if replayed.cohort_at_end is not None:
            users.add((user, replayed.cohort_before, replayed.cohort_at_end))
        lifetime = replayed.lifetime
        if lifetime.count:
            days.append(lifetime.days_since(span.last_ts))
            counts.append(float(lifetime.count))
            means.append(lifetime.mean())
        replaying.update()
    replaying.close()
    kept = sorted(samples.items, key=lambda x: (x.ts, x.user_id, x.kind))
    report(
        f"[train] {span.events:,} events of {span.users:,} users from {history.description}: "
        f"{samples.seen:,} point-in-time samples (kept {len(kept):,}) "
        f"in {time.monotonic() - began:.0f}s"
    )
    archetypes = history.archetypes() if isinstance(history, GeneratedHistory) else None
    return Collected(
        history.description,
        (span.first_ts, span.last_ts),
        split_ts,
        span.events,
        span.users,
        samples.seen,
        kept,
        {u: np.asarray(before) for u, before, _ in users.items if before is not None},
        {u: np.asarray(final) for u, _, final in users.items},
        RfmBreakpoints.learn(days, counts, means) if days else None,
        dict(history.skipped.reasons),
        archetypes,
    )


def fill_values(X: np.ndarray, names) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, np.median(X, axis=0), strict=True)}


def train(
    config: Settings,
    collected: Collected,
    active: dict | None = None,
    registry: Registry | None = None,
    outcomes: list[dict] | None = None,
) -> tuple[dict, dict]:
    """Cohorts and propensity models from the collected samples, each target evaluated next to
    the baseline and the `active` version's model (read from `registry`)."""
    m = config.models
    cohort_users = collected.cohort_train or collected.cohort_final
    if len(cohort_users) < MIN_COHORT_USERS_PER_K * m.k_max:
        raise ConfigError(
            f"{collected.description} has {len(cohort_users)} users with a profile: cohorts "
            f"need at least {MIN_COHORT_USERS_PER_K * m.k_max} (models.k_max "
            f"{m.k_max} x {MIN_COHORT_USERS_PER_K}); train on a longer history, or on "
            "generated history with --source generator"
        )
    X_users = np.array(list(cohort_users.values()))
    cohorts = cohort_models.fit(X_users, m, progress)
    report = {
        "training": {
            "history": collected.description,
            "from_ts_ms": collected.span[0],
            "to_ts_ms": collected.span[1],
            "holdout_from_ts_ms": collected.split_ts,
            "events": collected.events,
            "users": collected.users,
            "samples_seen": collected.samples_seen,
            "samples": len(collected.samples),
            "skipped_records": collected.skipped,
        },
        "cohorts": {
            "k": cohorts.k,
            "silhouette": cohorts.silhouette,
            "profiles": cohorts.profiles,
        },
        "propensity": {},
    }
    metrics = {"silhouette": cohorts.silhouette}
    final = collected.cohort_final
    dense = cohorts.dense_cohorts(np.array(list(final.values())))
    dense_metrics = report["cohorts"]["dense"] = {
        "algorithm": cohorts.dense_algorithm,
        "dense_cohorts": len(set(cohorts.dense_labels) - {cohort_models.NOISE}),
        "noise_share": round(float((dense == cohort_models.NOISE).mean()), 4),
    }
    if collected.archetypes:
        truth = [collected.archetypes[u] for u in final]
        assigned = cohorts.kmeans.predict(np.array(list(final.values())))
        ari = adjusted_rand_score(truth, assigned)
        metrics["adjusted_rand_index"] = report["cohorts"]["adjusted_rand_index"] = round(ari, 4)
        progress(f"[train] {cohorts.k} cohorts; adjusted Rand index vs hidden archetypes {ari:.3f}")
        # Noise counts as one more group: a method that calls everyone noise scores 0.
        dense_ari = adjusted_rand_score(truth, dense)
        dense_metrics["adjusted_rand_index"] = round(dense_ari, 4)
        progress(
            f"[train] {cohorts.dense_algorithm}: adjusted Rand index vs hidden archetypes"
            f" {dense_ari:.3f} ({dense_metrics['noise_share']:.0%} of users as noise)"
        )
    for profile in cohorts.profiles:
        progress(f"[train]     {profile['cohort']}: {profile['name']} ({profile['size']} users)")
    artifacts = cohort_artifacts(cohorts, X_users, metrics, dense_metrics, m)
    fitted = Parallel(n_jobs=2)(
        delayed(propensity_models)(target, collected.samples, cohorts, m)
        for target in datasets.TARGETS
    )
    predictions = {}
    for target, (models, evaluation, held_out) in zip(datasets.TARGETS, fitted, strict=True):
        artifacts += models
        if held_out is not None:
            champion = active_model_on(active, registry, target, held_out)
            if champion is not None:
                evaluation["active"], held_out["active"] = champion
            predictions[target] = held_out
        report["propensity"][target] = evaluation
    if outcomes:
        models, report["uplift"] = uplift.fit(outcomes, m.holdout_fraction, m.onnx_opset, progress)
        artifacts += models
    report["gate"] = gate(report["propensity"], m.gate_margin, active)
    return report, {
        "artifacts": artifacts,
        "window": (collected.span[0], collected.split_ts),
        "samples": collected.samples,
        "predictions": predictions,
        "rfm_breakpoints": collected.breakpoints,
    }


def cohort_artifacts(
    cohorts, X_users: np.ndarray, metrics: dict, dense_metrics: dict, m: Models
) -> list[Artifact]:
    fill = fill_values(X_users, COHORT_FEATURES)
    return [
        Artifact(
            "cohorts-kmeans",
            "cohorts",
            list(COHORT_FEATURES),
            export(cohorts.kmeans, len(COHORT_FEATURES), m.onnx_opset),
            estimator=cohorts.kmeans,
            metadata={"cohorts": cohorts.profiles, "fill": fill, "metrics": metrics},
        ),
        Artifact(
            f"cohorts-{cohorts.dense_algorithm}",
            "dense_cohorts",
            list(COHORT_FEATURES),
            export(cohorts.dense_neighbors, len(COHORT_FEATURES), m.onnx_opset),
            estimator=cohorts.dense_neighbors,
            metadata={
                "algorithm": cohorts.dense_algorithm,
                "core_labels": cohorts.dense_labels,
                "radii": cohorts.dense_radii,
                "fill": fill,
                "metrics": dense_metrics,
            },
        ),
    ]


def informative_columns(X: np.ndarray) -> list[int]:
    """Columns that vary in the training rows: a constant (or wholly missing) feature says
    nothing, as when a log has no prices, dwell times or categories."""
    finite = np.where(np.isfinite(X), X, np.nan)
    with np.errstate(all="ignore"):
        low, high = np.nanmin(finite, axis=0), np.nanmax(finite, axis=0)
    return [i for i in range(X.shape[1]) if np.isfinite(low[i]) and high[i] > low[i]]


def propensity_models(target, samples, cohorts, m):
    """The target's global model and the cohorts' own, with their evaluation for the report,
    and the hold-out predictions (labels, model, baseline) for the plots."""
    train_rows, test_rows = propensity.time_split(samples, target, m.holdout_fraction)
    X_all, y = propensity.arrays(train_rows, target)
    Xt_all, yt = propensity.arrays(test_rows, target)
    too_few = min(np.bincount(y, minlength=2).min(), np.bincount(yt, minlength=2).min())
    if too_few < MIN_TARGET_SAMPLES:
        reason = (
            f"not trained: {len(y):,} training and {len(yt):,} hold-out samples, fewer than "
            f"{MIN_TARGET_SAMPLES} of a class in one of them"
        )
        progress(f"[train] {target:<12} {reason}")
        return [], {"skipped": reason}, None
    kept = informative_columns(X_all)
    features = [FEATURES[i] for i in kept]
    dropped = [name for name in FEATURES if name not in features]
    X, Xt = X_all[:, kept], Xt_all[:, kept]
    cohort_columns = [FEATURES.index(name) for name in COHORT_FEATURES]
    cohort_of = cohorts.kmeans.predict(X_all[:, cohort_columns])
    cohort_of_test = cohorts.kmeans.predict(Xt_all[:, cohort_columns])
    results, fitted = {}, {}
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
    p = global_model.predict_proba(Xt)[:, 1]
    baseline_columns = [FEATURES.index(n) for n in BASELINE_FEATURES]
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    baseline.fit(X_all[:, baseline_columns], y)
    p_baseline = baseline.predict_proba(Xt_all[:, baseline_columns])[:, 1]
    artifacts = [
        propensity_artifact(
            f"{target}-global", target, None, global_model, champion, X, features, results, m
        )
    ]
    per_cohort = {}
    for cohort in range(cohorts.k):
        rows, test = cohort_of == cohort, cohort_of_test == cohort
        if rows.sum() < m.min_cohort_samples or len(set(y[rows])) < 2 or test.sum() == 0:
            per_cohort[cohort] = "global fallback (too few samples)"
            continue
        model = propensity.candidates()[champion].fit(X[rows], y[rows])
        own = propensity.evaluate(model.predict_proba(Xt[test])[:, 1], yt[test])
        fallback = propensity.evaluate(p[test], yt[test])
        if (own["roc_auc"] or 0) > (fallback["roc_auc"] or 0):
            per_cohort[cohort] = {"model": own, "global_on_cohort": fallback}
            metrics = {champion: own, "global_on_cohort": fallback}
            artifacts.append(
                propensity_artifact(
                    f"{target}-cohort{cohort}",
                    target,
                    cohort,
                    model,
                    champion,
                    X[rows],
                    features,
                    metrics,
                    m,
                )
            )
        else:
            per_cohort[cohort] = "global fallback (no better on the hold-out)"
    evaluation = {
        "champion": champion,
        "model": results[champion],
        "global": results,
        "baseline": {
            "features": [FEATURES[i] for i in baseline_columns],
            **propensity.evaluate(p_baseline, yt),
        },
        "features": len(features),
        "dropped_features": dropped,
        "cohorts": per_cohort,
    }
    held_out = {"y": yt, "model": p, "baseline": p_baseline, "X": Xt_all}
    return artifacts, evaluation, held_out


def propensity_artifact(name, target, cohort, model, algorithm, X, features, metrics, m):
    trees = algorithm == "gradient_boosting"
    return Artifact(
        name,
        "propensity",
        list(features),
        export(model, len(features), m.onnx_opset, float32=trees),
        target=target,
        cohort=cohort,
        estimator=model,
        metadata={"algorithm": algorithm, "fill": fill_values(X, features), "metrics": metrics},
    )


def active_model_on(active: dict | None, registry: Registry | None, target: str, held_out: dict):
    """The active version's global model for `target` on this hold-out: (its metrics with the
    version, its predictions), or None when there is no active version or it has no such
    model. Features it knows that the new samples lack take its recorded fill values."""
    if active is None or registry is None:
        return None
    entry = active["models"].get(f"{target}-global")
    if entry is None:
        return None
    model = OnnxModel(registry.model_bytes(entry), entry["features"], entry.get("fill"))
    X = held_out["X"]
    columns = [
        X[:, FEATURES.index(name)] if name in FEATURES else np.full(len(X), model.fill_row[i])
        for i, name in enumerate(model.features)
    ]
    p = model.positive_probability(np.column_stack(columns))
    return {"version": active["version"], **propensity.evaluate(p, held_out["y"])}, p


def gate(evaluations: dict, margin: float, active: dict | None) -> dict:
    """Whether the new version may become active: on every target both have, its ROC AUC on the
    new hold-out is not below the active version's by more than `margin`."""
    if active is None:
        return {"decision": "active", "reasons": ["no active version to compare with"]}
    refused, reasons = False, []
    for target, evaluation in evaluations.items():
        if "skipped" in evaluation:
            reasons.append(f"{target}: {evaluation['skipped']}; the job will not score it")
            continue
        if "active" not in evaluation:
            reasons.append(f"{target}: no model of the active version to compare with")
            continue
        new, old = evaluation["model"]["roc_auc"], evaluation["active"]["roc_auc"]
        if new is None or old is None:
            reasons.append(f"{target}: ROC AUC undefined on the hold-out (one class)")
        elif new < old - margin:
            refused = True
            reasons.append(f"{target}: ROC AUC {new} < active {old} - margin {margin}")
        else:
            reasons.append(f"{target}: ROC AUC {new} vs active {old} (margin {margin})")
    return {
        "decision": "rejected" if refused else "active",
        "margin": margin,
        "against_version": active["version"],
        "reasons": reasons,
    }


def choose_history(config: Settings, args) -> object:
    """The history to learn from: as asked, else the archive if it holds events in the range,
    else the generator (so a fresh clone can train before anything was archived)."""
    if args.file or args.mapping:
        if not (args.file and args.mapping):
            raise ConfigError("a log needs both FILE= and MAPPING= (the replay mapping)")
        return LogHistory(config, Path(args.file), Path(args.mapping))
    generated = GeneratedHistory(config, args.users, args.days, args.seed)
    if args.source == "generator":
        return generated
    archive = ArchiveHistory(config, event_time(args.from_), event_time(args.until))
    if args.source == "archive" or archive.span() is not None:
        return archive
    progress("[train] the event archive is empty: training on generated history")
    return generated


def event_time(value: str | None) -> int | None:
    """An event time from the command line: epoch milliseconds or an ISO 8601 date/time (UTC
    unless it says otherwise)."""
    if value in (None, ""):
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"not an event time: {value!r} (use epoch ms or ISO 8601, e.g. 2026-01-31)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def register(config: Settings, report: dict, trained: dict, postgres: bool) -> dict:
    """Writes the version (active, or a rejected candidate) with its report and plots."""
    registry = Registry(config.models.directory)
    version = registry.next_version()
    active = report["gate"]["decision"] == "active"
    breakpoints = trained["rfm_breakpoints"]
    manifest = registry.write(
        version,
        trained["artifacts"],
        trained["window"],
        extras={"rfm_breakpoints": breakpoints.to_json()} if breakpoints else {},
        active=active,
    )
    folder = report_files.write(
        registry.directory / "reports" / f"v{version}", version, report, trained["predictions"]
    )
    if postgres:
        register_in_postgres(config, manifest, status="active" if active else "rejected")
    state = "registered and active" if active else "rejected (the active version stays)"
    progress(f"[train] version {version}: {len(manifest['models'])} models, {state}")
    progress(f"[train] report: {folder / 'report.md'}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config = settings_module.load_or_exit()
    m = config.models
    parser.add_argument("--source", choices=("auto", "archive", "generator"), default="auto")
    parser.add_argument("--from", dest="from_", help="archive events from this event time")
    parser.add_argument("--until", help="archive events before this event time")
    parser.add_argument("--file", help="a log (CSV or JSONL, .gz too) instead of the archive")
    parser.add_argument("--mapping", help="the log's replay mapping (conf/mappings/*.yaml)")
    parser.add_argument("--users", type=int, default=m.train_users, help="generated users")
    parser.add_argument("--days", type=float, default=m.train_days, help="generated days")
    parser.add_argument("--seed", type=int, default=m.train_seed, help="generator seed")
    parser.add_argument("--directory", default=m.directory, help="where the models are kept")
    parser.add_argument(
        "--max-samples", type=int, default=m.max_samples, help="samples kept (models.max_samples)"
    )
    parser.add_argument("--no-postgres", action="store_true", help="only write the files")
    parser.add_argument(
        "--no-recommendations",
        action="store_true",
        help="skip the offline evaluation of recommendations (models/recommendations.py)",
    )
    parser.add_argument(
        "--outcomes",
        default=m.outcomes_file,
        help="labelled outcomes (CSV of `make export-outcomes`) for the uplift models, if present",
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    outcomes = None
    if Path(args.outcomes).exists():
        outcomes = read_outcomes(Path(args.outcomes))
        progress(f"[train] {len(outcomes):,} labelled outcomes from {args.outcomes}")
    m = m.model_copy(update={"directory": args.directory, "max_samples": args.max_samples})
    config = config.model_copy(update={"models": m})
    registry = Registry(args.directory)
    try:
        history = choose_history(config, args)
        collected = collect(history, m, config.profile)
        report, trained = train(config, collected, registry.load(), registry, outcomes)
        if not args.no_recommendations:
            report["recommendations"] = recommendations.evaluate(config, progress).report
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report["training"]["seconds"] = round(time.monotonic() - began, 1)
    report["training"]["peak_memory_mb"] = round(peak_memory_mb(), 1)
    register(config, report, trained, postgres=not args.no_postgres)
    progress(
        f"[train] {report['training']['seconds']:.0f}s, peak memory "
        f"{report['training']['peak_memory_mb']:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
