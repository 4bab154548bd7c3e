"""Per-chunk retries and the dead-letter table (B8), through real runs."""

from __future__ import annotations

import json

import polars as pl
import pytest

from factories import DAY1, URN, Project, certified_path, orders, pipeline_doc, read_table
from signalfactory.core.records import DeadLetterStatus, RunStatus

ROWS, CHUNK = 5_000, 1_000
POISON = 2_500  # order_id in chunk 2

FLAKY = """
import json, pathlib
import polars as pl

HERE = pathlib.Path(__file__).parent


def step(batch: pl.DataFrame) -> pl.DataFrame:
    if batch.filter(pl.col("order_id") == {poison}).height:
        state = HERE / "attempts.json"
        seen = json.loads(state.read_text()) if state.exists() else 0
        state.write_text(json.dumps(seen + 1))
        if (HERE / "broken.flag").exists():
            raise ValueError("bad data in this chunk")
        if seen < {transient_failures}:
            raise OSError("storage blip")
    return batch
"""


def _project(project: Project, *, transient_failures: int, attempts: int, budget: int) -> None:
    project.write_module(
        "flaky", FLAKY.format(poison=POISON, transient_failures=transient_failures)
    )
    doc = pipeline_doc(chunk_size=CHUNK, gold=[{"python": "flaky:step"}])
    doc["retries"] = {"attempts": attempts, "backoff_s": 0.01, "max_backoff_s": 0.05}
    doc["dead_letter"] = {"max_chunks": budget}
    project.write(pipeline=doc)
    project.partition(DAY1, orders(ROWS, seed=8))


def test_a_transient_error_is_retried_until_it_succeeds(project: Project) -> None:
    _project(project, transient_failures=3, attempts=5, budget=0)
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
    assert json.loads((project.root / "attempts.json").read_text()) == 4
    assert outcome.run.reconciliation["retries"] == 3
    assert outcome.run.reconciliation["dead_letters"] == 0
    assert read_table(certified_path(sf)).height == ROWS
    assert sf.store.list_dead_letters() == []


def test_retries_that_run_out_dead_letter_the_chunk_and_fail_the_run(project: Project) -> None:
    _project(project, transient_failures=10, attempts=2, budget=0)
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.status is RunStatus.FAILED
    assert outcome.run.error == "storage blip"
    (letter,) = sf.store.list_dead_letters(run_id=outcome.run.run_id)
    assert letter.attempts == 2
    assert letter.error_type == "OSError"
    assert letter.chunk_index == POISON // CHUNK
    assert letter.correlation_id == f"{outcome.run.run_id}:chunk-{POISON // CHUNK}"


def test_a_terminal_error_is_tried_once_dead_lettered_and_replayed(project: Project) -> None:
    _project(project, transient_failures=0, attempts=5, budget=1)
    (project.root / "broken.flag").write_text("on")
    sf = project.open()
    outcome = project.run(sf)
    run = outcome.run
    assert run.status is RunStatus.SUCCEEDED, run.error
    (letter,) = sf.store.list_dead_letters(run_id=run.run_id)
    assert letter.attempts == 1  # terminal errors are not retried
    assert letter.error == "step 'python: flaky:step' failed: ValueError: bad data in this chunk"
    sample = letter.payload_sample
    assert sample["rows"] == CHUNK
    assert len(sample["sample"]) == 5
    assert not any("@example.com" in str(v) for row in sample["sample"] for v in row.values())
    # rows certified + quarantined + dead-lettered = rows read
    assert run.rows_read == ROWS
    assert run.rows_written + run.rows_quarantined + CHUNK == ROWS
    assert run.reconciliation["balanced"] is True
    assert read_table(certified_path(sf)).height == ROWS - CHUNK

    # The data is fixed upstream: replay the dead letter within its run.
    (project.root / "broken.flag").unlink()
    replayed = sf.replay_dead_letter(letter.dead_letter_id, actor="test")
    assert replayed.run.run_id == run.run_id
    assert replayed.run.status is RunStatus.SUCCEEDED, replayed.run.error
    certified = read_table(certified_path(sf))
    assert certified.height == ROWS
    assert certified["order_id"].is_duplicated().sum() == 0
    assert sf.store.get_dead_letter(letter.dead_letter_id).status is DeadLetterStatus.REPLAYED
    trail = [(t.from_status, t.to_status) for t in sf.store.list_transitions(letter.dead_letter_id)]
    assert trail == [(None, "OPEN"), ("OPEN", "REPLAYED")]
    with pytest.raises(Exception, match="not OPEN"):
        sf.discard_dead_letter(letter.dead_letter_id)
    assert sf.store.get_certification(URN).certified_version is not None


ONCE_PER_CHUNK = """
import pathlib
import polars as pl

HERE = pathlib.Path(__file__).parent


def step(batch: pl.DataFrame) -> pl.DataFrame:
    marker = HERE / f"seen-{batch['order_id'].min()}"
    if not marker.exists():
        marker.write_text("1")
        raise OSError("first attempt of every chunk fails")
    return batch
"""


def test_retried_chunks_are_counted_once(project: Project) -> None:
    project.write_module("once", ONCE_PER_CHUNK)
    doc = pipeline_doc(chunk_size=CHUNK, gold=[{"python": "once:step"}])
    doc["retries"] = {"attempts": 3, "backoff_s": 0.0, "max_backoff_s": 0.0}
    project.write(pipeline=doc)
    source = orders(ROWS, seed=8).with_columns(
        order_total=pl.when(pl.int_range(pl.len()) % 1000 == 7)
        .then(-1.0)
        .otherwise(pl.col("order_total"))
    )
    project.partition(DAY1, source)
    sf = project.open()
    outcome = project.run(sf)
    run = outcome.run
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.reconciliation["retries"] == ROWS // CHUNK
    assert run.rows_quarantined == ROWS // CHUNK  # one bad row per chunk, counted once
    assert run.rows_written == ROWS - ROWS // CHUNK
    assert run.reconciliation["balanced"] is True
