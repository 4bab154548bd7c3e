"""ProgressTracker (B9): totals from real files, percent / ETA math, throttled persistence.

Every test is deterministic: the tracker gets a fake clock and a fixed resource sampler, so
no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import gc
import math
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.feather as pafeather
import pytest

from factories import DAY1, Project, orders, pipeline_doc, write_source
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import RunProgress, RunStatus
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.pipeline.progress import (
    InputTotals,
    ProgressTracker,
    ResourceSampler,
    finish_progress,
    input_totals,
    sample_lines,
)

RUN = "run_progress_test"


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def at(self, now: float) -> FakeClock:
        self.now = now
        return self


@dataclass
class MemoryStore:
    """Records every ``put_progress``; enough of a MetadataStore for the tracker."""

    puts: list[RunProgress] = field(default_factory=list)

    def put_progress(self, progress: RunProgress) -> None:
        self.puts.append(progress)

    def get_progress(self, run_id: str) -> RunProgress | None:
        found = [p for p in self.puts if p.run_id == run_id]
        return found[-1] if found else None


def fixed_sampler(rss_mb: float = 256.0, cpu_pct: float = 150.0) -> Any:
    return lambda: (rss_mb, cpu_pct)


def tracker(
    files: list[Path],
    *,
    store: Any = None,
    clock: FakeClock | None = None,
    fmt: str | None = None,
    chunk_size: int = 1000,
    every_s: float = 0.5,
    sampler: Any = None,
    listener: Any = None,
) -> ProgressTracker:
    return ProgressTracker(
        cast(MetadataStore, store if store is not None else MemoryStore()),
        RUN,
        files,
        fmt,
        chunk_size,
        listener=listener,
        every_s=every_s,
        clock=clock or FakeClock(),
        sampler=sampler or fixed_sampler(),
        background=False,
    )


@pytest.fixture
def parquet_4000(tmp_path: Path) -> Path:
    return write_source(tmp_path / "pq", orders(4000, seed=1), "parquet")


# -- totals from real files --------------------------------------------------------------


def test_parquet_rows_are_exact_from_the_footer(tmp_path: Path) -> None:
    a = write_source(tmp_path / "a", orders(2500, seed=1), "parquet")
    b = write_source(tmp_path / "b", orders(1200, seed=2, first_id=5000), "parquet")
    totals = input_totals([a, b], None)
    assert totals == InputTotals(3700, 3700.0, a.stat().st_size + b.stat().st_size)

    t = tracker([a, b], chunk_size=1000)
    first = t.start(0, 0)
    assert (first.rows_total, first.chunks_total, first.bytes_total) == (3700, 4, totals.bytes)
    assert first.percent == 0.0


def test_feather_ipc_file_rows_come_from_its_record_batches(tmp_path: Path) -> None:
    path = tmp_path / "orders.feather"
    pafeather.write_feather(orders(2345, seed=3).to_arrow(), path, chunksize=500)
    assert input_totals([path], None).rows == 2345
    stream = tmp_path / "orders.arrows"
    table = orders(10, seed=3).to_arrow()
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    # An IPC stream has no footer: its rows are unknown, and so is the percentage.
    assert input_totals([stream], "feather") == InputTotals(None, None, stream.stat().st_size)


def test_hdf5_rows_are_the_table_nrows(tmp_path: Path) -> None:
    pytest.importorskip("tables")
    pd = pytest.importorskip("pandas")
    path = tmp_path / "orders.h5"
    frame = pd.DataFrame({"order_id": range(1234), "total": [1.5] * 1234})
    frame.to_hdf(path, key="orders", format="table")
    assert input_totals([path], None).rows == 1234
    assert tracker([path], chunk_size=500).start(0, 0).chunks_total == 3


def test_csv_rows_are_estimated_from_line_lengths_and_exact_once_read(tmp_path: Path) -> None:
    path = write_source(tmp_path / "csv", orders(2500, seed=4), "csv")
    sample = sample_lines(path, "csv")
    assert sample is not None
    assert sample.header_bytes == len(path.read_bytes().split(b"\n", 1)[0]) + 1
    totals = input_totals([path], None)
    assert totals.rows is None  # not exact: a CSV has no row count
    assert totals.rows_estimate == pytest.approx(2500)  # the whole file fits in the sample
    assert totals.bytes == path.stat().st_size

    t = tracker([path])
    assert t.start(0, 0).chunks_total is None
    clock = cast(FakeClock, t.clock)
    half = t.chunk_done(1000)
    assert half.rows_total is None
    assert half.chunks_total is None
    assert half.percent == pytest.approx(40.0, abs=0.5)
    clock.at(101.0)
    t.chunk_done(1000)
    last = t.chunk_done(500)
    assert last.percent is not None
    assert last.percent <= 99.0
    published = t.phase("publishing")
    assert (published.rows_total, published.chunks_total, published.percent) == (2500, 3, 100.0)
    assert published.bytes_done == published.bytes_total == path.stat().st_size


def test_a_json_array_has_no_estimate_so_its_percentage_is_unknown(tmp_path: Path) -> None:
    path = write_source(tmp_path / "json", orders(50, seed=5), "json")
    assert input_totals([path], None) == InputTotals(None, None, path.stat().st_size)
    t = tracker([path])
    t.start(0, 0)
    running = t.chunk_done(50)
    assert running.bytes_total is None
    assert running.percent is None
    assert running.eta_s is None
    assert t.phase("publishing").percent == 100.0


def test_ndjson_is_line_based_and_missing_files_give_no_totals(tmp_path: Path) -> None:
    path = write_source(tmp_path / "nd", orders(300, seed=6), "ndjson")
    assert input_totals([path], None).rows_estimate == pytest.approx(300)
    assert input_totals([tmp_path / "gone.csv"], None) == InputTotals(None, None, None)


# -- percent and ETA ---------------------------------------------------------------------


def test_percent_rate_and_eta_follow_the_rows(parquet_4000: Path) -> None:
    clock = FakeClock(10.0)
    t = tracker([parquet_4000], clock=clock)
    started = t.start(0, 0)
    assert (started.rows_per_s, started.eta_s, started.percent) == (0.0, None, 0.0)
    clock.at(12.0)
    one = t.chunk_done(1000)
    assert one.percent == 25.0
    assert one.rows_per_s == 500.0
    assert one.eta_s == 6.0  # 3000 rows left at 500 rows/s
    clock.at(14.0)
    two = t.chunk_done(1000)
    assert (two.percent, two.rows_per_s, two.eta_s, two.chunks_done) == (50.0, 500.0, 4.0, 2)
    assert (two.rss_mb, two.cpu_pct) == (256.0, 150.0)
    clock.at(18.0)
    t.chunk_done(1000)
    four = t.chunk_done(1000)
    assert (four.percent, four.eta_s, four.chunks_done, four.chunks_total) == (100.0, 0.0, 4, 4)


def test_a_resumed_run_counts_only_its_own_rows_in_the_rate(parquet_4000: Path) -> None:
    clock = FakeClock(0.0)
    t = tracker([parquet_4000], clock=clock)
    resumed = t.start(2, 2000)  # two chunks checkpointed before the crash
    assert (resumed.chunks_done, resumed.rows_done, resumed.percent) == (2, 2000, 50.0)
    clock.at(1.0)
    after = t.chunk_done(1000)
    assert (after.chunks_done, after.rows_done, after.percent) == (3, 3000, 75.0)
    assert after.rows_per_s == 1000.0
    assert after.eta_s == 1.0


def test_no_nan_or_infinity_ever_leaves_the_tracker(parquet_4000: Path) -> None:
    clock = FakeClock(5.0)
    t = tracker([parquet_4000], clock=clock, sampler=fixed_sampler(math.nan, math.inf))
    for progress in (t.start(0, 0), t.chunk_done(1000), t.phase("publishing")):
        numbers = [progress.rows_per_s, progress.rss_mb, progress.cpu_pct, progress.eta_s]
        assert all(v is None or math.isfinite(v) for v in numbers), progress
        assert (progress.rss_mb, progress.cpu_pct) == (0.0, 0.0)


# -- throttled persistence ---------------------------------------------------------------


def test_persisted_at_most_once_per_interval_but_always_on_phase_and_finish(
    parquet_4000: Path,
) -> None:
    store, clock = MemoryStore(), FakeClock(0.0)
    seen: list[RunProgress] = []
    t = tracker([parquet_4000], store=store, clock=clock, listener=seen.append)
    t.start(0, 0)  # persisted: the first figures
    for now in (0.1, 0.2, 0.3, 0.4):
        t.chunk_done(100)
        clock.at(now)
    assert [p.rows_done for p in store.puts] == [0]
    clock.at(0.5)
    t.chunk_done(100)  # 0.5 s since the last write
    clock.at(0.6)
    t.chunk_done(100)
    assert [p.rows_done for p in store.puts] == [0, 500]
    t.phase("publishing")  # 0.1 s later, but a phase change is always written
    t.finish()  # and so is the end, at the same instant
    assert [p.phase for p in store.puts] == ["processing", "processing", "publishing", "done"]
    assert store.puts[-1].rows_done == 600
    assert store.puts[-1].percent == 100.0
    assert len(seen) == 9  # the listener got every update
    assert [p.rows_done for p in seen] == sorted(p.rows_done for p in seen)
    assert t.persisted == len(store.puts)


def test_refresh_writes_the_latest_figures_once_due(parquet_4000: Path) -> None:
    store, clock = MemoryStore(), FakeClock(0.0)
    t = tracker([parquet_4000], store=store, clock=clock)
    assert t.refresh() is True  # before start: nothing to write yet
    assert store.puts == []
    t.start(0, 0)
    clock.at(0.2)
    t.chunk_done(1000)  # throttled
    clock.at(0.4)
    assert t.refresh() is True
    assert len(store.puts) == 1  # still inside the interval
    clock.at(0.7)
    assert t.refresh() is True
    assert store.puts[-1].rows_done == 1000  # the chunk that was throttled is now stored
    t.phase("publishing")
    assert t.refresh() is False  # past processing: the refresher stops
    assert store.puts[-1].phase == "publishing"


def test_figures_round_trip_through_the_real_store(tmp_path: Path, parquet_4000: Path) -> None:
    store: SqlStore = open_store(f"sqlite:///{tmp_path / 'sf.db'}")
    try:
        clock = FakeClock(0.0)
        t = tracker([parquet_4000], store=store, clock=clock)
        t.start(0, 0)
        clock.at(3.0)
        t.chunk_done(1000)
        stored = store.get_progress(RUN)
        assert stored is not None
        assert t.last is not None
        assert stored.to_dict() | {"updated_at": None} == t.last.to_dict() | {"updated_at": None}
        assert stored.eta_s == pytest.approx(9.0)
        assert stored.percent == 25.0

        # NaN is never stored: the tracker cleans it, and so does the store.
        store.put_progress(
            RunProgress(RUN, 1, None, 5, None, 0, None, math.nan, math.inf, math.nan, 1.0, "x")
        )
        cleaned = store.get_progress(RUN)
        assert cleaned is not None
        assert (cleaned.rows_per_s, cleaned.eta_s, cleaned.rss_mb) == (0.0, None, 0.0)

        t.phase("publishing")
        told: list[RunProgress] = []
        ended = finish_progress(store, RUN, listener=told.append)
        assert told == [ended]
        again = store.get_progress(RUN)
        assert ended is not None
        assert again is not None
        assert (again.phase, again.percent, again.rows_done) == ("done", 100.0, 1000)
        assert finish_progress(store, "run_unknown") is None
    finally:
        store.close()


# -- resources ---------------------------------------------------------------------------


def test_resource_sampler_counts_children_and_samples_at_most_every_interval() -> None:
    clock = FakeClock(0.0)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sampler = ResourceSampler(clock=clock, every_s=0.5)
        first = sampler.sample()
        assert child.pid in sampler.pids  # the engines' worker processes count too
        assert first[0] > 0
        assert first[1] >= 0
        seen = sampler.pids
        child.kill()
        child.wait()
        clock.at(0.4)
        assert sampler.sample() is first  # inside the interval: no new sample
        assert sampler.pids == seen
        clock.at(0.5)
        sampler.sample()
        assert child.pid not in sampler.pids
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# -- the refresher thread ----------------------------------------------------------------


def _wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def _refreshers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"sf-progress-{RUN}"]


def test_the_refresher_keeps_the_store_fresh_and_stops_with_the_phase(parquet_4000: Path) -> None:
    store = MemoryStore()
    t = ProgressTracker(
        cast(MetadataStore, store),
        RUN,
        [parquet_4000],
        None,
        1000,
        every_s=0.02,
        sampler=fixed_sampler(),
    )
    t.start(0, 0)
    t.chunk_done(1000)
    _wait_for(lambda: len(store.puts) >= 4, "refreshed writes")
    assert all(p.rows_done == 1000 for p in store.puts[1:])
    (thread,) = _refreshers()
    t.phase("publishing")
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert store.puts[-1].phase == "publishing"


def test_the_refresher_ends_when_the_run_drops_the_tracker(parquet_4000: Path) -> None:
    t: ProgressTracker | None = ProgressTracker(
        cast(MetadataStore, MemoryStore()),
        RUN,
        [parquet_4000],
        None,
        1000,
        every_s=0.02,
        sampler=fixed_sampler(),
    )
    assert t is not None
    t.start(0, 0)
    (thread,) = _refreshers()
    t = None  # a run that raised: nobody calls phase() or close()
    gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()


# -- with the runner ---------------------------------------------------------------------


def test_a_real_run_reports_every_chunk_and_ends_at_100_percent(project: Project) -> None:
    project.write(pipeline=pipeline_doc(fmt="parquet", chunk_size=1000))
    project.partition(DAY1, orders(5500, seed=8), "parquet")
    sf = project.open()
    seen: list[RunProgress] = []
    sf.progress_listener = seen.append
    outcome = project.run(sf)
    assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
    processing = [p for p in seen if p.phase == "processing"]
    assert [p.chunks_done for p in processing] == sorted(p.chunks_done for p in processing)
    assert {p.chunks_total for p in seen} == {6}
    assert {p.rows_total for p in seen} == {5500}
    assert max(p.chunks_done for p in processing) == 6
    stored = sf.store.get_progress(outcome.run.run_id)
    assert stored is not None
    assert stored.rows_done == outcome.run.rows_read == 5500
    assert stored.percent == 100.0
    assert stored.phase in ("publishing", "done")
    assert [p.rows_done for p in seen] == sorted(p.rows_done for p in seen)
