"""Schema drift signals (O4) from real pipeline runs into a real store and Delta lake."""

from __future__ import annotations

import polars as pl

from factories import (
    DAY1,
    DAY2,
    DAY3,
    Project,
    as_text,
    dataset_doc,
    day_offset,
    orders,
    pipeline_doc,
    policy_doc,
    set_rows,
)
from processing.pipelines import drift, run_rolling
from signalfactory.core.observability import Severity, SignalState
from signalfactory.core.records import CertificationStatus, RunStatus
from signalfactory.processing.signals.context import EvaluationContext
from signalfactory.processing.signals.drift import evaluate_drift

DAY4 = day_offset(DAY3, 1)
DAY5 = day_offset(DAY3, 2)
FLASH = "UNKNOWN_ENUM:order_type:FLASH_SALE"


def _clean(project: Project, *days: str) -> None:
    for i, day in enumerate(days):
        project.partition(day, orders(1000, seed=i + 1, first_id=100_000 * (i + 1), day=day))


def _flash(day: str, *, seed: int, first_id: int) -> pl.DataFrame:
    return set_rows(
        orders(1000, seed=seed, first_id=first_id, day=day), range(40), order_type="FLASH_SALE"
    )


def test_a_new_enum_value_under_an_accepted_values_check(project: Project) -> None:
    _clean(project, DAY1, DAY2, DAY3)
    project.partition(DAY4, _flash(DAY4, seed=9, first_id=900_000))
    sf = project.open()
    for day in (DAY1, DAY2, DAY3):
        project.run(sf, day)
        assert set(drift(sf)) == {"OK"}, f"false positive after {day}"
    clean_end = sf.store.list_runs()[0].finished_at
    held = project.run(sf, DAY4)
    assert held.run.rows_quarantined == 40

    found = drift(sf)
    assert set(found) == {FLASH}
    signal = found[FLASH]
    assert signal.state is SignalState.BREACH
    assert signal.severity is Severity.WARNING
    assert signal.run_id == held.run.run_id
    assert signal.partition == f"dt={DAY4}"
    assert signal.details["rows"] == 40
    assert "silver DQ" in signal.details["sources"]
    assert held.run.run_id in signal.summary
    assert "FLASH_SALE" in signal.summary
    assert "order_type" in signal.summary
    # A later run that failed before any gate ran tells nothing: the drift stays.
    failed = project.run(sf, DAY5)
    assert failed.run.status is RunStatus.FAILED
    assert set(drift(sf)) == {FLASH}
    # Evaluated as of the end of the clean days, the later runs are not seen.
    assert clean_end is not None
    assert set(drift(sf, clean_end)) == {"OK"}


def test_a_new_enum_value_no_check_guards_is_found_by_the_baseline(project: Project) -> None:
    only_unique = [{"check": "unique", "column": "order_id"}]
    project.write(policy=policy_doc(dq=only_unique))
    _clean(project, DAY1, DAY2, DAY3)
    project.partition(DAY4, _flash(DAY4, seed=9, first_id=900_000))
    project.partition(DAY5, orders(1000, seed=10, first_id=950_000, day=DAY5))
    sf = project.open()
    for day in (DAY1, DAY2, DAY3):
        run_rolling(project, sf, day)
        assert set(drift(sf)) == {"OK"}, f"false positive after {day}"
    flash = run_rolling(project, sf, DAY4)
    assert flash.run.certification_status is CertificationStatus.CERTIFIED
    assert flash.run.rows_quarantined == 0  # nothing stopped the value: the baseline sees it

    found = drift(sf)
    assert set(found) == {FLASH}
    assert found[FLASH].details["sources"] == ["baseline v4"]
    assert found[FLASH].run_id == flash.run.run_id

    run_rolling(project, sf, DAY5)  # FLASH_SALE is part of the baseline now
    assert set(drift(sf)) == {"OK"}


