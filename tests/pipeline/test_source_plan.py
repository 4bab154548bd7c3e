"""``SourcePlan``: a CSV source's chunk plan begun in a thread (beside the key's digests) is
the plan the chunk loop would make itself; another chunk size, other types or a rewritten
file plan again; errors come where the loop asks; a cancelled plan stops its scan."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from factories import DAY1, Project, orders, write_source
from signalfactory.core.errors import InputDataError
from signalfactory.core.records import RunStatus
from signalfactory.pipeline.source_plan import SourcePlan
from signalfactory.production import chunk_refs
from signalfactory.production.chunk_refs import CsvChunkRef, PlanStopped, plan_chunks, plan_csv
from signalfactory.production.spec import PipelineSpec

TYPES: dict[str, pa.DataType | None] = {"order_id": pa.int64(), "country": None}


def spec(chunk_size: int, fmt: str | None = None) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "pipeline": "p",
            "dataset": "ds://t/orders",
            "source": {"path": "raw/*", "format": fmt},
            "chunk_size": chunk_size,
        }
    )


def csv_files(tmp_path: Path) -> list[Path]:
    return [
        write_source(tmp_path, orders(n, seed=i, first_id=1 + 10_000 * i), "csv", name=f"f{i}")
        for i, n in enumerate((2_500, 1_700))
    ]


def begun(tmp_path: Path) -> tuple[list[Path], SourcePlan]:
    """Two CSV files and a plan begun for them at chunk 1,000 with ``TYPES``."""
    files = csv_files(tmp_path)
    plan = SourcePlan()
    plan.begin(files, spec(1_000), TYPES)
    return files, plan


def planned(
    plan: SourcePlan,
    files: list[Path],
    chunk_size: int = 1_000,
    types: dict[str, pa.DataType | None] = TYPES,
) -> list[CsvChunkRef]:
    got = plan.refs(files, spec(chunk_size), types)
    assert got is not None
    return list(got)


def test_begun_plan_is_the_plan_the_loop_makes(tmp_path: Path) -> None:
    files, plan = begun(tmp_path)
    assert plan.begun  # a CSV source is scanned ahead
    refs = planned(plan, files)
    expected = plan_chunks(files, None, 1_000, csv_types=TYPES)
    assert expected is not None
    assert refs == list(expected)
    assert [r.rows for r in refs] == [1_000, 1_000, 1_000, 1_000, 200]
    assert refs[0].types == (("order_id", pa.int64()),)
    # Asked again (a second pass over the source), the same plan, not a spent iterator.
    assert planned(plan, files) == refs


def test_other_chunk_size_plans_again(tmp_path: Path) -> None:
    # A resumed run keeps the chunk size it started with, which the plan was not begun for.
    files, plan = begun(tmp_path)
    assert [r.rows for r in planned(plan, files, 2_000)] == [2_000, 2_000, 200]


def test_parquet_is_planned_when_the_loop_asks(tmp_path: Path) -> None:
    files = [write_source(tmp_path, orders(1_500, seed=1), "parquet")]
    plan = SourcePlan()
    plan.begin(files, spec(1_000), TYPES)
    assert not plan.begun  # footers are read as the loop goes: nothing to begin
    got = plan.refs(files, spec(1_000), TYPES)
    assert got is not None
    assert [r.rows for r in got] == [1_000, 500]


def test_scan_error_is_raised_where_the_loop_asks(tmp_path: Path) -> None:
    files = csv_files(tmp_path)
    other = tmp_path / "f1.csv"
    other.write_text("something,else\n1,2\n", encoding="utf-8")  # not the first file's header
    plan = SourcePlan()
    plan.begin(files, spec(1_000), TYPES)
    with pytest.raises(InputDataError) as from_plan:
        plan.refs(files, spec(1_000), TYPES)
    with pytest.raises(InputDataError) as direct:
        plan_chunks(files, None, 1_000, csv_types=TYPES)
    assert str(from_plan.value) == str(direct.value)


def test_stopped_scan_raises_plan_stopped(tmp_path: Path) -> None:
    files = csv_files(tmp_path)
    stop = threading.Event()
    stop.set()
    with pytest.raises(PlanStopped, match=r"f0\.csv"):
        plan_csv(files, 1_000, TYPES, stop)
    assert plan_csv(files, 1_000, TYPES, threading.Event()) is not None


def test_a_cancelled_plan_begins_nothing_and_plans_when_asked(tmp_path: Path) -> None:
    files = csv_files(tmp_path)
    plan = SourcePlan()
    plan.cancel()  # the run needs no plan (its key already succeeded)
    plan.begin(files, spec(1_000), TYPES)
    assert not plan.begun
    assert [r.rows for r in planned(plan, files)] == [1_000, 1_000, 1_000, 1_000, 200]


def test_a_thread_that_cannot_start_leaves_the_plan_to_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    files = csv_files(tmp_path)
    plan = SourcePlan()
    plan.begin(files, spec(1_000), TYPES)
    assert not plan.begun
    assert [r.rows for r in planned(plan, files)] == [1_000, 1_000, 1_000, 1_000, 200]


def test_file_rewritten_after_begin_is_planned_again(tmp_path: Path) -> None:
    # The plan's byte offsets belong to the bytes it scanned: a file rewritten between the
    # scan and the chunk loop (a producer re-delivering it) is scanned again.
    files, plan = begun(tmp_path)
    assert plan.begun
    write_source(tmp_path, orders(3_100, seed=9), "csv", name="f0")
    assert [r.rows for r in planned(plan, files)] == [1_000, 1_000, 1_000, 1_000, 800]


def test_other_types_plan_again(tmp_path: Path) -> None:
    files, plan = begun(tmp_path)
    assert {r.types for r in planned(plan, files, types={"order_id": None})} == {()}


def test_the_runner_scans_a_csv_source_once_beside_the_key(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.partition(DAY1, orders(2_500, seed=3))
    scans: list[str] = []
    stops: list[threading.Event] = []
    real = chunk_refs._line_cuts

    def counted(*args: Any, **kwargs: Any) -> Any:
        scans.append(threading.current_thread().name)
        stops.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(chunk_refs, "_line_cuts", counted)
    sf = project.open()
    first = project.run(sf, chunk_size=1_000)
    assert first.run.status is RunStatus.SUCCEEDED
    assert first.run.rows_read == 2_500
    assert scans == ["signalfactory-plan"]  # begun by the runner, used by the chunk loop
    # The same key again: the run is reused and the scan begun beside its digest is told to
    # stop (it reads the stop event at every block).
    again = project.run(sf, chunk_size=1_000)
    assert again.reused
    assert scans == ["signalfactory-plan"] * 2
    assert stops[1].is_set()


def test_a_plan_error_fails_the_run_and_stops_its_progress_thread(project: Project) -> None:
    project.partition(DAY1, orders(50, seed=1))
    (project.root / "raw" / f"dt={DAY1}" / "other.csv").write_text("x,y\n1,2\n", "utf-8")
    sf = project.open()
    failed = project.run(sf)
    assert failed.run.status is RunStatus.FAILED
    assert failed.run.error is not None
    assert "other.csv has other columns than" in failed.run.error
    progress = f"sf-progress-{failed.run.run_id}"
    assert progress not in [t.name for t in threading.enumerate()]
