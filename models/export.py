"""ONNX export with skl2onnx: classifiers without ZipMap (plain probability tensors), a pinned
opset, float64 input except for tree ensembles (float32; their converter needs it)."""

from __future__ import annotations

import numpy as np
from skl2onnx import to_onnx

ML_OPSET = 3


def export(model, n_features: int, opset: int, float32: bool = False) -> bytes:
    sample = np.zeros((1, n_features), dtype=np.float32 if float32 else np.float64)
    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    onx = to_onnx(model, sample, target_opset={"": opset, "ai.onnx.ml": ML_OPSET}, options=options)
    return onx.SerializeToString()
