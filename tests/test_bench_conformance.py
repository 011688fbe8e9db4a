"""Every bench/bench_*.py keeps the contract `python -m bench` relies on (the benchmarks
themselves are not run here: they are not tests)."""

from __future__ import annotations

import importlib
import inspect

import pytest

from bench.__main__ import discover, format_table


@pytest.mark.parametrize("name", discover())
def test_bench_module_exposes_run_quick(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    run = getattr(module, "run", None)
    assert callable(run), f"bench/{name}.py has no run()"
    params = inspect.signature(run).parameters
    assert "quick" in params and params["quick"].default is False, name
    source = inspect.getsource(module)
    assert 'if __name__ == "__main__":' in source, f"{name} cannot run alone"


def test_soak_is_discovered_and_table_formats_rows() -> None:
    assert "bench_soak" in discover()
    table = format_table([{"benchmark": "x", "figure": "f", "value": 1.5, "unit": "ms",
                           "target": "<= 2", "reference": None, "reference_name": ""}])
    assert "f" in table and "1.500" in table and "<= 2" in table
