"""Benchmarks: each prints JSON; none is a timed assertion in the tests."""
