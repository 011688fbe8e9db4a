"""Benchmarks: `make bench` runs them all and prints one table (see bench/__main__.py)."""
