"""Gate evaluation plus the row split, signalfactory against its peers.

Every contender reads the generated ``orders`` Parquet file, evaluates the same checks
(not-null on ``id`` and ``customer_id``, ``id`` unique with the first occurrence winning,
``email`` regex, ``total`` in 0..100000, ``order_type`` in a set, ``country`` of length 2)
and splits the rows: valid rows on one side, invalid rows with a reasons column on the other.

- ``ours-threads`` / ``ours-sequential``: ``validate_files`` (chunk 1M, uniqueness global
  across chunks) on the two engines.
- ``polars-hand`` (the reference): a hand-written single-pass polars script:
  ``scan_parquet``, one flag column per check, one ``collect_all`` of both sides (polars
  computes the shared part once, on its default engine); no chunking, no global state.
- ``polars-hand-eager``: the same with ``read_parquet`` and eager filters, as in a notebook.
- ``pandera-polars``: pandera's polars backend, ``lazy=True``, split from its failure cases.
- ``ours-seq-proto`` / ``ours-seq-proto-decay0`` (only with ``--contenders``): ours with
  the src/ fixes that ``benchmarks.memprobe`` prototypes, patched into the child process.
- ``great-expectations``: Great Expectations 1.x on pandas, ``result_format`` COMPLETE,
  split from ``unexpected_index_list``. Its ``expect_column_values_to_be_unique`` flags every
  occurrence of a duplicated key, so it is held to that count instead.

Each run is a fresh child process (``python -m benchmarks.bench_gates --contender NAME
--file F``) that prints one JSON line: the seconds of the run (imports and setup excluded),
its CPU seconds, its peak RSS (``VmHWM``), and the valid/invalid counts and failures per
injected kind. Runs are interleaved (repeat r runs every contender, in an order rotated by r)
and summarized as medians; ratios are medians of the per-repeat ratios. The counts of every
contender are checked against what ``datagen`` injected; ours and the reference must match
exactly, or the run fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import BENCH_DIR, REPO_ROOT
from benchmarks.datagen import EMAIL_RE, ORDER_TYPES, Manifest, ensure_dataset

CHUNK_SIZE = 1_000_000
TOTAL_MIN, TOTAL_MAX = 0, 100_000
REFERENCE = "polars-hand"
OURS = ("ours-threads", "ours-sequential")
CONTENDERS = (*OURS, REFERENCE, "polars-hand-eager", "pandera-polars", "great-expectations")
#: Not run by default (``--contenders``): ours with the fixes ``benchmarks.memprobe``
#: prototypes (polars-native chunk reader, one-allocation merge of seen keys; ``-decay0``
#: also sets polars' jemalloc to return freed memory at once). They show what the
#: suggested changes to src/ would buy; they are not the shipped code.
EXPERIMENTAL = ("ours-seq-proto", "ours-seq-proto-decay0")
ALL_CONTENDERS = (*CONTENDERS, *EXPERIMENTAL)
_CHILD_ENV = {
    "ours-seq-proto-decay0": {"_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"},
}
#: Third-party tools: a count mismatch is reported, not fatal.
_PEERS = frozenset({"pandera-polars", "great-expectations"})
#: Contenders that flag every occurrence of a duplicated key, not only the later ones.
ALL_OCCURRENCES = frozenset({"great-expectations"})
CHILD_TIMEOUT_S = 1_800

# Targets from the requirement.
MAX_VS_HAND = 1.25
MIN_PANDERA_OVER_OURS = 1.25
MIN_GE_OVER_OURS = 10.0
MAX_OURS_PEAK_MB = 600.0

#: Failure signature (as signalfactory names it) → injected kind.
_SIGNATURE_KIND = {
    "NULL_CONSTRAINT:customer_id": "null",
    "DUPLICATE_KEY:id": "duplicate",
    "PATTERN_MISMATCH:email": "pattern",
    "OUT_OF_RANGE:total": "range",
    "UNKNOWN_ENUM:order_type": "enum",
    "LENGTH_OUT_OF_RANGE:country": "length",
}
#: Checked column → injected kind (for peers that report by column); ``id`` is special.
_COLUMN_KIND = {
    "customer_id": "null",
    "email": "pattern",
    "total": "range",
    "order_type": "enum",
    "country": "length",
}


def kind_of_signature(signature: str) -> str:
    for prefix, kind in _SIGNATURE_KIND.items():
        if signature == prefix or signature.startswith(prefix + ":"):
            return kind
    return f"other:{signature}"


def kind_of_column(column: str, *, null_check: bool) -> str:
    if column == "id":
        return "null:id" if null_check else "duplicate"
    return _COLUMN_KIND.get(column, f"other:{column}")


# ---------------------------------------------------------------------------------------------
# Child side: one contender, one run.
# ---------------------------------------------------------------------------------------------


def _status_mb(key: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process, in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not found in /proc/self/status")


class Clock:
    """Wall and CPU seconds (user + system, all threads of this process) since ``restart``."""

    def __init__(self) -> None:
        self.restart()

    @staticmethod
    def _cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def restart(self) -> None:
        self._wall, self._cpu0 = time.perf_counter(), self._cpu()

    def lap(self) -> tuple[float, float]:
        return time.perf_counter() - self._wall, self._cpu() - self._cpu0


@dataclass
class RunResult:
    seconds: float
    cpu_seconds: float
    valid: int
    invalid: int
    by_kind: dict[str, int]
    setup_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _tally(counts: dict[str, int], kind: str, n: int) -> None:
    if n:
        counts[kind] = counts.get(kind, 0) + n


#: The orders policy as a ``policy_bundle.yaml`` would declare it.
ORDERS_POLICY: dict[str, Any] = {
    "schema": {
        "mode": "compatible",
        "constraints": [
            {"field": "id", "type": "INTEGER", "nullable": False},
            {"field": "customer_id", "type": "STRING", "nullable": False},
            {"field": "total", "type": "DOUBLE"},
            {"field": "order_type", "type": "STRING"},
            {"field": "email", "type": "STRING"},
            {"field": "ts", "type": "TIMESTAMP"},
            {"field": "country", "type": "STRING"},
        ],
    },
    "dq": [
        {"check": "unique", "column": "id"},
        {"check": "regex", "column": "email", "pattern": EMAIL_RE},
        {"check": "range", "column": "total", "min": TOTAL_MIN, "max": TOTAL_MAX},
        {"check": "accepted_values", "column": "order_type", "values": list(ORDER_TYPES)},
        {"check": "str_length", "column": "country", "min": 2, "max": 2},
    ],
}


def run_ours(path: Path, engine: str, chunk_size: int) -> RunResult:
    import polars as pl

    from signalfactory.enforcement.checks import REASONS
    from signalfactory.enforcement.policy import PolicyBundle
    from signalfactory.pipeline.validate import validate_files

    clock = Clock()
    policy = PolicyBundle.model_validate(ORDERS_POLICY)
    seen = {"valid": 0, "invalid": 0, "reasonless": 0, "chunks": 0}
    lock = threading.Lock()  # the threads engine calls the sink from its workers

    def sink(index: int, valid: pl.DataFrame, invalid: pl.DataFrame) -> None:
        # Cheap: heights and the (cached) null count; the frames are otherwise dropped.
        reasonless = invalid[REASONS].null_count() if REASONS in invalid.columns else invalid.height
        with lock:
            seen["chunks"] += 1
            seen["valid"] += valid.height
            seen["invalid"] += invalid.height
            seen["reasonless"] += reasonless

    setup, _ = clock.lap()
    clock.restart()
    summary = validate_files([path], policy, chunk_size=chunk_size, engine=engine, sink=sink)
    seconds, cpu = clock.lap()
    by_kind: dict[str, int] = {}
    for signature, n in summary.failures().items():
        _tally(by_kind, kind_of_signature(signature), n)
    if (seen["valid"], seen["invalid"]) != (summary.valid_rows, summary.invalid_rows):
        raise AssertionError(f"sink saw {seen} but the summary says {summary}")
    if seen["reasonless"]:
        raise AssertionError(f"{seen['reasonless']} invalid rows carry no reason")
    return RunResult(
        seconds,
        cpu,
        summary.valid_rows,
        summary.invalid_rows,
        by_kind,
        setup,
        {"chunks": seen["chunks"], "engine": engine, "chunk_size": chunk_size},
    )


def run_ours_prototype(path: Path, chunk_size: int) -> RunResult:
    """Ours (sequential) with the fixes suggested for src/, patched in this process only."""
    from benchmarks.memprobe import patch_reader, patch_unique_merge

    patch_reader("polars-slice")
    patch_unique_merge()
    result = run_ours(path, "sequential", chunk_size)
    result.extra["prototype"] = "polars-slice reader + np.insert merge"
    return result


def run_polars_hand(path: Path, *, lazy: bool) -> RunResult:
    """What a polars user writes by hand: one pass of flags, two filters, reasons on the bad.

    ``lazy``: ``scan_parquet`` and one ``collect_all`` of both sides (the common subplan is
    computed once; polars' default engine streams it). Otherwise ``read_parquet`` and eager
    frames, as in a notebook.
    """
    import polars as pl

    clock = Clock()
    # (fails, reason); the enum reason names the offending value, as ours does.
    checks: list[tuple[pl.Expr, pl.Expr]] = [
        (pl.col("id").is_null(), pl.lit("NULL_CONSTRAINT:id")),
        (pl.col("customer_id").is_null(), pl.lit("NULL_CONSTRAINT:customer_id")),
        (
            pl.col("id").is_not_null() & ~pl.col("id").is_first_distinct(),
            pl.lit("DUPLICATE_KEY:id"),
        ),
        (~pl.col("email").str.contains(EMAIL_RE), pl.lit("PATTERN_MISMATCH:email")),
        (
            (pl.col("total") < TOTAL_MIN) | (pl.col("total") > TOTAL_MAX),
            pl.lit("OUT_OF_RANGE:total"),
        ),
        (
            ~pl.col("order_type").is_in(ORDER_TYPES),
            pl.format("UNKNOWN_ENUM:order_type:{}", pl.col("order_type")),
        ),
        (pl.col("country").str.len_chars() != 2, pl.lit("LENGTH_OUT_OF_RANGE:country")),
    ]
    flags = [f"_f{i}" for i in range(len(checks))]
    reasons = pl.concat_str(
        [pl.when(f).then(reason) for f, (_, reason) in zip(flags, checks, strict=True)],
        separator="; ",
        ignore_nulls=True,
    ).alias("_reasons")
    setup, _ = clock.lap()
    clock.restart()
    source = pl.scan_parquet(path) if lazy else pl.read_parquet(path).lazy()
    flagged = source.with_columns(
        [fails.fill_null(False).alias(f) for f, (fails, _) in zip(flags, checks, strict=True)]
    ).with_columns(pl.any_horizontal(flags).alias("_bad"))
    valid_q = flagged.filter(~pl.col("_bad")).drop([*flags, "_bad"])
    invalid_q = flagged.filter(pl.col("_bad")).with_columns(reasons).drop([*flags, "_bad"])
    if lazy:
        valid, invalid = pl.collect_all([valid_q, invalid_q])
    else:
        frame = flagged.collect()
        valid = frame.filter(~pl.col("_bad")).drop([*flags, "_bad"])
        invalid = frame.filter(pl.col("_bad")).with_columns(reasons).drop([*flags, "_bad"])
    seconds, cpu = clock.lap()
    by_kind: dict[str, int] = {}
    counts = invalid["_reasons"].str.split("; ").explode().value_counts()
    for signature, n in counts.iter_rows():
        _tally(by_kind, kind_of_signature(signature), int(n))
    return RunResult(seconds, cpu, valid.height, invalid.height, by_kind, setup)


def run_pandera(path: Path) -> RunResult:
    import pandera.polars as pa
    import polars as pl

    clock = Clock()
    # First occurrence wins, as in ours (pandera's own ``unique=True`` flags every one).
    first_wins = pa.Check(
        lambda data: data.lazyframe.select(pl.col(data.key).is_first_distinct()),
        name="unique_first_wins",
    )
    schema = pa.DataFrameSchema(
        {
            "id": pa.Column(pl.Int64, nullable=False, checks=[first_wins]),
            "customer_id": pa.Column(pl.String, nullable=False),
            "total": pa.Column(pl.Float64, checks=pa.Check.in_range(TOTAL_MIN, TOTAL_MAX)),
            "order_type": pa.Column(pl.String, checks=pa.Check.isin(list(ORDER_TYPES))),
            "email": pa.Column(pl.String, checks=pa.Check.str_matches(EMAIL_RE)),
            "ts": pa.Column(pl.Datetime("us", "UTC")),
            "country": pa.Column(pl.String, checks=pa.Check.str_length(2, 2)),
        }
    )
    setup, _ = clock.lap()
    clock.restart()
    df = pl.read_parquet(path)
    try:
        schema.validate(df, lazy=True)
        failures = None
    except pa.errors.SchemaErrors as exc:
        failures = exc.failure_cases
    rows = df.with_row_index("_row")
    if failures is None:
        valid, invalid = df, rows.clear().drop("_row").with_columns(pl.lit("").alias("_reasons"))
    else:
        if failures["index"].null_count():
            raise AssertionError(f"pandera reported frame-level failures:\n{failures}")
        reasons = (
            failures.group_by("index")
            .agg(pl.format("{}:{}", "column", "check").str.join("; ").alias("_reasons"))
            .with_columns(pl.col("index").cast(pl.get_index_type()))
        )
        valid = rows.join(reasons, left_on="_row", right_on="index", how="anti").drop("_row")
        invalid = rows.join(
            reasons, left_on="_row", right_on="index", how="inner", maintain_order="left"
        ).drop("_row")
    seconds, cpu = clock.lap()
    by_kind: dict[str, int] = {}
    if failures is not None:
        for column, check, n in failures.group_by("column", "check").len().iter_rows():
            _tally(by_kind, kind_of_column(column, null_check=check == "not_nullable"), int(n))
    return RunResult(seconds, cpu, valid.height, invalid.height, by_kind, setup)


def run_great_expectations(path: Path) -> RunResult:
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import numpy as np
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    clock = Clock()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("pandas")
        .add_dataframe_asset(name="orders")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="orders"))
    for expectation in (
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="customer_id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL_RE),
        gxe.ExpectColumnValuesToBeBetween(column="total", min_value=TOTAL_MIN, max_value=TOTAL_MAX),
        gxe.ExpectColumnValuesToBeInSet(column="order_type", value_set=list(ORDER_TYPES)),
        gxe.ExpectColumnValueLengthsToBeBetween(column="country", min_value=2, max_value=2),
    ):
        suite.add_expectation(expectation)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name="orders", data=batch_definition, suite=suite)
    )
    setup, _ = clock.lap()
    clock.restart()
    df = pd.read_parquet(path)
    result = validation.run(
        batch_parameters={"dataframe": df}, result_format={"result_format": "COMPLETE"}
    )
    indices: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    by_kind: dict[str, int] = {}
    for outcome in result.results:
        config = outcome.expectation_config
        column = str(config.kwargs["column"])
        unexpected = np.asarray(outcome.result.get("unexpected_index_list") or [], dtype=np.int64)
        _tally(
            by_kind,
            kind_of_column(column, null_check=config.type == "expect_column_values_to_not_be_null"),
            int(unexpected.size),
        )
        indices.append(unexpected)
        labels.append(np.full(unexpected.size, f"{config.type}:{column}", dtype=object))
    failed = pd.DataFrame({"index": np.concatenate(indices), "reason": np.concatenate(labels)})
    reasons = failed.groupby("index", sort=True)["reason"].agg("; ".join)
    invalid = df.loc[reasons.index].assign(_reasons=reasons.to_numpy())
    valid = df.drop(index=reasons.index)
    seconds, cpu = clock.lap()
    return RunResult(
        seconds, cpu, len(valid), len(invalid), by_kind, setup, {"success": bool(result.success)}
    )


#: Imported before the baseline RSS is taken, so the baseline shows what imports cost.
_IMPORTS = {
    "ours-threads": ("polars", "signalfactory.pipeline.validate"),
    "ours-sequential": ("polars", "signalfactory.pipeline.validate"),
    "polars-hand": ("polars",),
    "polars-hand-eager": ("polars",),
    "pandera-polars": ("polars", "pandera.polars"),
    "great-expectations": ("pandas", "great_expectations", "great_expectations.expectations"),
    "ours-seq-proto": ("polars", "signalfactory.pipeline.validate"),
    "ours-seq-proto-decay0": ("polars", "signalfactory.pipeline.validate"),
}


def child_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description="Run one contender once and print JSON.")
    parser.add_argument("--contender", required=True, choices=ALL_CONTENDERS)
    parser.add_argument("--file", required=True, type=Path)
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    args = parser.parse_args(argv)
    runners: dict[str, Callable[[], RunResult]] = {
        "ours-threads": lambda: run_ours(args.file, "threads", args.chunk_size),
        "ours-sequential": lambda: run_ours(args.file, "sequential", args.chunk_size),
        "polars-hand": lambda: run_polars_hand(args.file, lazy=True),
        "polars-hand-eager": lambda: run_polars_hand(args.file, lazy=False),
        "pandera-polars": lambda: run_pandera(args.file),
        "great-expectations": lambda: run_great_expectations(args.file),
        "ours-seq-proto": lambda: run_ours_prototype(args.file, args.chunk_size),
        "ours-seq-proto-decay0": lambda: run_ours_prototype(args.file, args.chunk_size),
    }
    for module in _IMPORTS[args.contender]:
        importlib.import_module(module)
    baseline = _status_mb("VmRSS")
    result = runners[args.contender]()
    print(
        json.dumps(
            {
                "contender": args.contender,
                **asdict(result),
                "baseline_rss_mb": round(baseline, 1),
                "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# Parent side: interleaved runs, medians, correctness, table.
# ---------------------------------------------------------------------------------------------


def run_child(contender: str, path: Path, chunk_size: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_gates",
        "--contender",
        contender,
        "--file",
        str(path),
        "--chunk-size",
        str(chunk_size),
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env={**os.environ, **_CHILD_ENV.get(contender, {})},
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{contender} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n"
            f"{proc.stdout[-2000:]}"
        )
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def expected_counts(manifest: Manifest, contender: str) -> tuple[int, int, dict[str, int]]:
    by_kind = dict(manifest.by_kind)
    if contender in ALL_OCCURRENCES:
        by_kind["duplicate"] += manifest.duplicate_targets
        invalid = manifest.invalid_all_occurrences
    else:
        invalid = manifest.invalid_first_wins
    return manifest.rows - invalid, invalid, {k: v for k, v in by_kind.items() if v}


def check_counts(contender: str, run: dict[str, Any], manifest: Manifest) -> str | None:
    """None when the run found exactly what was injected, else what differs."""
    valid, invalid, by_kind = expected_counts(manifest, contender)
    if (run["valid"], run["invalid"], run["by_kind"]) == (valid, invalid, by_kind):
        return None
    return (
        f"{contender}: valid/invalid {run['valid']:,}/{run['invalid']:,}, expected "
        f"{valid:,}/{invalid:,}; failures per kind {run['by_kind']}, expected {by_kind}"
    )


def _counts_key(run: dict[str, Any]) -> tuple[int, int, str]:
    return run["valid"], run["invalid"], json.dumps(run["by_kind"], sort_keys=True)


def _warm_page_cache(path: Path) -> None:
    with path.open("rb") as handle:
        while handle.read(8 << 20):
            pass


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("polars", "pyarrow", "numpy", "pandas", "pandera", "great_expectations"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _git_state() -> dict[str, Any]:
    """The commit measured and whether ``src/`` had uncommitted changes."""

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "src_dirty": bool(git("status", "--porcelain", "src")),
    }


def _load() -> float:
    return os.getloadavg()[0]


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@dataclass
class Measurements:
    """All runs of one suite; ``scale`` multiplies a contender's times (a GE sample)."""

    runs: dict[str, list[dict[str, Any]]]
    rows: int
    scale: dict[str, float] = field(default_factory=dict)

    def times(self, name: str, metric: str = "seconds") -> list[float]:
        return [r[metric] * self.scale.get(name, 1.0) for r in self.runs[name]]

    def ratio(self, num: str, den: str, metric: str = "seconds") -> float | None:
        """Median over repeats of ``num / den`` within the same repeat (paired)."""
        if not self.runs.get(num) or not self.runs.get(den):
            return None
        pairs = zip(self.times(num, metric), self.times(den, metric), strict=False)
        return _median([a / b for a, b in pairs])

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, results in self.runs.items():
            if not results:
                continue
            wall = self.times(name)
            out[name] = {
                "median_s": _median(wall),
                "min_s": min(wall),
                "max_s": max(wall),
                "median_cpu_s": _median(self.times(name, "cpu_seconds")),
                "rows_per_s": self.rows / _median(wall),
                "vs_hand": self.ratio(name, REFERENCE),
                "cpu_vs_hand": self.ratio(name, REFERENCE, "cpu_seconds"),
                "peak_rss_mb": _median([r["peak_rss_mb"] for r in results]),
                "max_peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                "baseline_rss_mb": _median([r["baseline_rss_mb"] for r in results]),
                "valid": results[0]["valid"],
                "invalid": results[0]["invalid"],
                "by_kind": results[0]["by_kind"],
                "repeats": len(results),
            }
        return out


def evaluate_targets(
    m: Measurements, summary: dict[str, dict[str, Any]], counts_ok: dict[str, bool], cross: int
) -> list[dict[str, Any]]:
    """Each target per engine of ours; judged on wall time, CPU time shown beside it."""
    targets: list[dict[str, Any]] = []

    def add(
        ours: str, label: str, value: float | None, cpu: float | None, ok: bool | None, fmt: str
    ) -> None:
        targets.append(
            {
                "contender": ours,
                "target": label,
                "value": value,
                "cpu_value": cpu,
                "shown": "n/a" if value is None else fmt.format(value),
                "cpu_shown": "" if cpu is None else fmt.format(cpu),
                "met": ok,
            }
        )

    for ours in (o for o in (*OURS, *EXPERIMENTAL) if m.runs.get(o)):
        vs_hand = m.ratio(ours, REFERENCE)
        add(
            ours,
            f"time ≤ {MAX_VS_HAND}× hand-written polars",
            vs_hand,
            m.ratio(ours, REFERENCE, "cpu_seconds"),
            None if vs_hand is None else vs_hand <= MAX_VS_HAND,
            "{:.2f}×",
        )
        pandera = m.ratio("pandera-polars", ours)
        add(
            ours,
            f"≥ {MIN_PANDERA_OVER_OURS}× faster than pandera",
            pandera,
            m.ratio("pandera-polars", ours, "cpu_seconds"),
            None if pandera is None else pandera >= MIN_PANDERA_OVER_OURS,
            "{:.2f}×",
        )
        ge = m.ratio("great-expectations", ours)
        add(
            ours,
            f"≥ {MIN_GE_OVER_OURS:g}× faster than Great Expectations",
            ge,
            m.ratio("great-expectations", ours, "cpu_seconds"),
            None if ge is None else ge >= MIN_GE_OVER_OURS,
            "{:.1f}×",
        )
        peak = summary[ours]["peak_rss_mb"]
        add(
            ours,
            f"peak RSS ≤ {MAX_OURS_PEAK_MB:g} MB (chunk {CHUNK_SIZE:,})",
            peak,
            None,
            peak <= MAX_OURS_PEAK_MB,
            "{:.0f} MB",
        )
        ok = counts_ok.get(ours, False)
        targets.append(
            {
                "contender": ours,
                "target": "uniqueness global across chunks",
                "value": cross,
                "cpu_value": None,
                "shown": (
                    "WRONG COUNTS"
                    if not ok
                    else f"exact, {cross:,} cross-chunk dups"
                    if cross
                    else "not exercised (one chunk)"
                ),
                "cpu_shown": "",
                "met": (ok if cross else None) if ok else False,
            }
        )
    return targets


def _mark(met: bool | None) -> str:
    return "–" if met is None else ("✓" if met else "✗")


def _fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def print_report(
    summary: dict[str, dict[str, Any]],
    targets: list[dict[str, Any]],
    count_notes: dict[str, str | None],
    notes: list[str],
    title: str,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140, highlight=False)
    table = Table(title=title, title_justify="left")
    for col in (
        "contender",
        "median s",
        "rows/s",
        "× hand",
        "CPU s",
        "CPU × hand",
        "peak RSS MB",
        "of it imports",
        "valid",
        "invalid",
        "counts",
    ):
        table.add_column(col, justify="left" if col in ("contender", "counts") else "right")
    for name, row in summary.items():
        table.add_row(
            name,
            f"{row['median_s']:.2f}",
            f"{row['rows_per_s'] / 1e6:.2f} M",
            _fmt_ratio(row["vs_hand"]),
            f"{row['median_cpu_s']:.2f}",
            _fmt_ratio(row["cpu_vs_hand"]),
            f"{row['peak_rss_mb']:.0f}",
            f"{row['baseline_rss_mb']:.0f}",
            f"{row['valid']:,}",
            f"{row['invalid']:,}",
            "✓ exact" if count_notes.get(name) is None else "✗ see below",
        )
    console.print(table)
    if targets:
        tt = Table(title="Targets (judged on wall time; CPU time beside it)", title_justify="left")
        for col in ("engine", "target", "measured", "CPU", ""):
            tt.add_column(col, justify="left" if col in ("engine", "target") else "right")
        for t in targets:
            tt.add_row(t["contender"], t["target"], t["shown"], t["cpu_shown"], _mark(t["met"]))
        console.print(tt)
    for note in [n for n in count_notes.values() if n] + notes:
        console.print(f"• {note}", soft_wrap=True)


def run_suite(
    rows: int,
    repeats: int,
    contenders: Sequence[str],
    *,
    ge_rows: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    results_path: Path | None = None,
) -> int:
    """Run the interleaved benchmark, print the table, write JSON; 1 on a correctness error."""
    path, manifest = ensure_dataset(rows)
    files = dict.fromkeys(contenders, (path, manifest))
    m = Measurements({name: [] for name in contenders}, rows)
    notes: list[str] = []
    if "great-expectations" in contenders and ge_rows and ge_rows < rows:
        files["great-expectations"] = ensure_dataset(ge_rows)
        m.scale["great-expectations"] = rows / ge_rows
        notes.append(
            f"Great Expectations ran on a {ge_rows:,}-row table generated the same way; its "
            f"times are scaled ×{rows / ge_rows:g} (linearly); its peak RSS is NOT scaled."
        )
    for p in {file for file, _ in files.values()}:
        _warm_page_cache(p)
    cores = os.cpu_count() or 1
    loads = [_load()]
    if loads[0] > cores:
        print(
            f"warning: load average {loads[0]:.1f} on {cores} cores; other work on this "
            "machine will inflate and scatter the times (CPU times suffer less).",
            flush=True,
        )
    print(
        f"{rows:,} rows ({manifest.bad_rows:,} bad; {manifest.cross_chunk_duplicates:,} "
        f"duplicates repeat an id from an earlier {CHUNK_SIZE:,}-row chunk); "
        f"{len(contenders)} contenders × {repeats} interleaved repeats, a fresh process each",
        flush=True,
    )
    for rep in range(repeats):
        shift = rep % len(contenders)
        for name in [*contenders[shift:], *contenders[:shift]]:
            file, _ = files[name]
            run = run_child(name, file, chunk_size)
            m.runs[name].append(run)
            print(
                f"  [{rep + 1}/{repeats}] {name:<21} {run['seconds']:8.2f} s "
                f"(cpu {run['cpu_seconds']:6.2f} s)  peak {run['peak_rss_mb']:6.0f} MB  "
                f"valid {run['valid']:,}  invalid {run['invalid']:,}",
                flush=True,
            )
    loads.append(_load())
    count_notes: dict[str, str | None] = {}
    for name in contenders:
        problems = {check_counts(name, r, files[name][1]) for r in m.runs[name]}
        count_notes[name] = "; ".join(sorted(p for p in problems if p)) or None
    reference = {_counts_key(r) for r in m.runs.get(REFERENCE, [])}
    for name in (n for n in (*OURS, *EXPERIMENTAL) if m.runs.get(n) and reference):
        mine = {_counts_key(r) for r in m.runs[name]}
        if mine != reference:
            count_notes[name] = f"{name} disagrees with {REFERENCE}: {mine} vs {reference}"
    counts_ok = {name: note is None for name, note in count_notes.items()}
    summary = m.summary()
    targets = evaluate_targets(m, summary, counts_ok, manifest.cross_chunk_duplicates)
    if "great-expectations" in contenders:
        notes.append(
            "Great Expectations' expect_column_values_to_be_unique flags every occurrence of a "
            f"duplicated id (so also the {manifest.duplicate_targets:,} first occurrences); "
            "its counts are checked against that."
        )
    notes.append(
        f"Reference = {REFERENCE}: scan_parquet + one collect_all of both sides (polars' "
        "default engine); polars-hand-eager = read_parquet + eager filters."
    )
    if max(loads) > cores:
        notes.append(
            f"The machine was busy (1-minute load average {loads[0]:.1f} at the start, "
            f"{loads[1]:.1f} at the end, {cores} cores): wall times are inflated and noisy; "
            "trust the CPU columns and the ratios more than absolute times."
        )
    notes.append(
        "Times exclude interpreter start, imports and setup (policy/schema/suite building). "
        "Ratios are medians of per-repeat (paired) ratios; CPU = user+sys of all threads. "
        "Peak RSS = the child's VmHWM, imports included."
    )
    title = (
        f"Gate evaluation + row split: {rows:,} rows, chunk {chunk_size:,}, "
        f"median of {repeats} interleaved runs, {os.cpu_count()} cores"
    )
    print_report(summary, targets, count_notes, notes, title)
    payload = {
        "benchmark": "gates",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
        "repeats": repeats,
        "chunk_size": chunk_size,
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
        "git": _git_state(),
        "load_average_start_end": loads,
        "dataset": {"path": str(path), **asdict(manifest)},
        "scale": m.scale,
        "summary": summary,
        "targets": targets,
        "count_problems": {k: v for k, v in count_notes.items() if v},
        "notes": notes,
        "runs": m.runs,
    }
    results_path = results_path or BENCH_DIR / "results-gates.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results written to {results_path.relative_to(REPO_ROOT)}")
    # Ours must agree with the hand-written reference and with what was injected.
    fatal = [count_notes[n] for n in ALL_CONTENDERS if n not in _PEERS and count_notes.get(n)]
    if fatal:
        print("CORRECTNESS FAILURE:\n  " + "\n  ".join(map(str, fatal)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    child_main(sys.argv[1:])
