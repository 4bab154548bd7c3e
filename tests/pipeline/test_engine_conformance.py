"""One conformance suite over every engine (B5): identical certified content and evidence.

Sequential is the reference. Threads, processes, Dask (a LocalCluster) and Ray (local) run
the same pipeline on the same data with several chunks, row-level defects and a duplicate key
split across chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest

from factories import DAY1, DAY2, Project, certified_path, orders, read_table, set_rows
from signalfactory.api import SignalFactory
from signalfactory.core.records import Evidence, RunStatus

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
    sf: SignalFactory = project.open(home)
    evidence = []
    for day in (DAY1, DAY2):
        outcome = project.run(sf, day, engine=engine)
        assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
        assert outcome.run.engine == engine
        evidence.append(_evidence(outcome.evidence))
    certified = read_table(certified_path(sf)).sort("order_id", "dt")
    sf.close()
    return certified, evidence


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, Any]]:
    project = Project(tmp_path_factory.mktemp("engines") / "project")
    _data(project)
    yield project, _run_all(project, "home-sequential", "sequential")
    project.close()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_certifies_the_same_rows_with_the_same_evidence(
    reference: tuple[Project, Any], engine: str
) -> None:
    project, (expected_rows, expected_evidence) = reference
    rows, evidence = _run_all(project, f"home-{engine}", engine)
    assert rows.height == 5_500 + 3_200 - 3
    assert rows.equals(expected_rows)
    assert evidence == expected_evidence
