"""``signalfactory lineage ingest|upstream|downstream|columns`` on a generated Airflow DAG run."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumption.harness import Result, sf, sf_inproc, squash
from knowledge.ol_factory import (
    ENRICHED,
    RAW_ORDERS,
    RAW_PAYMENTS,
    REFUNDS,
    REPORT,
    URN,
    dag_events,
    ndjson,
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def cli(home: Path, *args: str | Path) -> Result:
    return sf_inproc("lineage", *args, home=home)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def ingested(home: Path, tmp_path: Path) -> Path:
    _, events = dag_events()
    source = write(tmp_path / "dag.ndjson", ndjson(events))
    report = cli(home, "ingest", source, "--json").expect(0).json()
    assert (report["events"], report["new_events"], report["rejected"]) == (10, 10, 0)
    assert report["ok"] is True
    return source


def test_reingest_reports_duplicates(home: Path, ingested: Path) -> None:
    again = cli(home, "ingest", ingested, "--json").expect(0).json()
    assert (again["new_events"], again["duplicates"], again["lifecycle_events"]) == (0, 10, 0)
    text = cli(home, "ingest", ingested).expect(0).stdout
    assert squash("0 new, 10 already ingested") in squash(text)


def test_bad_lines_exit_1_naming_file_and_line(home: Path, tmp_path: Path) -> None:
    _, events = dag_events()
    lines = ndjson(events[:2])
    lines.insert(1, '{"eventType": "START"}')
    source = write(tmp_path / "bad.ndjson", lines)
    result = cli(home, "ingest", source).expect(1)
    assert squash(f"{source}:2: missing eventTime") in squash(result.stdout)
    report = cli(home, "ingest", source, "--json").expect(1).json()
    assert (report["rejected"], report["duplicates"]) == (1, 2)


def test_unreadable_file_exits_2(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.ndjson"
    cli(home, "ingest", missing).expect(2).assert_one_paragraph_error(str(missing), "NDJSON")


def test_upstream_and_downstream_as_json_and_tables(home: Path, ingested: Path) -> None:
    up = cli(home, "upstream", REPORT, "--depth", "2", "--json").expect(0).json()
    assert up["node"] == REPORT
    assert [(h["node"], h["depth"]) for h in up["hops"]] == [
        (ENRICHED, 1),
        (RAW_ORDERS, 2),
        (RAW_PAYMENTS, 2),
    ]
    assert up["hops"][0]["jobs"] == ["job:airflow:daily_orders.publish_report"]
    down = cli(home, "downstream", URN, "--json").expect(0).json()
    assert down["node"] == ENRICHED
    assert [h["node"] for h in down["hops"]] == [REPORT]
    table = cli(home, "upstream", URN).expect(0).stdout
    assert "raw/payments" in table
    assert "Upstream of" in table


def test_unknown_node_exits_2_with_close_matches(home: Path, ingested: Path) -> None:
    result = cli(home, "upstream", "dataset:s3://lake:raw/payment").expect(2)
    result.assert_one_paragraph_error(RAW_PAYMENTS, "signalfactory lineage ingest")


def test_columns(home: Path, ingested: Path) -> None:
    cols = cli(home, "columns", URN, "--json").expect(0).json()["columns"]
    assert {(c["field"], c["input_dataset"], c["input_field"]) for c in cols} == {
        ("order_total", RAW_ORDERS, "amount"),
        ("order_total", RAW_PAYMENTS, "paid"),
        ("customer_id", RAW_ORDERS, "customer_id"),
    }
    assert "order_total" in cli(home, "columns", URN).expect(0).stdout


def test_console_script_end_to_end(home: Path, ingested: Path) -> None:
    result = sf("lineage", "downstream", RAW_ORDERS, "--json", home=home).expect(0)
    hops = {h["node"]: h["depth"] for h in result.json()["hops"]}
    assert hops == {REFUNDS: 1, ENRICHED: 1, REPORT: 2}
