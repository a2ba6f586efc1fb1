"""Versioned model artifacts under `models.directory` and the PostgreSQL `model_registry`.

<directory>/registry.json            the active version: every model's path and metadata
<directory>/candidates/v<N>.json     a version the gate rejected (same content, not active)
<directory>/reports/v<N>/            its training report (models/report_files.py)
<directory>/<name>/v<N>/model.onnx   the model
<directory>/<name>/v<N>/metadata.json  features (in order), fill values, training window,
                                     metrics, content hash
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from conf.settings import Settings


@dataclass
class Artifact:
    name: str
    kind: str  # cohorts | dense_cohorts | propensity
    features: list[str]
    model: bytes
    target: str | None = None
    cohort: int | None = None
    metadata: dict = field(default_factory=dict)  # metrics, fill values, extra outputs
    estimator: object = None  # the fitted scikit-learn model (kept for checks, never written)


class Registry:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @property
    def manifest_path(self) -> Path:
        return self.directory / "registry.json"

    def load(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        return json.loads(self.manifest_path.read_text())

    @property
    def candidates(self) -> Path:
        return self.directory / "candidates"

    def next_version(self) -> int:
        """One past every version written, active or rejected."""
        current = self.load()
        versions = [current["version"]] if current else []
        versions += [int(p.stem[1:]) for p in self.candidates.glob("v*.json")]
        return max(versions, default=0) + 1

    def write(
        self,
        version: int,
        artifacts: list[Artifact],
        window: tuple[int, int],
        extras: dict | None = None,
        active: bool = True,
    ) -> dict:
        """Writes the models of `version` and its manifest: as the active one, or (`active`
        False) as a rejected candidate next to it. `extras` go into the manifest as they are
        (e.g. the standard-RFM breakpoints)."""
        models = {}
        for a in artifacts:
            folder = self.directory / a.name / f"v{version}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.onnx").write_bytes(a.model)
            metadata = {
                "name": a.name,
                "version": version,
                "kind": a.kind,
                "target": a.target,
                "cohort": a.cohort,
                "features": a.features,
                "training_window": {"from_ts_ms": window[0], "to_ts_ms": window[1]},
                "sha256": hashlib.sha256(a.model).hexdigest(),
                **a.metadata,
            }
            (folder / "metadata.json").write_text(json.dumps(metadata, indent=2))
            models[a.name] = {"path": f"{a.name}/v{version}/model.onnx", **metadata}
        manifest = {"version": version, "models": models, **(extras or {})}
        path = self.manifest_path
        if not active:
            self.candidates.mkdir(parents=True, exist_ok=True)
            path = self.candidates / f"v{version}.json"
        # Written whole and renamed into place, so a reader never sees half a manifest.
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(manifest, indent=2))
        os.replace(temporary, path)
        return manifest

    def model_bytes(self, entry: dict) -> bytes:
        data = (self.directory / entry["path"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError(f"{entry['path']} does not match its recorded sha256")
        return data


def register_in_postgres(settings: Settings, manifest: dict, status: str = "active") -> None:
    """Records the version's models; `status` says whether the gate made it active."""
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        for entry in manifest["models"].values():
            window = entry["training_window"]
            conn.execute(
                "INSERT INTO model_registry (name, version, kind, target, cohort, path, sha256,"
                " features, metrics, trained_from, trained_to, status)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (name, version) DO NOTHING",
                (
                    entry["name"],
                    entry["version"],
                    entry["kind"],
                    entry["target"],
                    entry["cohort"],
                    entry["path"],
                    entry["sha256"],
                    Jsonb(entry["features"]),
                    Jsonb(entry.get("metrics", {})),
                    window["from_ts_ms"],
                    window["to_ts_ms"],
                    status,
                ),
            )
            for profile in entry.get("cohorts", []):
                conn.execute(
                    "INSERT INTO cohorts (model_version, cohort, name, size, traits)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (
                        entry["version"],
                        profile["cohort"],
                        profile["name"],
                        profile["size"],
                        Jsonb(profile["traits"]),
                    ),
                )
