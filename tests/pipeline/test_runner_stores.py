"""End to end on both metadata stores: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import pytest

from factories import (
    DAY1,
    DAY2,
    DAY3,
    URN,
    Project,
    as_text,
    certified_path,
    orders,
    read_table,
    set_rows,
)
from signalfactory.core.records import (
    CertificationStatus,
    GateResult,
    LifecycleEventType,
    RunStatus,
    Stage,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_url"))


def test_three_days_end_to_end(project: Project, database_url: str | None) -> None:
    project.partition(DAY1, orders(1500, seed=1))
    project.partition(
        DAY2, set_rows(orders(1500, seed=2, first_id=5000, day=DAY2), [3, 1400], order_total=-1.0)
    )
    broken = as_text(orders(1500, seed=3, first_id=9000, day=DAY3))
    project.partition(DAY3, broken.with_columns(order_total=broken["order_total"] + " USD"))
    sf = project.open(database_url=database_url)
    if database_url is not None:
        assert sf.settings.store_url.startswith("postgresql")

    clean, bad_rows, held = (project.run(sf, dt) for dt in (DAY1, DAY2, DAY3))
    again = project.run(sf, DAY2)

    assert [o.run.certification_status for o in (clean, bad_rows, held)] == [
        CertificationStatus.CERTIFIED,
        CertificationStatus.CERTIFIED,
        CertificationStatus.HELD_AT_PREVIOUS,
    ]
    assert again.reused
    assert again.run.run_id == bad_rows.run.run_id
    assert read_table(certified_path(sf)).height == 1500 + 1498

    store = sf.store
    runs = {r.run_id: r for r in store.list_runs(URN)}
    assert set(runs) == {clean.run.run_id, bad_rows.run.run_id, held.run.run_id}
    assert all(r.status is RunStatus.SUCCEEDED for r in runs.values())
    stored = runs[held.run.run_id]
    assert stored.partition == {"dt": DAY3}
    assert stored.rows_quarantined == 1500
    assert stored.reconciliation == held.run.reconciliation
    assert [s.name for s in stored.stages] == ["plan", "stage", "process", "write", "verify",
                                                "finalize"]  # fmt: skip

    evidence = store.list_evidence(run_id=held.run.run_id)
    assert len(evidence) == 9
    (schema,) = [e for e in evidence if e.stage is Stage.BRONZE and e.gate == "G3_SCHEMA"]
    assert schema.result is GateResult.FAIL
    assert schema.failure_signature == "SCHEMA_BREAK:order_total:DECIMAL→STRING"
    assert schema.to_dict()["previous_certified_version"] == "v1"
    assert schema.to_dict() == next(
        e.to_dict() for e in held.evidence if e.evidence_id == schema.evidence_id
    )

    quarantined = {q.run_id: q for q in store.list_quarantine(URN)}
    assert quarantined[bad_rows.run.run_id].reasons == {"INVARIANT:order_total > 0": 2}
    assert quarantined[held.run.run_id].batch_level

    state = sf.certified(URN)
    assert state.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert state.certified_version == 1
    assert state.last_run_id == held.run.run_id
    committed = store.list_events(event_type=str(LifecycleEventType.DATASET_WRITE_COMMITTED))
    certified_commits = [e.payload["commit_version"] for e in committed
                         if e.payload["layer"] == "certified"]  # fmt: skip
    assert certified_commits == [0, 1]
    transitions = [t.to_status for t in store.list_transitions(URN)]
    assert transitions == ["REGISTERED", "CERTIFIED", "CERTIFIED", "HELD_AT_PREVIOUS"]
