"""``python -m benchmarks``: run the benchmark suites and print their tables."""

from __future__ import annotations

import argparse
import sys

from benchmarks.bench_gates import ALL_CONTENDERS, CONTENDERS, EXPERIMENTAL, run_suite

SUITES = ("gates", "runtime", "bus", "lineage")
QUICK_ROWS = 1_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Gate evaluation + row split: signalfactory vs hand-written polars, "
        "pandera and Great Expectations. Results go to .bench/results-<suite>.json.",
    )
    parser.add_argument("--rows", type=int, default=None, help="rows in the table (10,000,000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (3)")
    parser.add_argument("--only", choices=SUITES, default=None, help="run one suite")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_ROWS:,} rows, 3 repeats"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from {', '.join(CONTENDERS)} (default: all of these) and "
        f"the prototypes of suggested src/ fixes {', '.join(EXPERIMENTAL)}",
    )
    parser.add_argument(
        "--ge-rows",
        type=int,
        default=None,
        help="run Great Expectations on a table of this many rows and scale its time "
        "linearly (default: the full table)",
    )
    parser.add_argument(
        "--scale", type=float, default=None, help="runtime suite: TPC-H scale factor (1, or 10)"
    )
    args = parser.parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else 10_000_000)
    repeats = 3 if args.quick and args.repeats < 3 else args.repeats
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(contenders) - set(ALL_CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {', '.join(ALL_CONTENDERS)}")
    status = 0
    for suite in [args.only] if args.only else SUITES:
        if suite == "gates":
            status |= run_suite(rows, repeats, contenders, ge_rows=args.ge_rows)
        elif suite == "runtime":
            from benchmarks.bench_runtime import run_main

            status |= run_main(scale=args.scale, repeats=args.repeats, quick=args.quick)
        elif suite == "bus":
            from benchmarks.bench_bus import main as bus_main

            status |= bus_main(["--quick"] if args.quick else [])
        elif suite == "lineage":
            from benchmarks.bench_lineage import main as lineage_main

            status |= lineage_main(["--quick"] if args.quick else [])
    return status


if __name__ == "__main__":
    sys.exit(main())
