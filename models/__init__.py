"""Offline work: the synthetic history generator now; training, evaluation and ONNX export next."""
