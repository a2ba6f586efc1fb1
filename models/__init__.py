"""Offline work: the synthetic history generator, point-in-time training sets, cohort and
propensity training, ONNX export and the model registry."""
