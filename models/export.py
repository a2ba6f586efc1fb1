"""ONNX export with skl2onnx: classifiers without ZipMap (plain probability tensors), nearest
neighbours through onnxruntime's CDist operator, a pinned opset, float64 input except for tree
ensembles (float32; their converter needs it)."""

from __future__ import annotations

import numpy as np
from skl2onnx import to_onnx
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline

ML_OPSET = 3


def export(model, n_features: int, opset: int, float32: bool = False) -> bytes:
    sample = np.zeros((1, n_features), dtype=np.float32 if float32 else np.float64)
    onx = to_onnx(
        model,
        sample,
        target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
        options=converter_options(model),
    )
    return onx.SerializeToString()


def converter_options(model) -> dict | None:
    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else {}
    steps = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    for step in steps:
        if isinstance(step, NearestNeighbors):
            # The default graph computes every distance with generic operators: 1.8 ms a
            # call for 361 core samples here, against 39 us with CDist, same answers.
            options[id(step)] = {"optim": "cdist"}
    return options or None
