"""One conformance suite over every engine (B5): identical certified content and evidence.

Sequential is the reference. Threads, processes, Dask (a LocalCluster) and Ray (local) run
the same pipeline on the same data with several chunks, row-level defects and a duplicate key
split across chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from factories import (
    CONSTRAINTS,
    DAY1,
    DAY2,
    Project,
    certified_path,
    orders,
    pipeline_doc,
    policy_doc,
    read_table,
    set_rows,
    write_source,
)
from signalfactory.api import SignalFactory
from signalfactory.core.records import Evidence, RunStatus
from signalfactory.pipeline import streaming
from signalfactory.pipeline.retrying import ReadFailed, Retried, RetryPolicy
from signalfactory.pipeline.source_plan import SourcePlan
from signalfactory.production.chunk_refs import ChunkRef, CsvChunkRef, plan_chunks
from signalfactory.production.engines import ProcessEngine
from signalfactory.production.formats import Chunk

ENGINES = ("threads", "processes", "dask", "ray")


def _data(project: Project) -> None:
    day1 = orders(5_500, seed=5)
    day1 = set_rows(day1, [10, 4_000], order_total=-3.0)
    day1 = set_rows(day1, [4_500], order_id=11)  # duplicate of a row in chunk 0
    project.partition(DAY1, day1)
    project.partition(DAY2, orders(3_200, seed=6, first_id=10_000, day=DAY2))


def _evidence(items: list[Evidence]) -> list[tuple[Any, ...]]:
    return [
        (
            str(e.stage),
            e.gate,
            str(e.result),
            e.failure_signature,
            e.failure_signatures,
            {k: v for k, v in e.metrics.items() if k != "certified_version"},
        )
        for e in items
    ]


def _run_all(project: Project, home: str, engine: str) -> tuple[pl.DataFrame, list[Any]]:
    rows, evidence, _ = _run_layers(project, home, engine)
    return rows, evidence


def _run_layers(
    project: Project, home: str, engine: str
) -> tuple[pl.DataFrame, list[Any], pl.DataFrame]:
    """Certified rows, evidence and bronze rows of both days on ``engine``."""
    sf: SignalFactory = project.open(home)
    evidence = []
    for day in (DAY1, DAY2):
        outcome = project.run(sf, day, engine=engine)
        assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
        assert outcome.run.engine == engine
        evidence.append(_evidence(outcome.evidence))
    certified = read_table(certified_path(sf)).sort("order_id", "dt")
    bronze = read_table(certified_path(sf).replace("gold_certified", "bronze"))
    sf.close()
    return certified, evidence, bronze.sort("order_id", "dt", "order_total")


@pytest.fixture(scope="module", params=["pii", "no-pii"])
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, Any]]:
    """With PII remediated, bronze has files of its own; without, bronze shares silver's
    files and stages the rejected rows beside them (``ChunkProcessor._stage_bronze``)."""
    project = Project(tmp_path_factory.mktemp("engines") / "project")
    if request.param == "no-pii":
        project.write(policy=policy_doc(pii={"scan_for": []}))
    _data(project)
    yield project, _run_layers(project, "home-sequential", "sequential")
    project.close()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_certifies_the_same_rows_with_the_same_evidence(
    reference: tuple[Project, Any], engine: str
) -> None:
    project, (expected_rows, expected_evidence, expected_bronze) = reference
    rows, evidence, bronze = _run_layers(project, f"home-{engine}", engine)
    assert rows.height == 5_500 + 3_200 - 3
    assert rows.equals(expected_rows)
    assert evidence == expected_evidence
    # bronze: every conformed row once (the rejected ones too), the same on every engine
    assert bronze.height == 5_500 + 3_200
    assert bronze.equals(expected_bronze)


def _two_file_project(root: Any, fmt: str = "parquet") -> Project:
    """Two files per partition (a chunk spans both), defects and a cross-chunk duplicate key,
    so workers read slices of several files and the ordered check runs."""
    project = Project(root)
    project.write(pipeline=pipeline_doc(fmt=fmt))
    day1 = orders(5_500, seed=5)
    day1 = set_rows(day1, [10, 4_000], order_total=-3.0)
    day1 = set_rows(day1, [4_500], order_id=11)
    folder = project.root / "raw" / f"dt={DAY1}"
    write_source(folder, day1.head(2_300), fmt, name="a")
    write_source(folder, day1.tail(3_200), fmt, name="b")
    project.partition(DAY2, orders(3_200, seed=6, first_id=10_000, day=DAY2), fmt)
    return project


def _forbid_driver_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_driver_reads(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the driver read chunks of a source workers can read themselves")

    monkeypatch.setattr(streaming, "read_chunks", no_driver_reads)


def _record_process_items(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every item the process engine is handed, in order."""
    seen: list[Any] = []
    real_map = ProcessEngine.map

    def spy(self: ProcessEngine, fn: Any, items: Any) -> Any:
        def record(items: Any) -> Any:
            for item in items:
                seen.append(item)
                yield item

        return real_map(self, fn, record(items))

    monkeypatch.setattr(ProcessEngine, "map", spy)
    return seen


