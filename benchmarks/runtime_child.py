"""One measurement of the runtime benchmark, in a fresh process: ``python -m
benchmarks.runtime_child --contender ours|hand ...`` prints one JSON line.

- ``ours``: the full pipeline via ``SignalFactory.run`` in a fresh home (register the lineitem
  dataset + 7-rule policy, run a tiny warm-up partition first on the same instance so a
  process pool / Dask cluster / Ray is already up, then time the real partition).
- ``hand``: a hand-written polars + deltalake script doing the same read → check → split →
  write (valid rows to one Delta table, invalid rows with a reasons column to another).

Timed: the run only (imports, registration and the warm-up excluded). Peak RSS: this
process's ``VmHWM``, and the peak of the whole process tree (workers included) sampled every
50 ms by a helper thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import yaml

URN = "ds://bench/lineitem"
SHIPMODES = ("REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB")
RETURNFLAGS = ("R", "A", "N")
#: l_quantity is 1..50 in TPC-H; the rule allows 1..49 so ~2% of rows go to quarantine.
QTY_MIN, QTY_MAX = 1, 49
DISC_MIN, DISC_MAX = 0.0, 0.1
DECIMALS = ("l_quantity", "l_extendedprice", "l_discount", "l_tax")
DATES = ("l_shipdate", "l_commitdate", "l_receiptdate")

DATASET: dict[str, Any] = {
    "urn": URN,
    "owner_team": "bench",
    "tier": "TIER_1",
    "storage": {"bronze": "bronze/lineitem", "silver": "silver/lineitem", "gold": "gold/lineitem"},
}

#: The 7-rule contract: 3 invariants + 4 DQ checks.
POLICY: dict[str, Any] = {
    "schema": {
        "mode": "compatible",
        "constraints": [
            {"field": "l_orderkey", "type": "INTEGER"},
            {"field": "l_partkey", "type": "INTEGER"},
            {"field": "l_suppkey", "type": "INTEGER"},
            {"field": "l_linenumber", "type": "INTEGER"},
            *({"field": c, "type": "DECIMAL(15,2)"} for c in DECIMALS),
            {"field": "l_returnflag", "type": "STRING"},
            {"field": "l_linestatus", "type": "STRING"},
            *({"field": c, "type": "DATE"} for c in DATES),
            {"field": "l_shipinstruct", "type": "STRING"},
            {"field": "l_shipmode", "type": "STRING"},
            {"field": "l_comment", "type": "STRING"},
        ],
    },
    "contract_lite": {
        "invariants": [
            "l_extendedprice > 0",
            "l_tax >= 0",
            "l_shipdate <= l_receiptdate",
        ]
    },
    "pii": {"scan_for": []},
    "dq": [
        {"check": "range", "column": "l_quantity", "min": QTY_MIN, "max": QTY_MAX},
        {"check": "range", "column": "l_discount", "min": DISC_MIN, "max": DISC_MAX},
        {"check": "accepted_values", "column": "l_returnflag", "values": list(RETURNFLAGS)},
        {"check": "accepted_values", "column": "l_shipmode", "values": list(SHIPMODES)},
    ],
}
RULES = 7


def status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(key)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class TreeSampler:
    """Peak RSS of this process plus all its descendants, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._me = psutil.Process()
        self._error = psutil.Error
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> float:
        total = self._me.memory_info().rss
        for child in self._me.children(recursive=True):
            with contextlib.suppress(self._error):
                total += child.memory_info().rss
        return total / 2**20

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self.peak_mb = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve())


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from signalfactory.api import SignalFactory

    work = Path(args.workdir)
    fmt = args.format
    ext = "csv" if fmt == "csv" else "parquet"
    (work / "dataset.yaml").write_text(yaml.safe_dump(DATASET, sort_keys=False))
    (work / "policy_bundle.yaml").write_text(yaml.safe_dump(POLICY, sort_keys=False))
    pipeline: dict[str, Any] = {
        "pipeline": "lineitem_bench",
        "dataset": URN,
        "source": {"format": fmt, "path": f"raw/dt={{dt}}/lineitem.{ext}"},
        "engine": args.engine,
        "chunk_size": args.chunk_size,
        "steps": {"silver": [], "gold": []},
    }
    if args.max_workers:
        pipeline["max_workers"] = args.max_workers
    (work / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    _link(Path(args.file), work / "raw" / "dt=full" / f"lineitem.{ext}")
    _link(Path(args.warm_file), work / "raw" / "dt=warm" / f"lineitem.{ext}")
    with SignalFactory(home=work / "home") as sf:
        sf.register(work / "dataset.yaml", work / "policy_bundle.yaml")
        warm_started = time.perf_counter()
        warm = sf.run(work / "pipeline.yaml", {"dt": "warm"})
        warm_s = time.perf_counter() - warm_started
        if str(warm.run.status) != "SUCCEEDED":
            raise RuntimeError(f"warm-up run failed: {warm.run.error}")
        baseline = status_mb("VmRSS")
        cpu0 = cpu_seconds()
        with TreeSampler() as tree:
            started = time.perf_counter()
            outcome = sf.run(work / "pipeline.yaml", {"dt": "full"})
            seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu0
        run = outcome.run
        if str(run.status) != "SUCCEEDED" or outcome.reused:
            raise RuntimeError(f"run {run.status} (reused={outcome.reused}): {run.error}")
        stages = {t.name: t.duration_s for t in run.stages}
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "valid": run.rows_written,
            "invalid": run.rows_quarantined,
            "rows": run.rows_read,
            "certification": str(run.certification_status),
            "baseline_rss_mb": baseline,
            "tree_peak_mb": tree.peak_mb,
            "run_peak_mb": run.reconciliation.get("peak_rss_mb"),
            "warmup_s": warm_s,
            "stages": stages,
        }


