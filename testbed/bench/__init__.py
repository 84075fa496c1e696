"""Benchmarks of the testbed itself (nox sessions), not timed tests."""
