"""Where does ``validate_files``' peak RSS come from? ``python -m benchmarks.memprobe``.

Runs ``validate_files`` on the generated orders table in a fresh process per variant and
reports baseline RSS (after imports), peak RSS (``VmHWM``), RSS after the first and the last
chunk (growth between them means memory follows input size, not chunk size), pyarrow's live
bytes at the end, wall and CPU seconds. A variant changes one thing:

- the input size (2M vs 10M rows), the chunk size (250k/500k/1M) or the engine;
- what runs: reading only, or everything but the unique check;
- ``POLARS_MAX_THREADS``; polars' jemalloc (``_RJEM_MALLOC_CONF``: decay 0, one arena);
- pyarrow's memory pool (``system``, or ``jemalloc`` with ``jemalloc_set_decay_ms(0)``);
- the Parquet reader: ``pq.ParquetFile(..., pre_buffer=False)`` instead of the default
  ``pre_buffer=True``; ``pl.scan_parquet(...).collect_batches()``; or polars reading each
  chunk itself (``pl.scan_parquet(path).slice(offset, n).collect()``);
- the merge of seen keys in ``UniqueTracker`` (one ``np.insert`` instead of concatenate +
  stable sort), and the sequential engine dropping a chunk before it reads the next.

Nothing in ``src/`` is changed: the prototypes monkeypatch this process only
(``patch_reader``, ``patch_unique_merge``, ``patch_release_chunk``; ``bench_gates`` reuses
them for its ``ours-seq-proto*`` contenders). ``--only "as is;chunk 250k"`` picks variants.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import BENCH_DIR, REPO_ROOT
from benchmarks.datagen import ensure_dataset


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(key)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def patch_reader(reader: str) -> None:
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from signalfactory.pipeline import validate
    from signalfactory.production import formats

    if reader == "pyarrow":
        return
    if reader == "pyarrow-nopre":

        def batches(path: Path, chunk_size: int) -> Iterator[pa.RecordBatch]:
            yield from pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=chunk_size)

        formats._parquet_batches = batches  # type: ignore[assignment]
        return
    if reader in ("polars-batches", "polars-slice"):

        def frames(path: Path, chunk_size: int) -> Iterator[pl.DataFrame]:
            scan = pl.scan_parquet(path)
            if reader == "polars-batches":
                yield from scan.collect_batches(chunk_size=chunk_size)
                return
            rows = scan.select(pl.len()).collect().item()
            for offset in range(0, rows, chunk_size):
                yield scan.slice(offset, chunk_size).collect(engine="in-memory")

        def read_chunks(
            files: Sequence[Path], fmt: str | None, chunk_size: int
        ) -> Iterator[formats.Chunk]:
            index = row = 0
            for path in files:
                for frame in frames(path, chunk_size):
                    yield formats.Chunk(
                        index=index,
                        df=frame.with_columns(
                            pl.int_range(row, row + frame.height, dtype=pl.Int64).alias(
                                formats.ROW_COLUMN
                            )
                        ),
                        typed=True,
                    )
                    index += 1
                    row += frame.height

        validate.read_chunks = read_chunks  # type: ignore[assignment]
        return
    raise ValueError(f"unknown reader {reader!r}")


def patch_unique_merge() -> None:
    """Prototype: merge new keys into the seen set with one ``np.insert`` (one N+k array)
    instead of ``np.sort(np.concatenate(...), kind="stable")`` (old, concatenated and sorted
    arrays alive at once). Same flags, same ``_seen`` contents."""
    import numpy as np
    import polars as pl

    from signalfactory.pipeline import uniqueness

    def flags_and_merge(tracker: Any, keys: np.ndarray, present: np.ndarray) -> np.ndarray:
        dup_in_chunk = ~pl.Series(keys).is_first_distinct().to_numpy()
        seen = tracker._seen
        if seen.size:
            pos = np.searchsorted(seen, keys)
            pos[pos == seen.size] = 0
            seen_before = seen[pos] == keys
            del pos
        else:
            seen_before = np.zeros(keys.shape, dtype=bool)
        flags: np.ndarray = (seen_before | dup_in_chunk) & present
        new = np.sort(keys[present])
        tracker._seen = np.insert(seen, np.searchsorted(seen, new), new)
        return flags

    tracker_cls = uniqueness.UniqueTracker
    if hasattr(tracker_cls, "check_keys"):  # keys computed by the worker, merged in order
        tracker_cls.check_keys = flags_and_merge  # type: ignore[attr-defined]
        return

    def check(tracker: Any, series: pl.Series) -> pl.Series:
        present = series.is_not_null().to_numpy()
        if series.dtype.is_integer():
            keys = series.cast(pl.Int64).fill_null(0).reinterpret(signed=False)
        else:
            keys = series.hash(seed=0x5F1A)
        return pl.Series(flags_and_merge(tracker, keys.fill_null(0).to_numpy(), present))

    tracker_cls.check = check  # type: ignore[method-assign]


def patch_release_chunk() -> None:
    """Prototype: the sequential engine drops its reference to a chunk before it reads the
    next one (``for item in items: yield fn(item)`` keeps chunk k alive while chunk k+1 is
    read)."""
    from collections.abc import Callable, Iterable
    from typing import TypeVar

    from signalfactory.production.engines import SequentialEngine

    T = TypeVar("T")
    R = TypeVar("R")

    def map_(self: SequentialEngine, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        iterator = iter(items)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            result = fn(item)
            del item
            yield result

    SequentialEngine.map = map_  # type: ignore[method-assign,assignment]


def child(args: argparse.Namespace) -> None:
    import polars as pl
    import pyarrow as pa

    from benchmarks.bench_gates import ORDERS_POLICY
    from signalfactory.enforcement.policy import PolicyBundle
    from signalfactory.pipeline.validate import validate_files

    if args.arrow_pool == "system":
        pa.set_memory_pool(pa.system_memory_pool())
    elif args.arrow_pool == "jemalloc-decay0":
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    patch_reader(args.reader)
    if args.unique_insert:
        patch_unique_merge()
    if args.release_chunk:
        patch_release_chunk()
    declared = dict(ORDERS_POLICY)
    if args.no_unique:
        declared["dq"] = [c for c in declared["dq"] if c["check"] != "unique"]
    policy = PolicyBundle.model_validate(declared)
    trace: list[float] = []

    def sink(index: int, valid: pl.DataFrame, invalid: pl.DataFrame) -> None:
        trace.append(round(_status_mb("VmRSS"), 1))

    baseline = _status_mb("VmRSS")
    wall, cpu = time.perf_counter(), _cpu()
    if args.reader_only:
        from signalfactory.pipeline import validate

        valid = invalid = 0
        for chunk in validate.read_chunks([args.file], None, args.chunk_size):
            valid += chunk.df.height
            sink(chunk.index, chunk.df, chunk.df)
    else:
        summary = validate_files(
            [args.file], policy, chunk_size=args.chunk_size, engine=args.engine, sink=sink
        )
        valid, invalid = summary.valid_rows, summary.invalid_rows
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    print(
        json.dumps(
            {
                "baseline_mb": round(baseline, 1),
                "peak_mb": round(_status_mb("VmHWM"), 1),
                "first_chunk_mb": trace[0] if trace else None,
                "last_chunk_mb": trace[-1] if trace else None,
                "arrow_live_mb": round(pa.total_allocated_bytes() / 2**20, 1),
                "arrow_pool": pa.default_memory_pool().backend_name,
                "seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
                "valid": valid,
                "invalid": invalid,
                "trace": trace,
            }
        ),
        flush=True,
    )


@dataclass
class Variant:
    name: str
    rows: int = 10_000_000
    chunk_size: int = 1_000_000
    engine: str = "sequential"
    reader: str = "pyarrow"
    arrow_pool: str = "default"
    env: dict[str, str] = field(default_factory=dict)
    no_unique: bool = False
    unique_insert: bool = False
    release_chunk: bool = False
    reader_only: bool = False


_JEMALLOC_DECAY0 = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}
_JEMALLOC_ONE_ARENA = {"_RJEM_MALLOC_CONF": "narenas:1"}


def variants(rows: int, small: int) -> list[Variant]:
    nopre, slice_ = "pyarrow-nopre", "polars-slice"
    at_small = f", {small / 1e6:g}M rows"
    return [
        # Input size and chunk size, as shipped.
        Variant("as is", rows),
        Variant("as is" + at_small, small),
        Variant("chunk 500k", rows, 500_000),
        Variant("chunk 250k", rows, 250_000),
        # Decomposition.
        Variant("reading only (no checks)", rows, reader_only=True),
        Variant("reading only" + at_small, small, reader_only=True),
        Variant("without the unique check", rows, no_unique=True),
        # Engines and threads.
        Variant("threads engine", rows, engine="threads"),
        Variant("threads engine" + at_small, small, engine="threads"),
        Variant("POLARS_MAX_THREADS=1", rows, env={"POLARS_MAX_THREADS": "1"}),
        Variant("sequential engine releases the chunk", rows, release_chunk=True),
        # Allocators.
        Variant("polars jemalloc decay 0", rows, env=_JEMALLOC_DECAY0),
        Variant("polars jemalloc narenas:1", rows, env=_JEMALLOC_ONE_ARENA),
        Variant("arrow pool: system", rows, arrow_pool="system"),
        Variant("arrow pool: jemalloc, decay 0", rows, arrow_pool="jemalloc-decay0"),
        # Readers.
        Variant("reader: ParquetFile(pre_buffer=False)", rows, reader=nopre),
        Variant("pre_buffer=False" + at_small, small, reader=nopre),
        Variant("reader: pl.scan_parquet.collect_batches", rows, reader="polars-batches"),
        Variant("reader: pl.scan_parquet.slice per chunk", rows, reader=slice_),
        Variant("reading only, polars slice", rows, reader=slice_, reader_only=True),
        # The seen-key merge of global uniqueness.
        Variant("unique: np.insert merge", rows, unique_insert=True),
        # Combinations.
        Variant("polars slice + np.insert", rows, reader=slice_, unique_insert=True),
        Variant("polars slice + np.insert" + at_small, small, reader=slice_, unique_insert=True),
        Variant(
            "polars slice + np.insert, chunk 500k",
            rows,
            500_000,
            reader=slice_,
            unique_insert=True,
        ),
        Variant(
            "polars slice + np.insert, threads",
            rows,
            engine="threads",
            reader=slice_,
            unique_insert=True,
        ),
        Variant(
            "polars slice + np.insert + decay 0",
            rows,
            reader=slice_,
            unique_insert=True,
            env=_JEMALLOC_DECAY0,
        ),
        Variant(
            "polars slice + np.insert + decay 0" + at_small,
            small,
            reader=slice_,
            unique_insert=True,
            env=_JEMALLOC_DECAY0,
        ),
    ]


def run_variant(v: Variant, path: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.memprobe",
        "--child",
        "--file",
        str(path),
        "--chunk-size",
        str(v.chunk_size),
        "--engine",
        v.engine,
        "--reader",
        v.reader,
        "--arrow-pool",
        v.arrow_pool,
        *(["--no-unique"] if v.no_unique else []),
        *(["--reader-only"] if v.reader_only else []),
        *(["--unique-insert"] if v.unique_insert else []),
        *(["--release-chunk"] if v.release_chunk else []),
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env={**os.environ, **v.env},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{v.name} failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path)
    parser.add_argument("--chunk-size", type=int, default=1_000_000)
    parser.add_argument("--engine", default="sequential")
    parser.add_argument("--reader", default="pyarrow")
    parser.add_argument("--arrow-pool", default="default")
    parser.add_argument("--no-unique", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reader-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--unique-insert", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--release-chunk", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--small-rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None, help="variant names separated by ;")
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    chosen = variants(args.rows, args.small_rows)
    if args.only:
        wanted = {w.strip() for w in args.only.split(";")}
        chosen = [v for v in chosen if v.name in wanted]
    paths = {rows: ensure_dataset(rows)[0] for rows in {v.rows for v in chosen}}
    results: dict[str, list[dict[str, Any]]] = {v.name: [] for v in chosen}
    for rep in range(args.repeats):
        for v in chosen:
            run = run_variant(v, paths[v.rows])
            results[v.name].append(run)
            print(
                f"[{rep + 1}/{args.repeats}] {v.name:<52} peak {run['peak_mb']:6.0f} MB  "
                f"{run['seconds']:5.2f} s (cpu {run['cpu_seconds']:5.2f})",
                file=sys.stderr,
                flush=True,
            )
    header = (
        f"{'variant':<52} {'rows':>6} {'chunk':>6} {'base':>5} {'peak':>5} {'peak-base':>9} "
        f"{'1st':>5} {'last':>5} {'arrow':>5} {'wall s':>6} {'cpu s':>6}"
    )
    print(header)
    print("-" * len(header))

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    for v in chosen:
        runs = results[v.name]
        print(
            f"{v.name:<52} {v.rows / 1e6:5.0f}M {v.chunk_size / 1e3:5.0f}k "
            f"{med(runs, 'baseline_mb'):5.0f} {med(runs, 'peak_mb'):5.0f} "
            f"{med(runs, 'peak_mb') - med(runs, 'baseline_mb'):9.0f} "
            f"{med(runs, 'first_chunk_mb'):5.0f} {med(runs, 'last_chunk_mb'):5.0f} "
            f"{med(runs, 'arrow_live_mb'):5.0f} {med(runs, 'seconds'):6.2f} "
            f"{med(runs, 'cpu_seconds'):6.2f}"
        )
    print(
        "MB, medians of repeats. base = RSS after imports; 1st/last = RSS when the first/last "
        "chunk reached the sink; arrow = pyarrow bytes still allocated at the end."
    )
    out = BENCH_DIR / "results-memprobe.json"
    out.write_text(
        json.dumps({"variants": [v.__dict__ for v in chosen], "results": results}, indent=2)
    )
    print(f"results written to {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
