"""A ``detect:`` step in a pipeline: score and flag columns reach the certified table.

One CSV partition of 2,500 orders (chunks of 1,000) whose totals lie between 5 and 400, with
three planted totals of 250,000. A gold MAD step flags exactly those three in every chunk, so
the expectation holds with per-chunk statistics too. Detectors are fitted on the whole input
(a pre-pass), so scores do not depend on the chunk size, and flagged rows can be routed to
quarantine like failed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import pytest

from factories import (
    DAY1,
    DEFAULT_DQ,
    Project,
    certified_path,
    gate,
    orders,
    pipeline_doc,
    policy_doc,
    quarantine,
    read_table,
    reasons,
    set_rows,
)
from signalfactory.core.records import CertificationStatus, GateResult, RunStatus, Stage

PLANTED = (4, 1234, 2400)  # row positions; order_id is position + 1
PLANTED_IDS = {p + 1 for p in PLANTED}
MAD_STEP: dict[str, Any] = {"detect": {"method": "mad", "columns": ["order_total"]}}


def write(
    project: Project,
    *,
    silver: Sequence[dict[str, Any]] = (),
    gold: Sequence[dict[str, Any]] = (),
    chunk_size: int = 1000,
    engine: str = "sequential",
) -> None:
    df = set_rows(orders(2500, seed=31), PLANTED, order_total=250_000.0)
    project.partition(DAY1, df)
    project.write(
        pipeline=pipeline_doc(silver=silver, gold=gold, chunk_size=chunk_size, engine=engine)
    )


@pytest.mark.parametrize("engine", ["sequential", "threads"])
def test_gold_detect_step_adds_score_and_flag_columns_to_certified(
    project: Project, engine: str
) -> None:
    write(project, gold=[MAD_STEP], engine=engine)
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
    assert outcome.run.certification_status is CertificationStatus.CERTIFIED

    certified = read_table(certified_path(sf))
    assert certified.schema["mad_score"] == pl.Float64
    assert certified.schema["mad_flag"] == pl.Boolean
    assert certified.height == outcome.run.rows_written == 2500
    assert set(certified.filter(pl.col("mad_flag"))["order_id"]) == PLANTED_IDS
    scores = certified["mad_score"]
    assert scores.null_count() == 0
    assert scores.is_finite().all()
    inliers = certified.filter(~pl.col("order_id").is_in(list(PLANTED_IDS)))
    assert inliers["mad_score"].max() < 3.5  # type: ignore[operator]


def test_a_non_numeric_detect_column_fails_the_run_naming_step_and_column(
    project: Project,
) -> None:
    step: dict[str, Any] = {"name": "odd", "detect": {"method": "zscore", "columns": ["country"]}}
    write(project, gold=[step])
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.status is RunStatus.FAILED
    assert "detect step 'odd': column 'country' is String" in str(outcome.run.error)


ROUTED_MAD: dict[str, Any] = {"detect": {**MAD_STEP["detect"], "route": True}}


def test_routed_detect_step_quarantines_the_flagged_rows(project: Project) -> None:
    write(project, gold=[ROUTED_MAD])
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
    q = quarantine(sf, outcome)
    assert reasons(q) == {str(i): {"ANOMALY:mad:order_total"} for i in PLANTED_IDS}
    certified = read_table(certified_path(sf))
    assert certified.height == outcome.run.rows_written == 2500 - len(PLANTED)
    assert not certified["mad_flag"].any()
    assert outcome.run.rows_quarantined == len(PLANTED)
    assert outcome.run.reconciliation["balanced"] is True


def test_routed_gold_anomalies_have_gold_dq_evidence(project: Project) -> None:
    write(project, gold=[ROUTED_MAD])
    sf = project.open()
    outcome = project.run(sf)
    evidence = gate(outcome, Stage.GOLD, "DQ")
    assert evidence.result is GateResult.WARN
    assert evidence.context["disposition"] == "ROWS_QUARANTINED"
    assert evidence.metrics["failures_by_signature"] == {"ANOMALY:mad:order_total": 3}


def test_silver_and_gold_detect_steps_route_and_score_on_threads(project: Project) -> None:
    silver: dict[str, Any] = {
        "detect": {"method": "iqr", "columns": ["order_total"], "route": True}
    }
    df = set_rows(orders(2500, seed=31), PLANTED, order_total=250_000.0)
    project.partition(DAY1, df)
    for dq in ((), DEFAULT_DQ):  # without and with the ordered duplicate check
        project.write(
            policy=policy_doc(dq=dq),
            pipeline=pipeline_doc(silver=[silver], gold=[MAD_STEP], engine="threads"),
        )
        sf = project.open(home=f"home-{len(dq)}")
        outcome = project.run(sf)
        assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
        q = quarantine(sf, outcome)
        assert reasons(q) == {str(i): {"ANOMALY:iqr:order_total"} for i in PLANTED_IDS}
        certified = read_table(certified_path(sf))
        assert certified.height == 2500 - len(PLANTED)
        assert {"iqr_score", "iqr_flag", "mad_score", "mad_flag"} <= set(certified.columns)
        assert not certified["iqr_flag"].any()


@pytest.mark.parametrize("stage", ["silver", "gold"])
def test_detect_scores_do_not_depend_on_the_chunk_size(project: Project, stage: str) -> None:
    zscore: dict[str, Any] = {"detect": {"method": "zscore", "columns": ["order_total"]}}
    tables = []
    for chunk_size in (1000, 2500):
        steps = [zscore]
        if stage == "silver":
            write(project, silver=steps, chunk_size=chunk_size)
        else:
            write(project, gold=steps, chunk_size=chunk_size)
        sf = project.open(home=f"home-{chunk_size}")
        outcome = project.run(sf)
        assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
        tables.append(read_table(certified_path(sf)).sort("order_id"))
    assert tables[0]["zscore_score"].equals(tables[1]["zscore_score"])
