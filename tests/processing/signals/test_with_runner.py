"""The freshness and volume engines on the lifecycle events our own runner records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from factories import DAY1, DAY2, DAY3, Project, as_text, dataset_doc, orders
from signalfactory.api import SignalFactory
from signalfactory.core.observability import Severity, SignalKind, SignalState
from signalfactory.core.records import CertificationStatus, use_clock
from signalfactory.processing.signals.evaluate import evaluate_all

SLO = {
    "freshness": {
        "expected_update_by": "02:00 ET daily",
        "grace_period": "30m",
        "partition_key": "dt",
    },
    "volume": {"min_rows_per_partition": 100, "anomaly_threshold_pct": 40},
}


def _run_at(project: Project, sf: SignalFactory, dt: str, at: datetime) -> CertificationStatus:
    with use_clock(at):
        outcome = project.run(sf, dt)
    return outcome.run.certification_status


def test_runner_history_held_certification_is_a_partial_write(project: Project) -> None:
    project.write(dataset={**dataset_doc(), "slo": SLO})
    project.partition(DAY1, orders(300, seed=1))
    project.partition(DAY2, orders(320, seed=2, first_id=10_000, day=DAY2))
    text = as_text(orders(310, seed=3, first_id=20_000, day=DAY3))
    project.partition(
        DAY3, text.with_columns(("USD " + pl.col("order_total")).alias("order_total"))
    )
    with use_clock(datetime(2026, 2, 13, 12, tzinfo=UTC)):
        sf = project.open()  # registered at noon on the first day
    # Each partition runs at 05:00 UTC (00:00 EST) on the morning it is due.
    assert _run_at(project, sf, DAY1, datetime(2026, 2, 14, 5, tzinfo=UTC)) == "CERTIFIED"
    assert _run_at(project, sf, DAY2, datetime(2026, 2, 15, 5, tzinfo=UTC)) == "CERTIFIED"
    held = _run_at(project, sf, DAY3, datetime(2026, 2, 16, 5, tzinfo=UTC))
    assert held is CertificationStatus.HELD_AT_PREVIOUS

    at = datetime(2026, 2, 16, 7, 31, tzinfo=UTC)  # dt=2026-02-15 due 07:00Z + 30m grace
    signals = evaluate_all(sf.store, at, engines=["freshness", "volume"])
    fresh = {s.partition: s for s in signals if s.kind is SignalKind.FRESHNESS}
    assert {p: s.signature for p, s in fresh.items()} == {
        f"dt={DAY1}": "OK",
        f"dt={DAY2}": "OK",
        f"dt={DAY3}": "PARTIAL_WRITE",
    }
    partial = fresh[f"dt={DAY3}"]
    assert partial.severity is Severity.CRITICAL
    # The schema break quarantined the batch at bronze: the run completed, nothing served.
    assert partial.details["layers_committed"] == []
    assert "completed but the serving layer did not advance (watermark dt=2026-02-14)" in (
        partial.summary
    )
    assert partial.details["watermark"] == f"dt={DAY2}"
    assert partial.run_id is not None
    volume = {s.partition: s for s in signals if s.kind is SignalKind.VOLUME}
    assert set(volume) == {f"dt={DAY1}", f"dt={DAY2}"}  # held partitions are not served
    assert all(s.state is SignalState.OK for s in volume.values())
    assert volume[f"dt={DAY2}"].details["observed_rows"] == 320

    # A day later nothing ran for 2026-02-16: the first evaluation after 07:30Z says so.
    later = evaluate_all(sf.store, at + timedelta(days=1), engines=["freshness"])
    missed = next(s for s in later if s.partition == "dt=2026-02-16")
    assert missed.signature == "JOB_NOT_TRIGGERED"
    assert "was due by 2026-02-17 02:00 EST (+30m grace) and no run started" in missed.summary
