"""Benchmarks of the testbed itself (nox sessions: the engine against wrk, the host's timer jitter), not timed
tests. At the top with the entry points: may import anything.
"""
