"""ONNX models inside the jobs: one InferenceSession per model, made in `open()` (never at import),
single-threaded, fed float64 rows in the model's recorded feature order."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


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
        self.features = features
        self.fill = fill or {}
        first = self.session.get_inputs()[0]
        self.input = first.name
        # Tree ensembles are exported for float32 input, the rest for float64.
        self.dtype = np.float32 if first.type == "tensor(float)" else np.float64
        self.outputs = [o.name for o in self.session.get_outputs()]

    def rows(self, values: list[dict[str, float]]) -> np.ndarray:
        """Rows in the model's feature order; a missing or NaN feature takes its fill value (the
        training median), so an older or partial profile can still be scored."""
        return np.array(
            [[self._value(v, name) for name in self.features] for v in values], dtype=np.float64
        )

    def _value(self, values: dict[str, float], name: str) -> float:
        x = values.get(name)
        if x is None or x != x:  # absent or NaN
            return self.fill.get(name, 0.0)
        return float(x)

    def run(self, X: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: X.astype(self.dtype, copy=False)})

    def positive_probability(self, X: np.ndarray) -> np.ndarray:
        """For classifiers exported with zipmap=False: column 1 of the probabilities."""
        return self.run(X)[1][:, 1]
