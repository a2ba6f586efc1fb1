"""Flink jobs (one module each, built by `build_pipeline`) and the producers that feed them."""
