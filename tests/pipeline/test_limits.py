"""Per-run limits (B10): time limit → TIMED_OUT and resumable; impossible memory refused."""

from __future__ import annotations

import pytest

from factories import Project, certified_path, orders, pipeline_doc, read_table
from signalfactory.core.errors import ConfigError
from signalfactory.core.records import RunStatus

SLOW = """
import time


def step(batch):
    time.sleep(0.05)
    return batch
"""


def test_a_run_over_its_time_limit_times_out_and_resumes(project: Project) -> None:
    project.write_module("slow", SLOW)
    doc = pipeline_doc(chunk_size=1_000, gold=[{"python": "slow:step"}])
    doc["limits"] = {"time_limit_s": 0.3}
    project.write(pipeline=doc)
    project.partition("2026-02-13", orders(40_000, seed=4))
    sf = project.open()
    first = project.run(sf)
    assert first.run.status is RunStatus.TIMED_OUT
    assert "time limit of 0.3 s" in (first.run.error or "")
    done = len(sf.store.list_checkpoints(first.run.run_id))
    assert 0 < done < 40
    assert sf.store.get_certification(first.run.dataset_urn).certified_version is None

    doc["limits"] = {}
    project.write(pipeline=doc)
    second = project.run(sf)
    assert second.run.run_id == first.run.run_id
    assert second.run.status is RunStatus.SUCCEEDED, second.run.error
    assert read_table(certified_path(sf)).height == 40_000
    assert second.run.reconciliation["peak_rss_mb"] > 0


def test_a_chunk_size_that_cannot_fit_the_memory_limit_is_refused(project: Project) -> None:
    doc = pipeline_doc(chunk_size=1_000_000, engine="threads")
    doc["limits"] = {"memory_mb": 300}
    project.write(pipeline=doc)
    project.partition("2026-02-13", orders(5_000, seed=4))
    sf = project.open()
    with pytest.raises(ConfigError, match=r"set chunk_size to [\d,]+ or less") as info:
        project.run(sf)
    assert "limits.memory_mb 300" in info.value.message
    assert sf.store.list_runs() == []
