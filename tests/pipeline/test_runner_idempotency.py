"""Re-running a partition: same input reuses the run; new input replaces the partition."""

from __future__ import annotations

import polars as pl
from deltalake import DeltaTable

from factories import (
    DAY1,
    DAY2,
    URN,
    Project,
    certified_path,
    orders,
    policy_doc,
    read_table,
    tree_digest,
)
from signalfactory.api import SignalFactory
from signalfactory.core.records import CertificationStatus, RunStatus


def _store_counts(sf: SignalFactory) -> tuple[int, int, int, int]:
    store = sf.store
    return (
        len(store.list_runs()),
        len(store.list_evidence()),
        len(store.list_events()),
        len(store.list_transitions()),
    )


def test_same_input_returns_the_previous_run_and_writes_nothing(project: Project) -> None:
    project.partition(DAY1, orders(1500, seed=1))
    sf = project.open()
    first = project.run(sf)
    assert first.run.certification_status is CertificationStatus.CERTIFIED
    lake = tree_digest(sf.settings.lake_root)
    counts = _store_counts(sf)

    again = project.run(sf)
    # Engine and chunk size do not change what a run computes, so they do not change the key.
    other_engine = project.run(sf, engine="threads", chunk_size=2000)

    for outcome in (again, other_engine):
        assert outcome.reused
        assert outcome.run.run_id == first.run.run_id
        assert outcome.run.certified_version == first.run.certified_version == 0
        assert {e.evidence_id for e in outcome.evidence} == {e.evidence_id for e in first.evidence}
    assert not first.reused
    assert tree_digest(sf.settings.lake_root) == lake
    assert _store_counts(sf) == counts
    assert DeltaTable(certified_path(sf)).version() == 0


def test_changed_input_replaces_the_partition_in_every_layer(project: Project) -> None:
    project.partition(DAY1, orders(1500, seed=1))
    sf = project.open()
    first = project.run(sf)
    # The producer re-delivers the day: fewer rows, same ids, different values.
    redelivered = orders(1300, seed=99)
    project.partition(DAY1, redelivered)

    second = project.run(sf)

    assert not second.reused
    assert second.run.run_id != first.run.run_id
    assert second.run.certified_version == 1
    certified = read_table(certified_path(sf)).sort("order_id")
    assert certified.height == 1300
    assert certified["order_id"].n_unique() == 1300
    assert certified["customer_id"].to_list() == redelivered["customer_id"].to_list()
    for layer in ("bronze/orders", "silver/orders", "gold/orders"):
        table = read_table(str(sf.settings.lake_root / layer))
        assert table.filter(pl.col("dt") == DAY1).height == 1300, layer
    assert sf.certified(URN).last_run_id == second.run.run_id


def test_two_partitions_accumulate(project: Project) -> None:
    project.partition(DAY1, orders(1200, seed=1))
    project.partition(DAY2, orders(1100, seed=2, first_id=5000, day=DAY2))
    sf = project.open()
    assert project.run(sf, DAY1).run.certified_version == 0
    second = project.run(sf, DAY2)
    assert second.run.certified_version == 1
    certified = read_table(certified_path(sf))
    counts = dict(certified.group_by("dt").len().iter_rows())
    assert counts == {DAY1: 1200, DAY2: 1100}
    assert certified["order_id"].n_unique() == 2300
    # Re-running the first day with the same input still reuses its run.
    assert project.run(sf, DAY1).reused
    assert DeltaTable(certified_path(sf)).version() == 1


def test_a_failed_run_is_resumed_not_reused(project: Project) -> None:
    project.write_module("boom", "def fail(batch):\n    raise ValueError('step broke')\n")
    broken = project.write_yaml(
        "pipeline_boom.yaml",
        {
            "pipeline": "orders_daily",
            "dataset": URN,
            "source": {"path": "raw/dt={dt}/*.csv", "format": "csv"},
            "chunk_size": 1000,
            "steps": {"gold": [{"python": "boom:fail"}]},
        },
    )
    project.partition(DAY1, orders(1200, seed=1))
    sf = project.open()
    failed = sf.run(broken, {"dt": DAY1})
    assert failed.run.status is RunStatus.FAILED
    retried = sf.run(broken, {"dt": DAY1})
    assert not retried.reused
    # Re-running the key picks the failed run up from its checkpoints (B7)…
    assert retried.run.run_id == failed.run.run_id
    assert retried.run.status is RunStatus.FAILED
    reasons = [t.reason for t in sf.store.list_transitions(failed.run.run_id)]
    assert "resumed from its checkpoints" in reasons
    # …and never publishes anything while the step keeps failing.
    assert sf.store.get_certification(URN).certified_version is None


def test_a_rerun_that_certifies_no_rows_empties_the_partition(project: Project) -> None:
    project.write(policy=policy_doc(max_invalid_pct=100))
    project.partition(DAY1, orders(1_200, seed=41))
    sf = project.open()
    first = project.run(sf)
    assert read_table(certified_path(sf)).height == 1_200
    # The partition is re-landed with every customer_id missing: nothing passes.
    project.partition(DAY1, orders(1_200, seed=41).with_columns(customer_id=pl.lit(None)))
    second = project.run(sf)
    assert second.run.run_id != first.run.run_id
    assert second.run.certification_status is CertificationStatus.CERTIFIED
    assert second.run.rows_written == 0
    assert second.run.rows_quarantined == 1_200
    assert read_table(certified_path(sf)).filter(pl.col("dt") == DAY1).height == 0
