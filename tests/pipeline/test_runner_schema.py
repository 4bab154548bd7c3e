"""G3_SCHEMA at bronze (a producer's type change) and at gold (a step's change vs certified)."""

from __future__ import annotations

import polars as pl
import pytest
from deltalake import DeltaTable

from factories import (
    DAY1,
    DAY2,
    DAY3,
    URN,
    Project,
    as_text,
    certified_path,
    dataset_doc,
    gate,
    orders,
    pipeline_doc,
    policy_doc,
    quarantine,
    read_table,
    tree_digest,
)
from signalfactory.core.records import CertificationStatus, GateResult, RunStatus, Stage
from signalfactory.pipeline.runner import RunOutcome

BREAK = "SCHEMA_BREAK:order_total:DECIMAL→STRING"


def test_text_order_total_holds_the_certified_table_byte_for_byte(project: Project) -> None:
    project.partition(DAY1, orders(1500, seed=1))
    project.partition(DAY2, orders(1500, seed=2, first_id=10_000, day=DAY2))
    text = as_text(orders(2500, seed=3, first_id=20_000, day=DAY3))
    project.partition(
        DAY3, text.with_columns(("USD " + pl.col("order_total")).alias("order_total"))
    )
    sf = project.open()
    assert project.run(sf, DAY1).run.certified_version == 0
    good = project.run(sf, DAY2)
    assert good.run.certified_version == 1
    path = certified_path(sf)
    before, version = tree_digest(path), DeltaTable(path).version()

    held = project.run(sf, DAY3)

    assert tree_digest(path) == before
    assert DeltaTable(path).version() == version == 1
    run = held.run
    assert run.status is RunStatus.SUCCEEDED
    assert run.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert run.certified_version == 1
    state = sf.certified(URN)
    assert state.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert state.certified_version == 1
    assert state.last_run_id == run.run_id
    assert set(read_table(path)["dt"].unique()) == {DAY1, DAY2}

    bronze = gate(held, Stage.BRONZE, "G3_SCHEMA")
    assert bronze.result is GateResult.FAIL
    assert bronze.failure_signature == BREAK
    assert bronze.context["disposition"] == "HELD"
    cert = gate(held, Stage.GOLD, "CERTIFICATION")
    assert cert.result is GateResult.FAIL
    assert cert.failure_signature == BREAK
    stored = {(e.stage, e.gate): e for e in sf.store.list_evidence(run_id=run.run_id)}
    for ev in (
        bronze,
        cert,
        stored[(Stage.BRONZE, "G3_SCHEMA")],
        stored[(Stage.GOLD, "CERTIFICATION")],
    ):
        payload = ev.to_dict()
        assert payload["quarantine_table"] == run.quarantine_table
        assert payload["quarantine_table"].startswith("quarantine.orders_enriched_20260215_")
        assert payload["certified_view_status"] == "HELD_AT_PREVIOUS"
        assert payload["previous_certified_version"] == "v1"
        assert payload["failure_signature"] == BREAK
    # Gates after the break did not run; they say so instead of passing.
    assert gate(held, Stage.SILVER, "DQ").context["disposition"] == "NOT_REACHED"

    q = quarantine(sf, held)
    assert q.height == run.rows_quarantined == run.rows_read == 2500
    assert run.rows_written == 0
    assert set(q["_sf_reasons"]) == {BREAK}
    assert sorted(q["order_id"].cast(pl.Int64)) == list(range(20_000, 22_500))
    (record,) = [r for r in sf.store.list_quarantine(URN) if r.run_id == run.run_id]
    assert record.batch_level
    assert dict(record.reasons) == {BREAK: 2500}
    # Nothing of the held batch reached any layer table.
    for layer in ("bronze/orders", "silver/orders", "gold/orders"):
        table = read_table(str(sf.settings.lake_root / layer))
        assert DAY3 not in set(table["dt"])


RETYPE = """
import polars as pl


def to_double(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.with_columns(pl.col("order_total").cast(pl.Float64))


def add_flag(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.with_columns((pl.col("order_total") >= 200).alias("is_large"))
"""


