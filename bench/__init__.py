"""Benchmarks: `make bench` (bench.run)."""
