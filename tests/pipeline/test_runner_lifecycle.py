"""Lifecycle events and the audit trail of successful and failing runs."""

from __future__ import annotations

from deltalake import DeltaTable

from factories import DAY1, DAY2, URN, Project, certified_path, orders, pipeline_doc
from signalfactory.core.records import (
    CertificationStatus,
    LifecycleEventType,
    RunStatus,
)

STARTED = LifecycleEventType.JOB_RUN_STARTED
COMPLETED = LifecycleEventType.JOB_RUN_COMPLETED
FAILED = LifecycleEventType.JOB_RUN_FAILED
COMMITTED = LifecycleEventType.DATASET_WRITE_COMMITTED


def test_a_successful_run_records_started_commits_and_completed(project: Project) -> None:
    project.partition(DAY1, orders(2500, seed=1))
    sf = project.open()
    outcome = project.run(sf)
    run = outcome.run
    events = sf.store.list_events(run_id=run.run_id)

    assert [e.event_type for e in events] == [STARTED, *[COMMITTED] * 4, COMPLETED]
    assert all(e.dataset_urn == URN for e in events)
    assert events[0].payload["partition"] == {"dt": DAY1}

    completed = events[-1].payload
    assert isinstance(completed["duration"], float)
    assert completed["duration"] >= 0
    assert completed["rows_read"] == run.rows_read == 2500
    assert completed["rows_written"] == run.rows_written == 2500
    assert completed["resource_summary"]["chunks"] == 3

    commits = {e.payload["layer"]: e.payload for e in events if e.event_type is COMMITTED}
    assert set(commits) == {"bronze", "silver", "gold", "certified"}
    certified = commits["certified"]
    table = DeltaTable(certified_path(sf))
    assert certified["table_path"] == certified_path(sf)
    assert certified["commit_version"] == table.version() == run.certified_version
    assert certified["rows_written"] == 2500
    assert certified["files_added"] == len(table.file_uris()) >= 1
    assert certified["partition_key"] == f"dt={DAY1}"
    by_type = sf.store.list_events(dataset_urn=URN, event_type=str(COMMITTED))
    assert [e.event_id for e in by_type] == [
        e.event_id for e in events if e.event_type is COMMITTED
    ]

    stored = sf.store.get_run(run.run_id)
    assert stored is not None
    assert stored.status is RunStatus.SUCCEEDED
    assert stored.rows_written == 2500
    trail = [(t.from_status, t.to_status) for t in sf.store.list_transitions(run.run_id)]
    assert trail == [(None, "RUNNING"), ("RUNNING", "SUCCEEDED")]
    dataset_trail = [t.to_status for t in sf.store.list_transitions(URN)]
    assert dataset_trail == ["REGISTERED", "CERTIFIED"]


def test_a_missing_input_file_fails_the_run_with_started_and_failed(project: Project) -> None:
    project.partition(DAY1, orders(1200, seed=1))
    sf = project.open()
    outcome = project.run(sf, DAY2)  # nothing landed for this day

    run = outcome.run
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "no input file matches" in run.error
    assert "dt=2026-02-14" in run.error
    stored = sf.store.get_run(run.run_id)
    assert stored is not None
    assert stored.status is RunStatus.FAILED
    assert stored.error == run.error
    events = sf.store.list_events(run_id=run.run_id)
    assert [e.event_type for e in events] == [STARTED, FAILED]
    assert events[1].payload["failure_reason"] == run.error
    assert sf.store.list_transitions(run.run_id)[-1].to_status == "FAILED"
    # Nothing was certified and the certified view did not move.
    state = sf.certified(URN)
    assert state.certification_status is CertificationStatus.NOT_EVALUATED
    assert state.certified_version is None


def test_a_step_that_raises_fails_the_run_after_it_started(project: Project) -> None:
    project.write_module("boom", "def fail(batch):\n    raise ValueError('step broke')\n")
    project.write(pipeline=pipeline_doc(gold=[{"python": "boom:fail"}]))
    project.partition(DAY1, orders(1200, seed=1))
    sf = project.open()
    outcome = project.run(sf)

    run = outcome.run
    assert run.status is RunStatus.FAILED
    assert run.error == "step 'python: boom:fail' failed: ValueError: step broke"
    events = sf.store.list_events(run_id=run.run_id)
    assert [e.event_type for e in events] == [STARTED, FAILED]
    trail = [(t.from_status, t.to_status) for t in sf.store.list_transitions(run.run_id)]
    assert trail == [(None, "RUNNING"), ("RUNNING", "FAILED")]
    assert not DeltaTable.is_deltatable(certified_path(sf))
    # Staging is kept for a resume, but no chunk finished, so there is nothing to resume from.
    assert sf.store.list_checkpoints(run.run_id) == []
