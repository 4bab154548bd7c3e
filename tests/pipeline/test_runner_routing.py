"""Row routing: each defect is quarantined with exactly its reasons; the rest is certified.

One CSV partition of 2,500 orders (chunks of 1,000) carries known defects; a silver SQL step
drops the FR orders, which the reconciliation counts as dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from factories import (
    DAY1,
    URN,
    Project,
    certified_path,
    gate,
    orders,
    pipeline_doc,
    quarantine,
    read_table,
    reasons,
    set_rows,
)
from signalfactory.api import SignalFactory
from signalfactory.core.records import CertificationStatus, GateResult, RunStatus, Stage
from signalfactory.pipeline.runner import RunOutcome

NEGATIVE = (7, 70)  # row positions; order_id is position + 1
NULL_CUSTOMER = (99,)
FLASH_SALE = (42,)
BOTH = (300,)  # negative total and null customer_id: two reasons
ORIGINAL, DUPLICATE = 9, 2100  # chunk 0 and chunk 2 (chunk_size 1000)
MALFORMED = "99999,C000001,10.00,STANDARD,broken-line"
NEG, NULL = "INVARIANT:order_total > 0", "NULL_CONSTRAINT:customer_id"
EXPECTED_REASONS = {
    "8": {NEG},
    "71": {NEG},
    "100": {NULL},
    "43": {"UNKNOWN_ENUM:order_type:FLASH_SALE"},
    "301": {NULL, NEG},
    "10": {"DUPLICATE_KEY:order_id"},
}
BAD_POSITIONS = {*NEGATIVE, *NULL_CUSTOMER, *FLASH_SALE, *BOTH, DUPLICATE}


@dataclass
class Routed:
    sf: SignalFactory
    outcome: RunOutcome
    source: pl.DataFrame


@pytest.fixture
def routed(project: Project) -> Routed:
    df = orders(2500, seed=11)
    # Every row the test follows survives the silver filter (country <> 'FR').
    df = set_rows(df, [*BAD_POSITIONS, ORIGINAL], country="US")
    df = set_rows(df, [*NEGATIVE, *BOTH], order_total=-12.0)
    df = set_rows(df, [*NULL_CUSTOMER, *BOTH], customer_id=None)
    df = set_rows(df, FLASH_SALE, order_type="FLASH_SALE")
    df = set_rows(df, [DUPLICATE], order_id=ORIGINAL + 1, customer_id="CDUP")
    project.partition(DAY1, df, extra_lines=[MALFORMED])
    project.write(
        pipeline=pipeline_doc(silver=[{"sql": "SELECT * FROM batch WHERE country <> 'FR'"}])
    )
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
    return Routed(sf, outcome, df)


def test_each_defect_is_quarantined_with_exactly_its_reasons(routed: Routed) -> None:
    q = quarantine(routed.sf, routed.outcome)
    rows = q.filter(pl.col("_sf_raw").is_null())
    assert reasons(rows) == EXPECTED_REASONS
    assert rows.height == len(EXPECTED_REASONS)  # one row per defect, none twice
    dup = rows.filter(pl.col("order_id") == str(ORIGINAL + 1))
    assert dup["customer_id"].to_list() == ["CDUP"]  # the later occurrence, not the first
    assert dup["_sf_row"].to_list() == [DUPLICATE]

    malformed = q.filter(pl.col("_sf_raw").is_not_null())
    assert malformed["_sf_raw"].to_list() == [MALFORMED]
    assert malformed["_sf_reasons"].to_list() == ["MALFORMED_ROW:expected 8 fields, got 5"]
    assert malformed["_sf_stage"].to_list() == ["bronze"]
    assert q.height == routed.outcome.run.rows_quarantined == 7


def test_quarantine_record_counts_every_reason(routed: Routed) -> None:
    (record,) = routed.sf.store.list_quarantine(URN)
    assert record.table_name == routed.outcome.run.quarantine_table
    assert record.table_name.startswith("quarantine.orders_enriched_20260213_run_")
    assert not record.batch_level
    assert record.rows == 7
    assert dict(record.reasons) == {
        NEG: 3,
        NULL: 2,
        "UNKNOWN_ENUM:order_type:FLASH_SALE": 1,
        "DUPLICATE_KEY:order_id": 1,
        "MALFORMED_ROW:expected 8 fields, got 5": 1,
    }


def test_valid_rows_are_certified_and_rows_reconcile(routed: Routed) -> None:
    run = routed.outcome.run
    source = routed.source.with_row_index("pos")
    kept = source.filter((pl.col("country") != "FR") & ~pl.col("pos").is_in(list(BAD_POSITIONS)))
    dropped = source.filter(pl.col("country") == "FR").height
    assert dropped > 100  # the filter really drops rows

    certified = read_table(certified_path(routed.sf)).sort("order_id")
    assert certified["order_id"].to_list() == kept["order_id"].sort().to_list()
    original = certified.filter(pl.col("order_id") == ORIGINAL + 1)
    assert original["customer_id"].to_list() == [routed.source["customer_id"][ORIGINAL]]

    assert run.certification_status is CertificationStatus.CERTIFIED
    assert run.rows_read == 2501  # 2,500 parsed rows and the malformed line
    assert run.rows_written == certified.height == kept.height
    assert run.rows_quarantined == 7
    assert run.rows_dropped == dropped
    assert run.rows_read == run.rows_written + run.rows_quarantined + run.rows_dropped
    assert run.reconciliation["balanced"] is True
    assert run.reconciliation["rows_dropped_by_steps"] == dropped


def test_gates_with_quarantined_rows_warn(routed: Routed) -> None:
    out = routed.outcome
    table = out.run.quarantine_table
    expected = {
        (Stage.BRONZE, "G3_SCHEMA"): {"MALFORMED_ROW": 1},
        (Stage.SILVER, "G4_CONTRACT"): {NEG: 3, NULL: 2},
        (Stage.SILVER, "DQ"): {
            "DUPLICATE_KEY:order_id": 1,
            "UNKNOWN_ENUM:order_type:FLASH_SALE": 1,
        },
    }
    for (stage, name), failures in expected.items():
        ev = gate(out, stage, name)
        assert ev.result is GateResult.WARN, (stage, name)
        assert ev.context["disposition"] == "ROWS_QUARANTINED"
        assert ev.metrics["failures_by_signature"] == failures
        assert set(ev.failure_signatures) == set(failures)
        assert ev.to_dict()["quarantine_table"] == table
    assert gate(out, Stage.SILVER, "G4_CONTRACT").metrics["rows_failed"] == 4  # BOTH counts once
    for stage, name in ((Stage.SILVER, "G5_PII"), (Stage.GOLD, "G3_SCHEMA")):
        assert gate(out, stage, name).result is GateResult.PASS
    cert = gate(out, Stage.GOLD, "CERTIFICATION")
    assert cert.result is GateResult.PASS
    assert cert.context["disposition"] == "CERTIFIED"
    assert cert.metrics["rows_certified"] == out.run.rows_written


def test_certified_table_reads_the_same_in_deltalake_polars_and_duckdb(routed: Routed) -> None:
    path = certified_path(routed.sf)
    via_delta = pl.from_arrow(DeltaTable(path).to_pyarrow_table())
    via_polars = pl.read_delta(path)
    assert isinstance(via_delta, pl.DataFrame)
    assert via_delta.sort("order_id").equals(via_polars.sort("order_id"))

    con = duckdb.connect()
    try:
        con.register("certified", DeltaTable(path).to_pyarrow_dataset())
        total, distinct, failed = con.execute(
            "SELECT count(*), count(DISTINCT order_id), count(*) FILTER (WHERE "
            "order_total <= 0 OR customer_id IS NULL OR customer_id = 'CDUP' "
            "OR order_type NOT IN ('STANDARD', 'EXPRESS', 'PICKUP') "
            f"OR order_id IN ({', '.join(EXPECTED_REASONS.keys() - {'10'})})) FROM certified"
        ).fetchone()  # type: ignore[misc]
    finally:
        con.close()
    assert total == distinct == via_polars.height == routed.outcome.run.rows_written
    assert failed == 0


def test_certified_commit_carries_the_run_id(routed: Routed) -> None:
    table = DeltaTable(certified_path(routed.sf))
    assert table.version() == routed.outcome.run.certified_version == 0
    (commit,) = table.history()
    assert commit["signalfactory.run_id"] == routed.outcome.run.run_id
    assert commit["signalfactory.layer"] == "certified"
    assert commit["operationMetrics"]["num_added_rows"] == routed.outcome.run.rows_written


def test_system_columns_stay_out_of_certified_and_quarantine(routed: Routed) -> None:
    certified = read_table(certified_path(routed.sf))
    assert not [c for c in certified.columns if c.startswith("_sf_")]
    quarantined = quarantine(routed.sf, routed.outcome)
    assert not [c for c in quarantined.columns if c.startswith("_sf_dup_")]
    # …while the quarantine keeps what tracing needs.
    assert {"_sf_reasons", "_sf_stage", "_sf_row"} <= set(quarantined.columns)


def test_a_field_arrow_reads_across_lines_fails_the_run_with_the_lines(project: Project) -> None:
    # Each of the two lines holds two quotes, so the scan cuts the file at its line ends;
    # Arrow opens a quoted field only at a field's start ("US ... 6"), so it reads the two
    # lines as one record. The run fails naming the file, the lines and the fix.
    path = project.partition(DAY1, orders(50, seed=1))
    lines = path.read_text(encoding="utf-8").splitlines()
    first, second = lines[5].split(","), lines[6].split(",")
    first[1], first[-1] = f'{first[1][:3]}"{first[1][3:]}', f'"{first[-1]}'
    second[0], second[1] = f'{second[0]}"', f'{second[1][:3]}"{second[1][3:]}'
    lines[5], lines[6] = ",".join(first), ",".join(second)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outcome = project.run(project.open())
    assert outcome.run.status is RunStatus.FAILED
    assert outcome.run.error is not None
    assert "orders.csv: lines 2–51 hold 50 non-blank lines but read as 49 records" in (
        outcome.run.error
    )
    assert 'double its quotes ("a""b")' in outcome.run.error
