"""``signalfactory demo --scenario gates`` end to end, then the query commands on its home."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from consumption.harness import URN, Call, Result, run_cli, sf, sf_inproc

GATES = (
    "G1_RESOLUTION",
    "G2_IDENTITY",
    "G3_SCHEMA",
    "G4_CONTRACT",
    "G5_PII",
    "DQ",
    "G3_SCHEMA",
    "G4_CONTRACT",
    "CERTIFICATION",
)
STAGES = ("bronze",) * 3 + ("silver",) * 3 + ("gold",) * 3


@dataclass(frozen=True)
class Demo:
    directory: Path
    home: Path
    output: Result
    runs: Any
    evidence: Any
    quarantine: Any
    certified: Any


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    base = tmp_path_factory.mktemp("demo")
    directory = base / "orders-demo"
    # The demo keeps its own home under --dir; SIGNALFACTORY_HOME must not matter to it.
    output = sf(
        "demo", "--scenario", "gates", "--dir", directory, home=base / "unused-home", cwd=base
    )
    output.expect(0)
    home = directory / ".signalfactory"
    runs, evidence, quarantine, certified = run_cli(
        Call(["runs", "--json"], home),
        Call(["evidence", "--dataset", URN, "--json"], home),
        Call(["quarantine", "list", "--json"], home),
        Call(["certified", URN, "--json"], home),
    )
    return Demo(
        directory,
        home,
        output,
        runs.expect(0).json(),
        evidence.expect(0).json(),
        quarantine.expect(0).json(),
        certified.expect(0).json(),
    )


def test_demo_prints_three_days_and_hints(demo: Demo) -> None:
    out = demo.output.stdout
    for day in ("Day 1", "Day 2", "Day 3", "2026-02-13", "2026-02-14", "2026-02-15"):
        assert day in out
    assert "SCHEMA_BREAK:order_total:DECIMAL→STRING" in out
    assert "HELD_AT_PREVIOUS" in out
    assert "CERTIFIED" in out
    assert "Try next" in out
    assert f"SIGNALFACTORY_HOME={demo.home}" in out
    assert "signalfactory certified ds://curated/orders_enriched --json" in out
    assert "tok_" in out  # the closing line shows a token, never the address
    assert "***-***-" in out
    assert not demo.output.stderr.strip(), demo.output.describe()
    assert not (demo.directory.parent / "unused-home").exists()


def test_runs_lists_the_three_days(demo: Demo) -> None:
    assert len(demo.runs) == 3
    by_day = {r["partition"]["dt"]: r for r in demo.runs}
    assert sorted(by_day) == ["2026-02-13", "2026-02-14", "2026-02-15"]
    assert {r["status"] for r in demo.runs} == {"SUCCEEDED"}
    assert by_day["2026-02-13"]["certification_status"] == "CERTIFIED"
    assert by_day["2026-02-14"]["certification_status"] == "CERTIFIED"
    assert by_day["2026-02-15"]["certification_status"] == "HELD_AT_PREVIOUS"
    # newest first
    started = [r["started_at"] for r in demo.runs]
    assert started == sorted(started, reverse=True)


def test_evidence_has_every_gate_for_every_run(demo: Demo) -> None:
    assert {e["dataset_urn"] for e in demo.evidence} == {URN}
    per_run: dict[str, list[tuple[str, str]]] = {}
    for e in demo.evidence:
        per_run.setdefault(e["run_id"], []).append((e["stage"], e["gate"]))
    assert set(per_run) == {r["run_id"] for r in demo.runs}
    for gates in per_run.values():
        assert sorted(gates) == sorted(zip(STAGES, GATES, strict=True))
    held = next(r["run_id"] for r in demo.runs if r["partition"]["dt"] == "2026-02-15")
    schema = [
        e
        for e in demo.evidence
        if e["run_id"] == held and e["gate"] == "G3_SCHEMA" and e["stage"] == "bronze"
    ]
    assert [e["result"] for e in schema] == ["FAIL"]
    assert schema[0]["failure_signature"] == "SCHEMA_BREAK:order_total:DECIMAL→STRING"


def test_quarantine_lists_two_tables_that_exist(demo: Demo) -> None:
    assert len(demo.quarantine) == 2
    by_day = {q["partition"]["dt"]: q for q in demo.quarantine}
    assert sorted(by_day) == ["2026-02-14", "2026-02-15"]
    for q in demo.quarantine:
        assert Path(q["path"]).exists(), q
        assert q["table_name"].startswith("quarantine.")
        assert q["rows"] == DeltaTable(q["path"]).to_pyarrow_table().num_rows
    assert by_day["2026-02-14"]["batch_level"] is False
    assert by_day["2026-02-14"]["rows"] == 8
    assert by_day["2026-02-15"]["batch_level"] is True
    assert by_day["2026-02-15"]["reasons"] == {"SCHEMA_BREAK:order_total:DECIMAL→STRING": 2500}


def test_certified_points_at_a_delta_table(demo: Demo) -> None:
    state = demo.certified
    for key in (
        "dataset_urn",
        "certified_version",
        "last_certified_at",
        "certification_status",
        "path",
    ):
        assert key in state
    assert state["dataset_urn"] == URN
    assert state["certification_status"] == "HELD_AT_PREVIOUS"
    assert state["certified_version"] == 1
    assert state["last_certified_at"]
    table = DeltaTable(state["path"])
    assert table.version() == state["certified_version"]
    data = table.to_pyarrow_table(columns=["dt", "email", "phone"])
    assert data.num_rows == 2500 + 2493
    assert set(data.column("dt").to_pylist()) == {"2026-02-13", "2026-02-14"}
    assert all(v.startswith("tok_") for v in data.column("email").to_pylist())
    assert all(v.startswith("***-***-") for v in data.column("phone").to_pylist())


def test_table_views_of_the_demo_home(demo: Demo) -> None:
    """The human views (tables) of the same home; every output is PII- and traceback-checked."""
    runs = sf_inproc("runs", home=demo.home).expect(0)
    for r in demo.runs:
        assert r["run_id"] in runs.stdout
    evidence = sf_inproc("evidence", "--dataset", URN, home=demo.home).expect(0)
    assert "CERTIFICATION" in evidence.stdout
    quarantine = sf_inproc("quarantine", "list", home=demo.home).expect(0)
    assert "Quarantine" in quarantine.stdout
    assert "2,500" in quarantine.stdout
    certified = sf_inproc("certified", URN, home=demo.home).expect(0)
    assert "HELD_AT_PREVIOUS" in certified.stdout
    for r in demo.runs:
        status = sf_inproc("status", r["run_id"], home=demo.home).expect(0)
        assert r["run_id"] in status.stdout