def test_a_retyped_source_column_is_a_critical_schema_break(project: Project) -> None:
    _clean(project, DAY1, DAY2)
    text = as_text(orders(1000, seed=3, first_id=300_000, day=DAY3))
    project.partition(
        DAY3, text.with_columns(("USD " + pl.col("order_total")).alias("order_total"))
    )
    sf = project.open()
    project.run(sf, DAY1)
    project.run(sf, DAY2)
    assert set(drift(sf)) == {"OK"}
    held = project.run(sf, DAY3)
    sig = "SCHEMA_BREAK:order_total:DECIMAL→STRING"
    found = drift(sf)
    assert set(found) == {sig}
    assert found[sig].severity is Severity.CRITICAL
    assert found[sig].details["sources"] == ["bronze G3_SCHEMA"]
    assert "HELD_AT_PREVIOUS" in found[sig].summary
    assert held.run.run_id in found[sig].summary


STEPS = """
import polars as pl


def to_double(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.with_columns(pl.col("order_total").cast(pl.Float64))


def add_flag(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.with_columns((pl.col("order_total") >= 200).alias("is_large"))
"""


def _gold_step(project: Project, step: str, *, mode: str = "compatible") -> dict[str, object]:
    project.write(dataset=dataset_doc(level="G3"), policy=policy_doc(mode=mode))
    project.write_module("steps", STEPS)
    second = project.write_yaml("pipeline_step.yaml", pipeline_doc(gold=[{"python": step}]))
    _clean(project, DAY1, DAY2)
    sf = project.open()
    project.run(sf, DAY1)
    sf.run(second, {"dt": DAY2})
    return dict(drift(sf))


def test_a_gold_step_that_retypes_a_column_is_a_critical_schema_break(project: Project) -> None:
    found = _gold_step(project, "steps:to_double")
    sig = "SCHEMA_BREAK:order_total:DECIMAL→DOUBLE"
    assert set(found) == {sig}
    signal = found[sig]
    assert signal.severity is Severity.CRITICAL
    assert signal.details["sources"] == ["gold G3_SCHEMA"]


def test_an_added_column_in_compatible_mode_is_a_warning(project: Project) -> None:
    found = _gold_step(project, "steps:add_flag")
    assert set(found) == {"FIELD_ADDED:is_large"}
    assert found["FIELD_ADDED:is_large"].severity is Severity.WARNING


def test_an_added_column_in_strict_mode_is_named_the_same(project: Project) -> None:
    found = _gold_step(project, "steps:add_flag", mode="strict")
    assert set(found) == {"FIELD_ADDED:is_large"}


def test_removed_fields_are_critical_only_when_required(project: Project) -> None:
    _clean(project, DAY1)
    project.partition(DAY2, orders(1000, seed=2, first_id=200_000, day=DAY2).drop("customer_id"))
    project.partition(DAY3, orders(1000, seed=3, first_id=300_000, day=DAY3).drop("country"))
    sf = project.open()
    project.run(sf, DAY1)
    project.run(sf, DAY2)
    found = drift(sf)
    assert set(found) == {"FIELD_REMOVED:customer_id"}
    assert found["FIELD_REMOVED:customer_id"].severity is Severity.CRITICAL
    project.run(sf, DAY3)
    found = drift(sf)
    assert set(found) == {"FIELD_REMOVED:country"}
    assert found["FIELD_REMOVED:country"].severity is Severity.WARNING


def test_a_source_field_unknown_to_the_baseline_is_added_at_read(project: Project) -> None:
    _clean(project, DAY1, DAY2)
    extra = orders(1000, seed=3, first_id=300_000, day=DAY3).with_columns(
        pl.lit("SPRING").alias("coupon")
    )
    project.partition(DAY3, extra)
    sf = project.open()
    run_rolling(project, sf, DAY1)
    run_rolling(project, sf, DAY2)
    assert set(drift(sf)) == {"OK"}
    run_rolling(project, sf, DAY3)
    found = drift(sf)
    assert set(found) == {"FIELD_ADDED:coupon"}
    # Seen at read, at write (against the certified table) and in the rolled baseline.
    assert found["FIELD_ADDED:coupon"].details["sources"] == [
        "bronze G3_SCHEMA",
        "gold G3_SCHEMA",
        "baseline v3",
    ]
    assert found["FIELD_ADDED:coupon"].severity is Severity.WARNING


def test_no_runs_no_signal(project: Project) -> None:
    sf = project.open()
    ctx = EvaluationContext(store=sf.store, at=sf.store.list_datasets()[0].registered_at,
                            datasets=sf.store.list_datasets())  # fmt: skip
    assert evaluate_drift(ctx) == []
