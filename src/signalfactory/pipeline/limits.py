"""Per-run limits (B10): refuse impossible configurations up front, enforce them while running.

Memory is estimated before any work starts from the input's bytes per row, the chunk size and
the chunks in flight (2 per worker); a configuration that cannot fit is refused with a chunk
size that would. While running, the run's resident memory (its process and worker processes)
and wall-clock time are checked after every chunk.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from signalfactory.core.errors import ConfigError, LimitExceeded
from signalfactory.production.formats import MIN_CHUNK
from signalfactory.production.spec import PipelineSpec

#: In-memory bytes per on-disk byte, per format (decompression, Arrow buffers, copies).
_EXPANSION = {"parquet": 6.0, "csv": 3.0, "json": 2.5}
_OVERHEAD_MB = 250.0  # the interpreter, polars, pyarrow and deltalake themselves


def bytes_per_row(files: Sequence[Path], fmt: str | None) -> float:
    """A cheap estimate of in-memory bytes per row of the input."""
    path = files[0]
    kind = (fmt or path.suffix.lstrip(".")).lower()
    if kind in ("parquet", "pq"):
        meta = pq.ParquetFile(path).metadata
        rows = max(meta.num_rows, 1)
        raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        return float(max(raw / rows, 1.0) * 1.5)
    with path.open("rb") as handle:
        sample = handle.read(1 << 20)
    lines = max(sample.count(b"\n"), 1)
    return max(len(sample) / lines, 1.0) * _EXPANSION.get(kind, 3.0)


def estimated_peak_mb(spec: PipelineSpec, files: Sequence[Path], workers: int) -> float:
    per_row = bytes_per_row(files, spec.source.format)
    in_flight = 2 * workers + 1
    return _OVERHEAD_MB + spec.chunk_size * per_row * in_flight * 2 / 1e6


def check_before_start(spec: PipelineSpec, files: Sequence[Path], workers: int) -> None:
    """Refuse a run whose chunks cannot fit its memory limit, suggesting a chunk size."""
    limit = spec.limits.memory_mb
    if limit is None or not files:
        return
    peak = estimated_peak_mb(spec, files, workers)
    if peak <= limit:
        return
    per_chunk_mb = (peak - _OVERHEAD_MB) / spec.chunk_size
    room = limit - _OVERHEAD_MB
    fitting = int(room / per_chunk_mb) if per_chunk_mb > 0 and room > 0 else 0
    hint = (
        f"set chunk_size to {max(fitting // 1000 * 1000, MIN_CHUNK):,} or less"
        if fitting >= MIN_CHUNK
        else f"raise limits.memory_mb to at least {int(_OVERHEAD_MB + per_chunk_mb * MIN_CHUNK)}"
    )
    raise ConfigError(
        f"pipeline {spec.pipeline}: chunk_size {spec.chunk_size:,} with {workers} worker(s) "
        f"needs about {peak:,.0f} MB, over limits.memory_mb {limit:,} MB; {hint}, or use "
        "fewer workers (max_workers)."
    )


def rss_mb() -> float:
    """Resident memory of this process and its children (worker processes), in MB."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return float(total) / 1e6


class Watchdog:
    """Checked after every chunk: raises LimitExceeded past the time or memory limit."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.time_limit = spec.limits.time_limit_s
        self.memory_mb = spec.limits.memory_mb
        self.started = time.monotonic()
        self.peak_mb = 0.0

    def check(self) -> None:
        current = rss_mb()
        self.peak_mb = max(self.peak_mb, current)
        if self.time_limit is not None and time.monotonic() - self.started > self.time_limit:
            raise LimitExceeded(
                f"the run went over its time limit of {self.time_limit:g} s; its checkpoints "
                "are kept: re-run the same command (or `signalfactory resume RUN_ID`) to go on.",
                "time",
            )
        if self.memory_mb is not None and current > self.memory_mb:
            raise LimitExceeded(
                f"the run used {current:,.0f} MB, over limits.memory_mb {self.memory_mb:,} MB; "
                "lower chunk_size or max_workers, then resume it.",
                "memory",
            )