def hand_checks() -> list[tuple[Any, Any]]:
    """(fails, reason) per rule, the same 7 rules as the policy."""
    import polars as pl

    q, p = pl.col("l_quantity"), pl.col("l_discount")
    return [
        ((q < QTY_MIN) | (q > QTY_MAX), pl.lit("OUT_OF_RANGE:l_quantity")),
        (pl.col("l_extendedprice") <= 0, pl.lit("INVARIANT:l_extendedprice > 0")),
        ((p < DISC_MIN) | (p > DISC_MAX), pl.lit("OUT_OF_RANGE:l_discount")),
        (pl.col("l_tax") < 0, pl.lit("INVARIANT:l_tax >= 0")),
        (
            pl.col("l_shipdate") > pl.col("l_receiptdate"),
            pl.lit("INVARIANT:l_shipdate <= l_receiptdate"),
        ),
        (
            ~pl.col("l_returnflag").is_in(RETURNFLAGS),
            pl.format("UNKNOWN_ENUM:l_returnflag:{}", pl.col("l_returnflag")),
        ),
        (
            ~pl.col("l_shipmode").is_in(SHIPMODES),
            pl.format("UNKNOWN_ENUM:l_shipmode:{}", pl.col("l_shipmode")),
        ),
    ]


def run_hand(args: argparse.Namespace) -> dict[str, Any]:
    """What a polars user writes by hand: scan, flag, split, two Delta writes."""
    import polars as pl
    from deltalake import write_deltalake

    work = Path(args.workdir)
    checks = hand_checks()
    flags = [f"_f{i}" for i in range(len(checks))]
    reasons = pl.concat_str(
        [pl.when(f).then(r) for f, (_, r) in zip(flags, checks, strict=True)],
        separator="; ",
        ignore_nulls=True,
    ).alias("_reasons")
    baseline = status_mb("VmRSS")
    cpu0 = cpu_seconds()
    with TreeSampler() as tree:
        started = time.perf_counter()
        if args.format == "csv":
            source = pl.scan_csv(
                args.file,
                schema_overrides={
                    **{c: pl.Decimal(15, 2) for c in DECIMALS},
                    **dict.fromkeys(DATES, pl.Date),
                },
            )
        else:
            source = pl.scan_parquet(args.file)
        flagged = source.with_columns(
            [fails.fill_null(False).alias(f) for f, (fails, _) in zip(flags, checks, strict=True)]
        ).with_columns(pl.any_horizontal(flags).alias("_bad"))
        valid_q = flagged.filter(~pl.col("_bad")).drop([*flags, "_bad"])
        invalid_q = flagged.filter(pl.col("_bad")).with_columns(reasons).drop([*flags, "_bad"])
        valid, invalid = pl.collect_all([valid_q, invalid_q])
        write_deltalake(str(work / "valid"), valid.to_arrow(), mode="overwrite")
        write_deltalake(str(work / "invalid"), invalid.to_arrow(), mode="overwrite")
        seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu0
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "valid": valid.height,
        "invalid": invalid.height,
        "rows": valid.height + invalid.height,
        "baseline_rss_mb": baseline,
        "tree_peak_mb": tree.peak_mb,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runtime_child")
    parser.add_argument("--contender", choices=("ours", "hand"), required=True)
    parser.add_argument("--engine", default="threads")
    parser.add_argument("--format", choices=("parquet", "csv"), required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--warm-file", default=None)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--chunk-size", type=int, default=1_000_000)
    parser.add_argument("--max-workers", type=int, default=None)
    args = parser.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    result = run_ours(args) if args.contender == "ours" else run_hand(args)
    result.update(
        peak_rss_mb=status_mb("VmHWM"),
        input_bytes=os.path.getsize(args.file),
        contender=args.contender,
        engine=args.engine if args.contender == "ours" else "polars",
        format=args.format,
        chunk_size=args.chunk_size,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
