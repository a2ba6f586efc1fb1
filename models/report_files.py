"""The training report of one version, as files a data scientist reads: report.json (every
figure), report.md (a summary: the gate's decision and, per target, the model next to the
baseline and the active version) and <target>.png (ROC and calibration curves on the hold-out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from models import recommendations

METRICS = ("roc_auc", "pr_auc", "brier")
CURVES = {"model": "this version", "baseline": "baseline (raw counts)", "active": "active version"}


def write(folder: Path, version: int, report: dict, predictions: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (folder / "report.md").write_text(summary(version, report))
    for target, held_out in predictions.items():
        plot(folder / f"{target}.png", target, held_out)
    return folder


def summary(version: int, report: dict) -> str:
    t, gate = report["training"], report["gate"]
    lines = [
        f"# Model version {version}: {gate['decision']}",
        "",
        f"History: {t['history']}; event time {t['from_ts_ms']} to {t['to_ts_ms']}, hold-out "
        f"from {t['holdout_from_ts_ms']}. {t['events']:,} events of {t['users']:,} users, "
        f"{t['samples_seen']:,} samples, {t['samples']:,} kept.",
    ]
    if t.get("skipped_records"):
        skipped = ", ".join(f"{n:,} {reason}" for reason, n in t["skipped_records"].items())
        lines.append(f"Records not used: {skipped}.")
    if "seconds" in t:
        lines.append(f"Took {t['seconds']:.0f} s, peak memory {t['peak_memory_mb']:.0f} MB.")
    lines += ["", "## Gate", ""] + [f"- {reason}" for reason in gate["reasons"]]
    lines += ["", "## Targets (hold-out)", ""]
    lines.append("| target | model | samples | positives | ROC AUC | PR AUC | Brier |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for target, evaluation in report["propensity"].items():
        if "skipped" in evaluation:
            lines.append(f"| {target} | {evaluation['skipped']} | | | | | |")
            continue
        rows = [(evaluation["champion"], evaluation["model"]), ("baseline", evaluation["baseline"])]
        if "active" in evaluation:
            rows.append((f"active v{evaluation['active']['version']}", evaluation["active"]))
        for name, m in rows:
            values = " | ".join(str(m.get(k)) for k in METRICS)
            lines.append(
                f"| {target} | {name} | {m['samples']:,} | {m['positives']:,} | {values} |"
            )
    lines.append("")
    for target, evaluation in report["propensity"].items():
        if evaluation.get("dropped_features"):
            dropped = ", ".join(evaluation["dropped_features"])
            lines.append(f"- {target}: features constant in the training rows, dropped: {dropped}")
    lines += ["", f"Plots: {', '.join(f'{t}.png' for t in report['propensity'])}.", ""]
    if "recommendations" in report:
        lines += [
            "## Recommendations (hold-out)",
            "",
            recommendations.summary(report["recommendations"]),
            "",
        ]
    return "\n".join(lines)


def plot(path: Path, target: str, held_out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = held_out["y"]
    figure, (roc, calibration) = plt.subplots(1, 2, figsize=(10, 4.5))
    for key, label in CURVES.items():
        if key not in held_out or len(set(y)) < 2:
            continue
        p = np.asarray(held_out[key])
        fpr, tpr, _ = roc_curve(y, p)
        roc.plot(fpr, tpr, label=label)
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        calibration.plot(predicted, observed, marker="o", label=label)
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
    roc.set(title=f"{target}: ROC", xlabel="false positive rate", ylabel="true positive rate")
    calibration.plot([0, 1], [0, 1], color="grey", linestyle=":")
    calibration.set(title=f"{target}: calibration", xlabel="mean predicted", ylabel="observed rate")
    roc.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
