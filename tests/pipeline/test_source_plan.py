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
from signalfactory.production.chunk_refs import PlanStopped, plan_chunks, plan_csv
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


def test_begun_plan_is_the_plan_the_loop_makes(tmp_path: Path) -> None:
    files = csv_files(tmp_path)
    plan = SourcePlan()
    plan.begin(files, spec(1_000), TYPES)
    assert plan.begun  # a CSV source is scanned ahead
    got = plan.refs(files, spec(1_000), TYPES)
    expected = plan_chunks(files, None, 1_000, csv_types=TYPES)
    assert got is not None
    assert expected is not None
    refs = list(got)
    assert refs == list(expected)
    assert [r.rows for r in refs] == [1_000, 1_000, 1_000, 1_000, 200]
    assert refs[0].types == (("order_id", pa.int64()),)
    # Asked again (a second pass over the source), the same plan, not a spent iterator.
    again = plan.refs(files, spec(1_000), TYPES)
    assert again is not None
    assert list(again) == refs


def test_other_chunk_size_plans_again(tmp_path: Path) -> None:
    # A resumed run keeps the chunk size it started with, which the plan was not begun for.
    files = csv_files(tmp_path)
    plan = SourcePlan()
    plan.begin(files, spec(1_000), TYPES)
    got = plan.refs(files, spec(2_000), TYPES)
    assert got is not None
    assert [r.rows for r in got] == [2_000, 2_000, 200]


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
    with pytest.raises(InputDataError) as begun:
        plan.refs(files, spec(1_000), TYPES)
    with pytest.raises(InputDataError) as direct:
        plan_chunks(files, None, 1_000, csv_types=TYPES)
    assert str(begun.value) == str(direct.value)


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
    got = plan.refs(files, spec(1_000), TYPES)
    assert got is not None
    assert [r.rows for r in got] == [1_000, 1_000, 1_000, 1_000, 200]


def test_file_rewritten_after_begin_is_planned_again(tmp_path: Path) -> None:
    # The plan's byte offsets belong to the bytes it scanned: a file rewritten between the
    # scan and the chunk loop (a producer re-delivering it) is scanned again.
    files = csv_files(tmp_path)
    plan = SourcePlan()
    plan.begin(files, spec(1_000), TYPES)
    assert plan.begun
    write_source(tmp_path, orders(3_100, seed=9), "csv", name="f0")
    got = plan.refs(files, spec(1_000), TYPES)
    assert got is not None
    assert [r.rows for r in got] == [1_000, 1_000, 1_000, 1_000, 800]


def test_other_types_plan_again(tmp_path: Path) -> None:
    files = csv_files(tmp_path)
    plan = SourcePlan()
    plan.begin(files, spec(1_000), TYPES)
    got = plan.refs(files, spec(1_000), {"order_id": None})
    assert got is not None
    assert {r.types for r in got} == {()}


def test_the_runner_scans_a_csv_source_once_beside_the_key(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.partition(DAY1, orders(2_500, seed=3))
    scans: list[str] = []
    real = chunk_refs._line_cuts

    def counted(*args: Any, **kwargs: Any) -> Any:
        scans.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(chunk_refs, "_line_cuts", counted)
    sf = project.open()
    first = project.run(sf, chunk_size=1_000)
    assert first.run.status is RunStatus.SUCCEEDED
    assert first.run.rows_read == 2_500
    assert scans == ["signalfactory-plan"]  # begun by the runner, used by the chunk loop
