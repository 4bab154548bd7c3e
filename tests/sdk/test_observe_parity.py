"""An observed gold write leaves the same evidence as a pipeline run over the same rows."""

from __future__ import annotations

from typing import Any

import polars as pl

from factories import DAY1, URN, Project, orders, pipeline_doc, quarantine, reasons, set_rows
from signalfactory.core.records import Evidence, RunStatus
from signalfactory.sdk import observe


def _comparable(evidence: list[Evidence]) -> list[tuple[Any, ...]]:
    keep = ("disposition", "enforcement_level", "certified_view_status")
    return sorted(
        (
            str(e.stage),
            e.gate,
            str(e.result),
            e.failure_signature,
            e.failure_signatures,
            {k: v for k, v in e.metrics.items() if k != "certified_version"},
            {k: e.context.get(k) for k in keep},
        )
        for e in evidence
    )


def test_gate_results_and_signatures_match_a_pipeline_run(project: Project) -> None:
    df = orders(400, seed=17)
    df = set_rows(df, [3, 30], order_total=-5.0)
    df = set_rows(df, [11], customer_id=None)
    df = set_rows(df, [42], order_type="FLASH_SALE")
    df = set_rows(df, [77], order_id=5)  # duplicate key of row 4
    project.partition(DAY1, df, fmt="parquet")
    project.write(pipeline=pipeline_doc(fmt="parquet", chunk_size=1000))

    by_pipeline = project.open("pipeline_home")
    outcome = project.run(by_pipeline)
    assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error

    by_sdk = project.open("sdk_home")
    with observe(URN, partition={"dt": DAY1}, settings=by_sdk.settings) as obs:
        result = obs.write(df, layer="gold")
    assert result is not None

    stored = by_sdk.store.list_evidence(run_id=obs.run_id)
    assert _comparable(stored) == _comparable(outcome.evidence)
    assert len(stored) == 9
    assert any("UNKNOWN_ENUM:order_type:FLASH_SALE" in e.failure_signatures for e in stored)

    # Same rows certified, same rows quarantined with the same reasons.
    assert obs.result.certification_status == outcome.run.certification_status
    assert obs.result.rows_written == outcome.run.rows_written == 395
    assert obs.result.rows_quarantined == outcome.run.rows_quarantined == 5
    (record,) = by_sdk.store.list_quarantine(URN)
    sdk_quarantine = pl.read_delta(record.path)
    assert reasons(sdk_quarantine) == reasons(quarantine(by_pipeline, outcome))