@pytest.mark.slow
def test_workers_read_parquet_chunks_themselves(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engines get ChunkRefs, never rows: the driver does not read a single chunk (its
    ``read_chunks`` is broken here; spawned workers import their own), and the certified
    table and evidence of processes and threads equal a sequential run's whose driver reads
    the chunks and hands over the rows (the path of formats that cannot be sliced)."""
    project = _two_file_project(tmp_path / "project")
    with monkeypatch.context() as patch:
        patch.setattr(SourcePlan, "refs", lambda *_a, **_k: None)
        expected_rows, expected_evidence = _run_all(project, "home-sequential", "sequential")

    _forbid_driver_reads(monkeypatch)
    rows, evidence = _run_all(project, "home-threads", "threads")
    assert rows.equals(expected_rows)
    assert evidence == expected_evidence
    seen = _record_process_items(monkeypatch)
    rows, evidence = _run_all(project, "home-processes", "processes")
    project.close()
    assert rows.height == 5_500 + 3_200 - 3
    assert rows.equals(expected_rows)
    assert evidence == expected_evidence
    refs = [item for item in seen if isinstance(item, ChunkRef)]
    assert [r.index for r in refs] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert not any(isinstance(item, Chunk) for item in seen)
    assert refs[2].slices == (
        (str(project.root / "raw" / f"dt={DAY1}" / "a.parquet"), 2_000, 300),
        (str(project.root / "raw" / f"dt={DAY1}" / "b.parquet"), 0, 700),
    )


@pytest.mark.slow
def test_workers_read_csv_chunks_themselves(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """CSV too: the driver scans line ends and sends CsvChunkRefs (byte ranges), workers parse
    them; the result equals a sequential run whose driver streams and hands over the rows."""
    project = _two_file_project(tmp_path / "project", "csv")
    # Without the TIMESTAMP constraint (cast from text, which keeps every column text),
    # workers parse order_id and order_total typed.
    project.write(
        policy=policy_doc(constraints=[c for c in CONSTRAINTS if c["type"] != "TIMESTAMP"])
    )
    with monkeypatch.context() as patch:
        patch.setattr(SourcePlan, "refs", lambda *_a, **_k: None)
        expected_rows, expected_evidence = _run_all(project, "home-sequential", "sequential")

    _forbid_driver_reads(monkeypatch)
    seen = _record_process_items(monkeypatch)
    rows, evidence = _run_all(project, "home-processes", "processes")
    project.close()
    assert rows.height == 5_500 + 3_200 - 3
    assert rows.equals(expected_rows)
    assert evidence == expected_evidence
    refs = [item for item in seen if isinstance(item, CsvChunkRef)]
    assert [r.index for r in refs] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    # workers parse the declared INTEGER and DECIMAL columns typed; the rows and evidence
    # are still those of the driver's text path
    assert all(dict(r.types).keys() == {"order_id", "order_total"} for r in refs)
    assert not any(isinstance(item, Chunk) for item in seen)
    # Chunk 2 is the last 300 lines of a.csv (lines 2,002-2,301) and the first 700 of b.csv.
    assert [(Path(s.file).name, s.first_line, s.lines) for s in refs[2].slices] == [
        ("a.csv", 2_002, 300),
        ("b.csv", 2, 700),
    ]


def test_a_chunk_a_worker_cannot_read_fails_the_run_instead_of_dead_lettering(
    tmp_path: Any,
) -> None:
    path = write_source(tmp_path, orders(1_500, seed=1), "parquet")
    plan = plan_chunks([path], None, 1_000)
    assert plan is not None
    refs = list(plan)
    path.unlink()
    result = Retried(lambda chunk: chunk, RetryPolicy(attempts=3, backoff_s=0))(refs[1])
    assert isinstance(result, ReadFailed)
    assert result.index == 1
    assert "cannot be read as Parquet" in result.message


@pytest.fixture(scope="module")
def parquet_reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Project, Any]]:
    """The Parquet project run on sequential with the driver reading the rows."""
    project = _two_file_project(tmp_path_factory.mktemp("parquet-engines") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SourcePlan, "refs", lambda *_a, **_k: None)
        expected = _run_all(project, "home-sequential", "sequential")
    yield project, expected
    project.close()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_dask_and_ray_workers_read_parquet_chunks_to_the_same_result(
    parquet_reference: tuple[Project, Any], engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, (expected_rows, expected_evidence) = parquet_reference
    _forbid_driver_reads(monkeypatch)
    rows, evidence = _run_all(project, f"home-{engine}", engine)
    assert rows.equals(expected_rows)
    assert evidence == expected_evidence
