"""Live progress of a run (B9): chunks, rows, %, rows/s, ETA, RSS and CPU.

The runner calls ``start`` once, ``chunk_done`` after every checkpointed chunk, ``phase`` when
the run moves on (``"publishing"`` once every chunk is read) and ``finish`` at the end. Each
call builds a :class:`RunProgress`, hands it to the optional listener (the CLI's Rich
progress bar; it gets every update) and persists it with ``store.put_progress`` at most every
``every_s`` seconds (0.5 s), always on a phase change and at the end.

While chunks are processed a daemon *refresher* thread re-samples the figures every
``every_s / 2`` seconds and persists them when due, so the stored row is never more than about
``1.5 * every_s`` (0.75 s) behind, even while one large chunk keeps the runner busy: what
``signalfactory status RUN_ID`` prints from another terminal is under a second old. The
thread stops on ``close()``, on any phase other than ``"processing"``, and when the tracker is
garbage-collected (it only holds a weak reference), so a run that raises cannot leak it. The
listener may therefore be called from that thread too; calls never overlap (one lock).

Totals, how exact they are:

* ``rows_total`` is exact where the file metadata says it cheaply: Parquet (footer
  ``num_rows``), Feather v2 / Arrow IPC *files* (record batch lengths from the footer) and
  HDF5 (the table's ``nrows``). Otherwise (CSV, JSON, Arrow IPC streams, Feather v1, pickle)
  it is ``None`` until the input has been read; then it is the number of rows read.
* ``chunks_total`` is ``ceil(rows_total / chunk_size)`` when ``rows_total`` is exact, else
  ``None`` until the input has been read.
* ``bytes_total`` is the sum of the input files' sizes. ``bytes_done`` is not measured (the
  readers do not report offsets): with an exact ``rows_total`` it is
  ``bytes_total * rows_done / rows_total``; for line-based text (CSV, NDJSON) it is *estimated*
  from the average line length of the first ``_SAMPLE_BYTES`` of the first file
  (``rows_done * bytes_per_row``, capped at 99 % until the input has been read); where no
  estimate is possible (a JSON array, an IPC stream, pickle) ``bytes_total`` is reported as
  ``None`` until the end, so ``RunProgress.percent`` is ``None`` (unknown) rather than a
  misleading 0 %. Once the input has been read every total is exact and ``percent`` is 100.

Rates: ``rows_per_s`` is the rate of this process since ``start`` (a resumed run does not
count the rows of checkpoints from before), ``eta_s`` the remaining rows (exact or estimated)
over that rate, ``None`` when unknown. ``rss_mb`` and ``cpu_pct`` cover this process and all its
children (the processes / Dask local engines run chunks in children), sampled at most every
``sample_every_s``; ``cpu_pct`` is in percent of one CPU, like ``top`` (400 = four busy cores).
Workers of a remote cluster (a Dask scheduler address, Ray) are not children and not counted.
No NaN or infinity is ever stored or handed to the listener.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import structlog

from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import RunProgress, utcnow

Listener = Callable[[RunProgress], None]
Clock = Callable[[], float]
#: ``() -> (rss_mb, cpu_pct)``; the default is a :class:`ResourceSampler`.
Sampler = Callable[[], tuple[float, float]]

PROCESSING, PUBLISHING, DONE = "processing", "publishing", "done"
#: Phases reached only after every input row was read: every total is then exact.
INPUT_READ_PHASES = frozenset({PUBLISHING, DONE})
EVERY_S = 0.5
SAMPLE_EVERY_S = 0.5
_SAMPLE_BYTES = 1 << 20
_ESTIMATE_CAP = 0.99
_MB = 1024.0 * 1024.0

log = structlog.get_logger("signalfactory.progress")


# -- totals --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputTotals:
    """What is known about the input before it is read.

    ``rows`` is exact (from metadata) or ``None``; ``rows_estimate`` equals ``rows`` when that
    is known, else an estimate from sampled line lengths, else ``None``; ``bytes`` is the sum
    of the file sizes (``None`` when a file cannot be stat'ed).
    """

    rows: int | None
    rows_estimate: float | None
    bytes: int | None


def _kind(path: Path, fmt: str | None) -> str | None:
    from signalfactory.production.formats import detect_format

    try:
        return detect_format(path, fmt)
    except Exception:  # an unknown format is reported by the reader, not here
        return None


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _ipc_rows(path: Path) -> int | None:
    import pyarrow as pa

    with path.open("rb") as handle:
        if handle.read(6) != b"ARROW1":
            return None  # an IPC stream or Feather v1: no footer to count from
    with pa.memory_map(str(path), "r") as source:
        reader = pa.ipc.open_file(source)
        count_rows = getattr(reader, "count_rows", None)
        if count_rows is not None:
            return int(count_rows())
        return int(sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches)))


def _hdf5_rows(path: Path, key: str | None) -> int:
    from signalfactory.production import hdf5

    tables = hdf5.import_tables()
    with hdf5.restricted_attribute_unpickling(), tables.open_file(str(path), mode="r") as handle:
        return int(hdf5._pick_table(handle, path, key).nrows)


def file_rows(path: Path, kind: str | None, key: str | None = None) -> int | None:
    """The exact row count of one input file from its metadata, or ``None`` if not cheap."""
    try:
        if kind == "parquet":
            return _parquet_rows(path)
        if kind == "feather":
            return _ipc_rows(path)
        if kind == "hdf5":
            return _hdf5_rows(path, key)
    except Exception:  # progress must never fail a run; the reader reports a bad file
        return None
    return None


@dataclass(frozen=True, slots=True)
class LineSample:
    """Average bytes per row of a line-based file, and the bytes of its header line (CSV)."""

    bytes_per_row: float
    header_bytes: int


def sample_lines(path: Path, kind: str | None) -> LineSample | None:
    """Line lengths of a CSV or NDJSON file from its first ``_SAMPLE_BYTES`` (else ``None``).

    A row is taken to be one line (a quoted CSV value spanning lines makes it an estimate).
    """
    if kind not in ("csv", "json"):
        return None
    try:
        with path.open("rb") as handle:
            sample = handle.read(_SAMPLE_BYTES)
    except OSError:
        return None
    if kind == "json" and sample.lstrip().startswith(b"["):
        return None  # a JSON array has no lines to count
    lines = sample.count(b"\n")
    if len(sample) < _SAMPLE_BYTES and sample and not sample.endswith(b"\n"):
        lines += 1  # the whole file was sampled; its last line has no newline
    header = sample.find(b"\n") + 1 if kind == "csv" else 0
    if kind == "csv":
        lines -= 1
    if lines <= 0 or len(sample) <= header:
        return None
    return LineSample((len(sample) - header) / lines, header)


def input_totals(files: Sequence[Path], fmt: str | None, key: str | None = None) -> InputTotals:
    """Cheap totals of ``files``: exact rows from metadata, else a sampled estimate.

    Files without a row count in their metadata are estimated from the line length of the
    first of them; when that is not a line-based file (CSV, NDJSON) nothing is estimated.
    """
    sizes: list[int] = []
    for path in files:
        try:
            sizes.append(path.stat().st_size)
        except OSError:
            return InputTotals(None, None, None)
    kinds = [_kind(path, fmt) for path in files]
    counts = [file_rows(path, kind, key) for path, kind in zip(files, kinds, strict=True)]
    total_bytes = sum(sizes)
    if all(c is not None for c in counts):
        rows = sum(c for c in counts if c is not None)
        return InputTotals(rows, float(rows), total_bytes)
    uncounted = [(p, k) for p, k, c in zip(files, kinds, counts, strict=True) if c is None]
    if any(k not in ("csv", "json") for _, k in uncounted):
        return InputTotals(None, None, total_bytes)
    sample = sample_lines(*uncounted[0])
    if sample is None:
        return InputTotals(None, None, total_bytes)
    estimate = sum(
        float(c) if c is not None else max(size - sample.header_bytes, 0) / sample.bytes_per_row
        for c, size in zip(counts, sizes, strict=True)
    )
    return InputTotals(None, estimate, total_bytes)


# -- resources -----------------------------------------------------------------------------


class ResourceSampler:
    """RSS (MB) and CPU (% of one core) of a process and all its children, throttled.

    ``psutil.Process.cpu_percent`` compares with the previous call on the *same* object, so
    one object per process is kept across samples (a new child reads 0 % on its first
    sample). Between samples (``every_s``) the previous figures are returned.
    """

    def __init__(
        self,
        process: psutil.Process | None = None,
        *,
        every_s: float = SAMPLE_EVERY_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.root = process or psutil.Process()
        self.every_s, self.clock = every_s, clock
        self._known: dict[int, psutil.Process] = {self.root.pid: self.root}
        self._at: float | None = None
        self._last = (0.0, 0.0)
        self.pids: frozenset[int] = frozenset()
        self.root.cpu_percent(None)  # the first call only sets the baseline

    def _tree(self) -> list[psutil.Process]:
        try:
            children = self.root.children(recursive=True)
        except psutil.Error:
            children = []
        current = {self.root.pid: self.root}
        for child in children:
            current[child.pid] = self._known.get(child.pid, child)
        self._known = current
        return list(current.values())

    def sample(self) -> tuple[float, float]:
        now = self.clock()
        if self._at is not None and now - self._at < self.every_s:
            return self._last
        self._at = now
        rss, cpu, pids = 0, 0.0, set()
        for proc in self._tree():
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    cpu += proc.cpu_percent(None)
                pids.add(proc.pid)
            except psutil.Error:  # gone or not ours to read: it no longer counts
                continue
        self.pids = frozenset(pids)
        self._last = (_finite(rss / _MB), _finite(cpu))
        return self._last

    __call__ = sample


def _finite(value: float, default: float = 0.0) -> float:
    return float(value) if math.isfinite(value) and value >= 0 else default


# -- the tracker ---------------------------------------------------------------------------


class ProgressTracker:
    """Figures of one run's stream of chunks, persisted (throttled) and handed to a listener.

    ``clock`` (monotonic seconds) and ``sampler`` are injectable for tests; ``background``
    starts the refresher thread on ``start`` (tests pass ``False`` and call ``refresh``).
    ``key`` is the ``source.key`` of an HDF5 source with several tables.
    """

    def __init__(
        self,
        store: MetadataStore,
        run_id: str,
        files: Sequence[Path],
        fmt: str | None,
        chunk_size: int,
        *,
        listener: Listener | None = None,
        every_s: float = EVERY_S,
        clock: Clock = time.monotonic,
        sampler: Sampler | None = None,
        background: bool = True,
        key: str | None = None,
    ) -> None:
        self.store, self.run_id, self.listener = store, run_id, listener
        self.files, self.fmt, self.chunk_size = list(files), fmt, max(1, chunk_size)
        self.every_s, self.clock, self.background = every_s, clock, background
        self.sampler: Sampler = sampler or ResourceSampler(clock=clock)
        self.totals = input_totals(self.files, fmt, key)
        self.chunks_done = 0
        self.rows_done = 0
        self.current_phase = PROCESSING
        self.last: RunProgress | None = None
        self.persisted = 0  # how many times the figures were written to the store
        self._rows_at_start = 0
        self._started: float | None = None
        self._last_persist: float | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the runner's calls --------------------------------------------------------------
    def start(self, chunks_done: int, rows_done: int) -> RunProgress:
        """Begin (or resume, with the checkpoints' chunks and rows already done)."""
        with self._lock:
            self.chunks_done, self.rows_done = chunks_done, rows_done
            self._rows_at_start = rows_done
            self._started = self.clock()
            progress = self._publish(PROCESSING, force=True)
        if self.background and self._thread is None:
            self._thread = threading.Thread(
                target=_refresh_loop,
                args=(weakref.ref(self), self._stop, self.every_s / 2),
                name=f"sf-progress-{self.run_id}",
                daemon=True,
            )
            self._thread.start()
        return progress

    def chunk_done(self, rows: int) -> RunProgress:
        with self._lock:
            self.chunks_done += 1
            self.rows_done += rows
            return self._publish(self.current_phase)

    def phase(self, name: str) -> RunProgress:
        """Move to phase ``name``: always persisted; stops the refresher unless processing."""
        if name != PROCESSING:
            self._stop.set()
        with self._lock:
            return self._publish(name, force=True)

    def finish(self) -> RunProgress:
        return self.phase(DONE)

    def refresh(self) -> bool:
        """Re-sample and persist if due (the refresher's tick); False once past processing."""
        with self._lock:
            if self._started is None:
                return True
            if self.current_phase != PROCESSING:
                return False
            self._publish(PROCESSING)
            return True

    def close(self) -> None:
        """Stop the refresher thread (idempotent); the figures stay stored."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(1.0, 2 * self.every_s))

    def __enter__(self) -> ProgressTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- figures -------------------------------------------------------------------------
    def snapshot(self, phase: str | None = None) -> RunProgress:
        """The figures now, without persisting or notifying."""
        with self._lock:
            return self._snapshot(phase or self.current_phase, self.clock())

    def _snapshot(self, phase: str, now: float) -> RunProgress:
        totals, rows_done = self.totals, self.rows_done
        elapsed = now - self._started if self._started is not None else 0.0
        session_rows = max(rows_done - self._rows_at_start, 0)
        rate = _finite(session_rows / elapsed) if elapsed > 0 else 0.0
        rss_mb, cpu_pct = self.sampler()
        rows_total: int | None
        chunks_total: int | None
        bytes_total: int | None
        bytes_done: int | None
        remaining: float | None
        if phase in INPUT_READ_PHASES:  # every row has been read: the totals are what was read
            rows_total, chunks_total = rows_done, self.chunks_done
            bytes_total = totals.bytes
            bytes_done, remaining = bytes_total or 0, 0.0
        else:
            rows_total, bytes_total = totals.rows, totals.bytes
            chunks_total = (
                math.ceil(rows_total / self.chunk_size) if rows_total is not None else None
            )
            bytes_done, remaining = self._bytes_done(rows_done)
            if bytes_done is None:  # no estimate: an unknown percentage rather than 0 %
                bytes_total, bytes_done = None, 0
        eta = remaining / rate if remaining is not None and rate > 0 else None
        if remaining == 0:
            eta = 0.0
        return RunProgress(
            run_id=self.run_id,
            chunks_done=self.chunks_done,
            chunks_total=chunks_total,
            rows_done=rows_done,
            rows_total=rows_total,
            bytes_done=bytes_done or 0,
            bytes_total=bytes_total,
            rows_per_s=rate,
            eta_s=eta if eta is not None and math.isfinite(eta) else None,
            rss_mb=_finite(rss_mb),
            cpu_pct=_finite(cpu_pct),
            phase=phase,
        )

    def _bytes_done(self, rows_done: int) -> tuple[int | None, float | None]:
        """(bytes done, rows remaining) while processing; ``None`` where unknown."""
        totals = self.totals
        if totals.bytes is None or totals.rows_estimate is None:
            return None, None
        if totals.rows is not None:  # exact
            if totals.rows == 0:
                return 0, 0.0
            fraction = min(rows_done / totals.rows, 1.0)
            return round(totals.bytes * fraction), float(max(totals.rows - rows_done, 0))
        # estimated: never 100 % before the input has actually been read
        fraction = min(rows_done / totals.rows_estimate, _ESTIMATE_CAP)
        remaining = totals.rows_estimate - rows_done
        return math.floor(totals.bytes * fraction), remaining if remaining > 0 else None

    def _publish(self, phase: str, *, force: bool = False) -> RunProgress:
        with self._lock:
            self.current_phase = phase
            now = self.clock()
            progress = self._snapshot(phase, now)
            due = self._last_persist is None or now - self._last_persist >= self.every_s
            if force or due:
                self.store.put_progress(progress)
                self._last_persist = now
                self.persisted += 1
            self.last = progress
            if self.listener is not None:
                self.listener(progress)
            return progress


def _refresh_loop(
    ref: weakref.ReferenceType[ProgressTracker], stop: threading.Event, period: float
) -> None:
    while not stop.wait(period):
        tracker = ref()
        if tracker is None:  # the run let go of it (finished or raised)
            return
        try:
            if not tracker.refresh():
                return
        except Exception as exc:  # a missed refresh is retried on the next tick
            log.warning("progress_refresh_missed", run_id=tracker.run_id, error=type(exc).__name__)
        finally:
            del tracker


def finish_progress(
    store: MetadataStore, run_id: str, phase: str = DONE, *, listener: Listener | None = None
) -> RunProgress | None:
    """Mark the stored progress of ``run_id`` as ended (``phase``), e.g. after publishing.

    For callers that no longer hold the tracker; ``listener`` gets the ended figures too.
    """
    progress = store.get_progress(run_id)
    if progress is None:
        return None
    ended = dataclasses.replace(progress, phase=phase, eta_s=0.0, updated_at=utcnow())
    store.put_progress(ended)
    if listener is not None:
        listener(ended)
    return ended


__all__ = [
    "DONE",
    "PROCESSING",
    "PUBLISHING",
    "InputTotals",
    "LineSample",
    "Listener",
    "ProgressTracker",
    "ResourceSampler",
    "file_rows",
    "finish_progress",
    "input_totals",
    "sample_lines",
]