def _gold_step_run(
    project: Project, *, level: str, mode: str, step: str
) -> tuple[RunOutcome, str, list[tuple[str, int, str]]]:
    project.write(dataset=dataset_doc(level=level), policy=policy_doc(mode=mode))
    project.write_module("steps", RETYPE)
    second = project.write_yaml("pipeline_step.yaml", pipeline_doc(gold=[{"python": step}]))
    project.partition(DAY1, orders(1200, seed=1))
    project.partition(DAY2, orders(1200, seed=2, first_id=5000, day=DAY2))
    sf = project.open()
    first = project.run(sf, DAY1)
    assert first.run.certification_status is CertificationStatus.CERTIFIED
    path = certified_path(sf)
    before = tree_digest(path)
    outcome = sf.run(second, {"dt": DAY2})
    assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
    return outcome, path, before


def test_gold_type_change_is_held_even_at_g0(project: Project) -> None:
    outcome, path, before = _gold_step_run(
        project, level="G0", mode="compatible", step="steps:to_double"
    )
    ev = gate(outcome, Stage.GOLD, "G3_SCHEMA")
    assert ev.result is GateResult.FAIL
    assert ev.failure_signature == "SCHEMA_BREAK:order_total:DECIMAL→DOUBLE"
    assert ev.context["disposition"] == "HELD"
    assert outcome.run.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert tree_digest(path) == before
    assert read_table(path)["order_total"].dtype == pl.Decimal(18, 2)
    assert outcome.alerts == []  # G0 records, it does not alert


def test_gold_added_field_in_compatible_mode_warns_and_certifies(project: Project) -> None:
    outcome, path, _ = _gold_step_run(project, level="G3", mode="compatible", step="steps:add_flag")
    ev = gate(outcome, Stage.GOLD, "G3_SCHEMA")
    assert ev.result is GateResult.WARN
    assert ev.failure_signature == "FIELD_ADDED:is_large"
    assert ev.context["disposition"] == "WARNING_ONLY"
    assert outcome.run.certification_status is CertificationStatus.CERTIFIED
    assert outcome.run.certified_version == 1
    table = read_table(path)
    assert table.filter(pl.col("dt") == DAY2)["is_large"].null_count() == 0
    assert table.filter(pl.col("dt") == DAY1)["is_large"].null_count() == 1200
    assert table.height == 2400


@pytest.mark.parametrize("level", ["G0", "G3"])
def test_gold_added_field_in_strict_mode_is_held(project: Project, level: str) -> None:
    outcome, path, before = _gold_step_run(
        project, level=level, mode="strict", step="steps:add_flag"
    )
    ev = gate(outcome, Stage.GOLD, "G3_SCHEMA")
    assert ev.result is GateResult.FAIL
    assert ev.failure_signature == "UNEXPECTED_FIELD:is_large"
    assert outcome.run.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert tree_digest(path) == before


@pytest.mark.parametrize("chunk_size", [1_000, 2_000])
def test_a_single_bad_value_is_a_row_failure_whatever_the_chunk_size(
    project: Project, chunk_size: int
) -> None:
    # The last chunk (of 1,000) holds one row, and its order_total does not cast: the run,
    # not the chunk, decides whether the column arrived as text.
    source = as_text(orders(1_001, seed=31)).with_columns(
        pl.when(pl.int_range(pl.len()) == 1_000)
        .then(pl.lit("abc"))
        .otherwise(pl.col("order_total"))
        .alias("order_total")
    )
    project.write(pipeline=pipeline_doc(chunk_size=chunk_size))
    project.partition(DAY1, source)
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.certification_status is CertificationStatus.CERTIFIED
    assert outcome.run.rows_quarantined == 1
    assert outcome.run.rows_written == 1_000
    assert gate(outcome, Stage.BRONZE, "G3_SCHEMA").failure_signature == (
        "TYPE_MISMATCH:order_total:DECIMAL"
    )


def test_json_numbers_meet_a_strict_decimal_declaration(project: Project) -> None:
    # JSON has no decimal type: a strict DECIMAL column arrives as DOUBLE and is cast.
    project.write(
        policy=policy_doc(mode="strict"), pipeline=pipeline_doc(fmt="json", chunk_size=1_000)
    )
    project.partition(DAY1, orders(1_200, seed=51), fmt="ndjson")
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.certification_status is CertificationStatus.CERTIFIED, [
        e.failure_signature for e in outcome.evidence if e.failure_signature
    ]
    assert outcome.run.rows_written == 1_200
