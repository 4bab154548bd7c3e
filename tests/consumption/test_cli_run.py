"""``signalfactory run --json`` for the three demo days, ``status``/``runs`` from other
processes, idempotent re-runs, and PII that never reaches the terminal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from consumption.harness import (
    DAY1,
    DAY2,
    DAY3,
    URN,
    Result,
    Workspace,
    make_workspace,
)
from signalfactory.consumption.demo import generate_orders, write_day

RUN_KEYS = (
    "run_id",
    "pipeline",
    "dataset_urn",
    "partition",
    "status",
    "certification_status",
    "certified_version",
    "rows_read",
    "rows_written",
    "rows_quarantined",
    "quarantine_table",
    "stages",
    "evidence",
    "error",
)
STAGE_NAMES = ["plan", "stage", "process", "write", "verify", "finalize"]
EVIDENCE_KEYS = ("stage", "gate", "result", "failure_signature")


@dataclass(frozen=True)
class Ran:
    ws: Workspace
    results: dict[str, Result]

    def out(self, day: str) -> dict[str, Any]:
        data = self.results[day].json()
        assert isinstance(data, dict)
        return data


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """A registered home; the three demo days run in order by the real console script."""
    ws = make_workspace(tmp_path_factory.mktemp("run") / "project")
    results = {}
    for day in (DAY1, DAY2, DAY3):
        results[day] = ws.sf("run", ws.pipeline, "--partition", f"dt={day}", "--json")
    return Ran(ws, results)


def _check_shape(data: dict[str, Any]) -> None:
    for key in RUN_KEYS:
        assert key in data, key
    assert data["pipeline"] == "orders_daily"
    assert data["dataset_urn"] == URN
    assert [s["name"] for s in data["stages"]] == STAGE_NAMES
    for stage in data["stages"]:
        assert stage["started_at"] <= stage["finished_at"]
        assert stage["duration_s"] >= 0
    assert data["evidence"]
    for e in data["evidence"]:
        for key in EVIDENCE_KEYS:
            assert key in e, key
    gates = [(e["stage"], e["gate"]) for e in data["evidence"]]
    assert ("bronze", "G1_RESOLUTION") in gates
    assert ("gold", "CERTIFICATION") in gates


@pytest.mark.parametrize("day", [DAY1, DAY2, DAY3])
def test_run_json_is_one_object_with_the_documented_fields(ran: Ran, day: str) -> None:
    result = ran.results[day]
    assert result.stdout.lstrip().startswith("{")
    data = ran.out(day)  # json.loads of the whole stdout: nothing else is printed
    _check_shape(data)
    assert data["partition"] == {"dt": day}
    assert data["reused"] is False
    # stderr carries only structured log lines (the quality alert of a held run)
    for line in result.stderr.splitlines():
        assert isinstance(json.loads(line), dict), result.describe()


def test_clean_day_certifies_and_exits_0(ran: Ran) -> None:
    ran.results[DAY1].expect(0)
    data = ran.out(DAY1)
    assert data["status"] == "SUCCEEDED"
    assert data["certification_status"] == "CERTIFIED"
    assert data["certified_version"] == 0
    assert (data["rows_read"], data["rows_written"], data["rows_quarantined"]) == (2500, 2500, 0)
    assert data["quarantine_table"] is None
    assert data["error"] is None
    assert {e["result"] for e in data["evidence"]} == {"PASS"}


def test_few_bad_rows_quarantine_and_exit_0(ran: Ran) -> None:
    ran.results[DAY2].expect(0)
    data = ran.out(DAY2)
    assert data["certification_status"] == "CERTIFIED"
    assert data["certified_version"] == 1
    assert (data["rows_read"], data["rows_written"], data["rows_quarantined"]) == (2501, 2493, 8)
    assert data["quarantine_table"].startswith("quarantine.orders_enriched_20260214_")
    warned = {e["gate"] for e in data["evidence"] if e["result"] == "WARN"}
    assert warned == {"G3_SCHEMA", "G4_CONTRACT", "DQ"}
    assert data["error"] is None


def test_schema_break_holds_certification_and_exits_3(ran: Ran) -> None:
    ran.results[DAY3].expect(3)
    data = ran.out(DAY3)
    assert data["status"] == "SUCCEEDED"
    assert data["certification_status"] == "HELD_AT_PREVIOUS"
    assert data["certified_version"] == 1
    assert (data["rows_written"], data["rows_quarantined"]) == (0, 2500)
    failed = {(e["stage"], e["gate"]): e for e in data["evidence"] if e["result"] == "FAIL"}
    assert set(failed) == {("bronze", "G3_SCHEMA"), ("gold", "CERTIFICATION")}
    for e in failed.values():
        assert e["failure_signature"] == "SCHEMA_BREAK:order_total:DECIMAL→STRING"


@pytest.fixture(scope="module")
def followups(ran: Ran) -> dict[str, Result]:
    """Other processes than the ones that ran: the test process itself (CliRunner), and the
    console script once more for a re-run."""
    ws = ran.ws
    ids = {day: ran.out(day)["run_id"] for day in (DAY1, DAY2, DAY3)}
    found = {f"status {day}": ws.inproc("status", ids[day], "--json") for day in ids}
    found["rerun text"] = ws.sf("run", ws.pipeline, "--partition", f"dt={DAY2}")
    found["rerun json"] = ws.inproc("run", ws.pipeline, "--partition", f"dt={DAY3}", "--json")
    found["runs"] = ws.inproc("runs", "--dataset", URN, "--json")
    return found


def _projection(evidence: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    rows = [{k: e[k] for k in keys} for e in evidence]
    return sorted(rows, key=lambda e: (e["stage"], e["gate"]))


@pytest.mark.parametrize("day", [DAY1, DAY2, DAY3])
def test_status_from_another_process_matches_the_run(
    ran: Ran, followups: dict[str, Result], day: str
) -> None:
    run_out = ran.out(day)
    status = followups[f"status {day}"].expect(0).json()
    for key, value in run_out.items():
        if key in ("evidence", "alerts", "reused"):
            continue
        assert status[key] == value, key
    keys = list(run_out["evidence"][0])
    assert _projection(status["evidence"], keys) == _projection(run_out["evidence"], keys)
    assert {e["run_id"] for e in status["evidence"]} == {run_out["run_id"]}


def test_rerun_reuses_the_run_and_its_exit_code(ran: Ran, followups: dict[str, Result]) -> None:
    again = followups["rerun json"].expect(ran.results[DAY3].exit_code).json()
    assert again["reused"] is True
    assert again["run_id"] == ran.out(DAY3)["run_id"]
    assert again["certification_status"] == "HELD_AT_PREVIOUS"
    text = followups["rerun text"].expect(ran.results[DAY2].exit_code)
    assert ran.out(DAY2)["run_id"] in text.stdout
    assert "nothing written" in text.stdout


def test_runs_filters_by_dataset(ran: Ran, followups: dict[str, Result]) -> None:
    listed = followups["runs"].expect(0).json()
    assert {r["dataset_urn"] for r in listed} == {URN}
    assert {r["run_id"] for r in listed} >= {ran.out(d)["run_id"] for d in (DAY1, DAY2, DAY3)}
    # the re-runs created no run rows
    assert len(listed) == 3
    other = ran.ws.inproc("runs", "--dataset", "ds://curated/other", "--json").expect(0)
    assert other.json() == []
    everything = ran.ws.inproc("runs", "--json").expect(0).json()
    assert len(everything) == 3


def test_no_raw_pii_even_when_pii_lands_in_checked_columns(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """PII in columns the gates quote (an enum value, a key) must not leak via signatures.

    Every output is scanned by the harness; here the values sit where DQ and contract
    failures would echo them: order_type (accepted_values), customer_id, country.
    """
    ws = make_workspace(tmp_path_factory.mktemp("pii") / "project")
    day = date(2026, 3, 1)
    rows = generate_orders(day, 300, seed=11, first_id=1)
    write_day(
        ws.root / "raw" / "orders",
        day,
        rows,
        extra_lines=[
            "900001,C000001,10.00,user77@example.com,user88@example.com,555-222-3333,"
            "2026-03-01T01:00:00Z,US",
            "900002,C000001,10.00,555-777-8888,user88@example.com,555-222-3333,"
            "2026-03-01T01:00:00Z,US",
            "900003,user66@example.com,-1.00,STANDARD,user88@example.com,555-222-3333,"
            "2026-03-01T01:00:00Z,555-123-9999",
            "user55@example.com,555-444-1111",
        ],
    )
    result = ws.sf("run", ws.pipeline, "--partition", "dt=2026-03-01", "--json").expect(0)
    data = result.json()
    assert data["rows_quarantined"] == 4
    signatures = {s for e in data["evidence"] for s in e.get("failure_signatures") or []}
    assert "UNKNOWN_ENUM:order_type:<EMAIL>" in signatures
    assert "UNKNOWN_ENUM:order_type:<PHONE>" in signatures
    # The same run through every other view; each output is scanned by the harness.
    ws.inproc("run", ws.pipeline, "--partition", "dt=2026-03-01").expect(0)
    ws.inproc("status", data["run_id"], "--json").expect(0)
    ws.inproc("status", data["run_id"]).expect(0)
    ws.inproc("evidence", "--run", data["run_id"], "--json").expect(0)
    ws.inproc("evidence", "--run", data["run_id"]).expect(0)
    quarantine = ws.inproc("quarantine", "list", "--json").expect(0).json()
    ws.inproc("quarantine", "list").expect(0)
    reasons = {r for q in quarantine for r in q["reasons"]}
    assert not any(r.startswith("tok_") for r in reasons), reasons


def test_quarantine_table_path_is_a_local_directory(ran: Ran) -> None:
    listed = ran.ws.inproc("quarantine", "list", "--dataset", URN, "--json").expect(0).json()
    assert {q["run_id"] for q in listed} == {ran.out(DAY2)["run_id"], ran.out(DAY3)["run_id"]}
    for q in listed:
        assert Path(q["path"]).is_dir()
