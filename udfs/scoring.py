"""ONNX models inside the jobs, and what the profile job makes of them for one user.

OnnxModel: one InferenceSession per model, made in `open()` (never at import), single-threaded,
fed rows in the model's recorded feature order. ModelSet: one registered version (cohorts,
dense cohorts, propensity models per target with per-cohort models and a global fallback)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from udfs.model_features import FEATURE_INDEX, FeatureVector
from udfs.rfm import RfmBreakpoints

NOISE = -1


def _import_onnxruntime():
    """Imports onnxruntime on a fresh Python thread. Its pybind11 module init calls
    PyGILState_Ensure, which deadlocks on a Flink thread-mode (pemja) task thread: several
    operators chained in one task each make a thread state on that thread, and the one
    registered for PyGILState need not be the current one. A new thread has only its own."""
    result = {}

    def load():
        try:
            import onnxruntime

            result["module"] = onnxruntime
        except BaseException as e:  # re-raised on the calling thread
            result["error"] = e

    loader = threading.Thread(target=load, name="import-onnxruntime", daemon=True)
    loader.start()
    loader.join()
    if "error" in result:
        raise result["error"]
    return result["module"]


ort = _import_onnxruntime()


class OnnxModel:
    def __init__(
        self, model_bytes: bytes, features: list[str], fill: dict[str, float] | None = None
    ):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            model_bytes, options, providers=["CPUExecutionProvider"]
        )
        self.features = tuple(features)
        fill = fill or {}
        self.fill_row = np.array([fill.get(name, 0.0) for name in features], dtype=np.float64)
        self.index: np.ndarray | None = None  # where its features are in a FeatureVector
        first = self.session.get_inputs()[0]
        self.input = first.name
        # Tree ensembles are exported for float32 input, the rest for float64.
        self.dtype = np.float32 if first.type == "tensor(float)" else np.float64
        self.outputs = [o.name for o in self.session.get_outputs()]

    def rows(self, values: list[dict[str, float]]) -> np.ndarray:
        """Rows in the model's feature order; a missing or NaN feature takes its fill value (the
        training median), so an older or partial profile can still be scored."""
        # None becomes NaN in a float array, so one vectorised fill covers absent and NaN.
        return self.filled(
            np.array([list(map(v.get, self.features)) for v in values], dtype=np.float64)
        )

    def vector_rows(self, vectors: list[FeatureVector]) -> np.ndarray:
        """Rows of profiles' feature vectors, as `rows` makes them."""
        if self.index is None:
            self.index = np.array([FEATURE_INDEX[name] for name in self.features])
        return self.filled(np.array([v.values for v in vectors], dtype=np.float64)[:, self.index])

    def filled(self, X: np.ndarray) -> np.ndarray:
        missing = np.isnan(X)
        return np.where(missing, self.fill_row, X) if missing.any() else X

    def run(self, X: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: X.astype(self.dtype, copy=False)})

    def positive_probability(self, X: np.ndarray) -> np.ndarray:
        """For classifiers exported with zipmap=False: column 1 of the probabilities."""
        return self.run(X)[1][:, 1]


@dataclass(frozen=True)
class Propensity:
    target: str
    p: float
    model: str  # the registered model's name, e.g. `abandonment-cohort3` or `drift-global`


# The models that score a profile; a version's others (uplift) are used by training only.
PROFILE_MODELS = ("cohorts", "dense_cohorts", "propensity")


class ModelSet:
    """Every model of one registered version. `manifest` is the registry's registry.json;
    `read(entry)` returns a model's bytes (checked against its recorded hash)."""

    def __init__(self, manifest: dict, read: Callable[[dict], bytes]):
        self.version: int = manifest["version"]
        # Population quintile edges of standard RFM, learned with this version (if it has them).
        edges = manifest.get("rfm_breakpoints")
        self.rfm_breakpoints = RfmBreakpoints.from_json(edges) if edges else None
        self.cohort_names: dict[int, str] = {}
        self.propensity: dict[tuple[str, int | None], tuple[str, OnnxModel]] = {}
        self.kmeans = self.dense = None
        self.core_labels: list[int] = []
        self.radii: list[float] = []
        for name, entry in manifest["models"].items():
            if entry["kind"] not in PROFILE_MODELS:
                continue
            unknown = set(entry["features"]) - set(FEATURE_INDEX)
            if unknown:
                raise ValueError(f"{name}: features no profile has: {sorted(unknown)}")
            model = OnnxModel(read(entry), entry["features"], entry.get("fill"))
            if entry["kind"] == "cohorts":
                self.kmeans = model
                self.cohort_names = {c["cohort"]: c["name"] for c in entry["cohorts"]}
            elif entry["kind"] == "dense_cohorts":
                self.dense, self.core_labels = model, entry["core_labels"]
                # Versions before OPTICS recorded DBSCAN's one radius.
                self.radii = entry.get("radii") or [entry["eps"]] * len(self.core_labels)
            elif entry["kind"] == "propensity":
                self.propensity[(entry["target"], entry["cohort"])] = (name, model)
        if self.kmeans is None:
            raise ValueError(f"model version {self.version} has no cohort model")
        self.targets = sorted({target for target, _ in self.propensity})

    def cohort_distances(self, features: FeatureVector) -> list[float]:
        _, distances = self.kmeans.run(self.kmeans.vector_rows([features]))
        return [float(d) for d in distances[0]]

    def dense_cohort(self, features: FeatureVector) -> int:
        """The dense cohort (DBSCAN or OPTICS): that of the nearest reference sample if within
        its radius, else noise (models/cohorts.py)."""
        if self.dense is None:
            return NOISE
        index, distance = self.dense.run(self.dense.vector_rows([features]))
        nearest = int(index[0][0])
        return int(self.core_labels[nearest]) if distance[0][0] <= self.radii[nearest] else NOISE

    def propensities(self, features: FeatureVector, cohort: int, targets=None) -> list[Propensity]:
        """Each target's probability from the cohort's own model, or the global one."""
        out = []
        rows: dict[tuple[str, ...], np.ndarray] = {}  # models trained on the same features
        for target in self.targets if targets is None else targets:
            chosen = self.propensity.get((target, cohort)) or self.propensity.get((target, None))
            if chosen is None:
                continue
            name, model = chosen
            X = rows.get(model.features)
            if X is None:
                X = rows[model.features] = model.vector_rows([features])
            out.append(Propensity(target, float(model.positive_probability(X)[0]), name))
        return out
