"""`make bench`: run every benchmark, print one table, write bench/results.json.

Each `bench/bench_<name>.py` exposes `run(quick: bool = False) -> list[dict]` with rows
{"figure", "value", "unit", "target", "reference", "reference_name"}; the reference is measured in
the same run, on the same machine, so the figures can be compared.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. tracker")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--soak", action="store_true", help="run the long load/fault runs too")
    parser.add_argument("--output", default=str(HERE / "results.json"))
    args = parser.parse_args(argv)
    wanted = [f"bench_{n.removeprefix('bench_')}" for n in args.names] or discover()
    if not args.soak:
        wanted = [w for w in wanted if w != "bench_soak"]
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for name in wanted:
        started = time.perf_counter()
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            for row in module.run(quick=args.quick):
                rows.append({"benchmark": name.removeprefix("bench_"), **row})
        except Exception:  # one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
        print(f"   {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    print(format_table(rows))
    Path(args.output).write_text(json.dumps({"generated_at": time.time(), "rows": rows,
                                             "failed": failed}, indent=2, ensure_ascii=False))
    print(f"\nwritten to {args.output}")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ["benchmark", "figure", "value", "unit", "target", "reference", "reference of"]
    body = [[r.get("benchmark", ""), r.get("figure", ""), _fmt(r.get("value")), r.get("unit", ""),
             r.get("target", ""), _fmt(r.get("reference")), r.get("reference_name", "")]
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=False)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=False))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)) for row in body]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
