"""``signalfactory certified rollback``, ``maintain`` and ``report`` on the demo's three days.

Day 1 certifies v0, day 2 certifies v1 with 8 rows quarantined, day 3 is held (all rows
quarantined). Every call is checked by the harness for tracebacks and raw PII.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from consumption.harness import DAY1, DAY2, DAY3, URN, Workspace, make_workspace, run_cli
from factories import tree_digest
from signalfactory.knowledge import open_store

LAYERS = ("bronze", "silver", "gold", "certified")


@dataclass(frozen=True)
class Ran:
    ws: Workspace
    runs: dict[str, dict[str, Any]]


def run_days(ws: Workspace) -> dict[str, dict[str, Any]]:
    runs = {}
    for day, code in ((DAY1, 0), (DAY2, 0), (DAY3, 3)):
        result = ws.inproc("run", ws.pipeline, "--partition", f"dt={day}", "--json").expect(code)
        runs[day] = result.json()
    assert [runs[d]["certified_version"] for d in (DAY1, DAY2, DAY3)] == [0, 1, 1]
    return runs


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """Read-only tests share one home."""
    ws = make_workspace(tmp_path_factory.mktemp("ops") / "project")
    return Ran(ws, run_days(ws))


@pytest.fixture
def fresh(tmp_path: Path) -> Ran:
    """Tests that roll back or maintain get their own home."""
    ws = make_workspace(tmp_path / "project")
    return Ran(ws, run_days(ws))


def certified_path(ws: Workspace) -> str:
    path = ws.inproc("certified", URN, "--json").expect(0).json()["path"]
    assert isinstance(path, str)
    return path


def rows(path: str, version: int | None = None) -> pl.DataFrame:
    return pl.read_delta(path, version=version).sort("order_id")


# -- certified: the default stays, rollback is added -----------------------------------------


def test_certified_without_subcommand_is_unchanged(ran: Ran) -> None:
    ws = ran.ws
    state = ws.inproc("certified", URN, "--json").expect(0).json()
    assert state["certified_version"] == 1
    assert state["certification_status"] == "HELD_AT_PREVIOUS"
    assert ws.inproc("certified", "--json", URN).expect(0).json() == state
    assert "HELD_AT_PREVIOUS" in ws.inproc("certified", URN).expect(0).stdout
    assert "rollback" in ws.inproc("certified", "--help").expect(0).stdout
    ws.inproc("certified").expect(2).assert_one_paragraph_error("Missing argument", "dataset_urn")


def test_the_console_script_routes_certified_and_rollback(ran: Ran) -> None:
    ws = ran.ws
    shown, refused, helped = run_cli(
        ws.call("certified", URN, "--json"),
        ws.call("certified", "rollback", URN, "--to", "v7"),
        ws.call("certified", "rollback", "--help"),
    )
    assert shown.expect(0).json()["certified_version"] == 1
    refused.expect(2).assert_one_paragraph_error("no version v7", "v0, v1 (current: v1)")
    assert "--to" in helped.expect(0).stdout


def test_rollback_and_its_undo(fresh: Ran) -> None:
    ws = fresh.ws
    path = certified_path(ws)
    day1_only, both_days = rows(path, 0), rows(path, 1)

    back = ws.inproc("certified", "rollback", URN, "--to", "v0", "--actor", "ann", "--json")
    data = back.expect(0).json()
    assert (data["from_version"], data["to_version"], data["new_version"]) == (1, 0, 2)
    assert data["rows"] == 2500 == day1_only.height
    assert data["undo"] == "--to v1"
    assert data["certification"]["certified_version"] == 2
    assert data["certification"]["certification_status"] == "CERTIFIED"
    assert data["certification"]["last_run_id"] == fresh.runs[DAY3]["run_id"]
    assert ws.inproc("certified", URN, "--json").json() == data["certification"]
    assert rows(path).equals(day1_only)

    undo = ws.inproc("certified", "rollback", URN, "--to", "1", "--actor", "ann").expect(0)
    assert "v2 → v3" in undo.stdout
    assert "undo with: signalfactory certified rollback" in undo.stdout
    assert rows(path).equals(both_days)

    with open_store(f"sqlite:///{ws.home / 'signalfactory.db'}") as store:
        trail = [
            (t.from_status, t.to_status, t.reason, t.actor)
            for t in store.list_transitions(URN)
            if t.reason.startswith("rollback")
        ]
    assert trail == [("v1", "v2", "rollback to v0", "ann"), ("v2", "v3", "rollback to v1", "ann")]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--to", "banana"], ["'banana' is not a table version"]),
        (["--to", "v3"], ["no version v3", "v0, v1"]),
        (["--to", "1"], ["already certified at v1"]),
    ],
)
def test_rollback_errors_are_one_paragraph(ran: Ran, args: list[str], fragments: list[str]) -> None:
    result = ran.ws.inproc("certified", "rollback", URN, *args).expect(2)
    result.assert_one_paragraph_error(*fragments)


def test_rollback_of_an_unknown_dataset(ran: Ran) -> None:
    result = ran.ws.inproc("certified", "rollback", "ds://x/unknown", "--to", "0").expect(2)
    result.assert_one_paragraph_error("ds://x/unknown", "is not registered")


# -- maintain ---------------------------------------------------------------------------------


def test_maintain_keeps_certified_content_and_quarantine(fresh: Ran) -> None:
    ws = fresh.ws
    path = certified_path(ws)
    before = rows(path)
    quarantine = [q["path"] for q in ws.inproc("quarantine", "list", "--json").expect(0).json()]
    assert len(quarantine) == 2
    evidence = {q: tree_digest(q) for q in quarantine}

    dry = ws.inproc("maintain", URN, "--dry-run").expect(0)
    assert "dry run" in dry.stdout
    done = ws.inproc("maintain", URN, "--retention-hours", "0", "--json").expect(0).json()

    assert done["retention_hours"] == 0
    assert done["certified_version"] == 1
    tables = {t["layer"]: t for t in done["tables"]}
    for layer in LAYERS:
        assert tables[layer]["skipped"] is None
        assert tables[layer]["before"]["active_files"] >= tables[layer]["after"]["active_files"]
    assert 1 in tables["certified"]["kept_versions"]
    skipped = [t for t in done["tables"] if t["layer"].startswith("quarantine:")]
    assert sorted(t["path"] for t in skipped) == sorted(quarantine)
    assert all("evidence of run" in t["skipped"] for t in skipped)
    assert {q: tree_digest(q) for q in quarantine} == evidence
    assert rows(path).equals(before)
    assert rows(path, 1).equals(before)
    assert DeltaTable(path).version() >= 1

    human = ws.inproc("maintain", URN).expect(0)
    assert "certified" in human.stdout
    assert "retention 168 h" in human.stdout


def test_maintain_usage_errors(ran: Ran) -> None:
    ws = ran.ws
    ws.inproc("maintain", "ds://x/unknown").expect(2).assert_one_paragraph_error(
        "ds://x/unknown", "is not registered"
    )
    ws.inproc("maintain", URN, "--retention-hours", "-1").expect(2)


# -- report -----------------------------------------------------------------------------------


def added_bytes(path: str, version: int) -> int:
    """Sizes of the files commit ``version`` added, straight from the Delta log."""
    now = {a["path"]: a["size_bytes"] for a in _actions(path, version)}
    before = {a["path"] for a in _actions(path, version - 1)} if version else set()
    return sum(size for p, size in now.items() if p not in before)


def _actions(path: str, version: int) -> list[dict[str, Any]]:
    table = pa.table(DeltaTable(path, version=version).get_add_actions(flatten=True))
    return table.select(["path", "size_bytes"]).to_pylist()


def test_report_matches_the_run_record_and_the_delta_log(ran: Ran) -> None:
    ws = ran.ws
    run = ran.runs[DAY2]
    report = ws.inproc("report", run["run_id"], "--json").expect(0).json()
    status = ws.inproc("status", run["run_id"], "--json").expect(0).json()

    assert report["run_id"] == run["run_id"]
    assert (
        report["rows"]
        == {
            "read": status["rows_read"],
            "certified": status["rows_written"],
            "quarantined": status["rows_quarantined"],
            "dropped": status["rows_dropped"],
        }
        == {"read": 2501, "certified": 2493, "quarantined": 8, "dropped": 0}
    )
    assert report["stages"] == status["stages"]
    assert report["reconciliation"] == status["reconciliation"]
    assert {(e["stage"], e["gate"], e["result"]) for e in report["evidence"]} == {
        (e["stage"], e["gate"], e["result"]) for e in status["evidence"]
    }

    events = ws.inproc(
        "events", "--run", run["run_id"], "--type", "DatasetWriteCommitted", "--json"
    )
    committed = {e["layer"]: e for e in events.expect(0).json()}
    # A quarantine commit writes no dataset: it has no DatasetWriteCommitted event…
    assert set(committed) == set(LAYERS)
    assert [e["layer"] for e in report["events"]] == [e["layer"] for e in events.json()]
    commits = {c["layer"]: c for c in report["commits"]}
    # …but the report, read from the Delta logs, still counts its bytes.
    assert set(commits) == {*committed, "quarantine"}
    for layer, commit in commits.items():
        event = committed.get(layer)
        if event is not None:
            assert commit["path"] == event["table_path"]
            assert commit["version"] == event["commit_version"]
            assert commit["rows"] == event["rows_written"]
            assert commit["files_added"] == event["files_added"]
        assert commit["bytes_added"] == added_bytes(commit["path"], commit["version"]) > 0
        assert report["bytes"]["by_layer"][layer] == commit["bytes_added"]
    assert report["bytes"]["total"] == sum(c["bytes_added"] for c in commits.values())

    seconds = report["duration_s"]
    assert seconds > 0
    assert report["throughput"]["rows_per_s"] == pytest.approx(2501 / seconds, rel=1e-3)
    # the report rounds rates to 3 decimals
    assert report["throughput"]["mb_per_s"] == pytest.approx(
        report["bytes"]["total"] / 1e6 / seconds, rel=1e-3, abs=5e-4
    )
    resources = report["resources"]
    for key in ("peak_rss_mb", "retries", "dead_letters"):
        assert key in resources


def test_report_of_a_held_run_counts_only_the_quarantine(ran: Ran) -> None:
    ws = ran.ws
    report = ws.inproc("report", ran.runs[DAY3]["run_id"], "--json").expect(0).json()
    assert report["certification_status"] == "HELD_AT_PREVIOUS"
    assert [c["layer"] for c in report["commits"]] == ["quarantine"]
    assert report["rows"]["quarantined"] == 2500
    assert report["bytes"]["total"] == report["bytes"]["by_layer"]["quarantine"] > 0


def test_report_for_humans(ran: Ran) -> None:
    out = ran.ws.inproc("report", ran.runs[DAY1]["run_id"]).expect(0).stdout
    for fragment in ("Stages", "finalize", "rows/s", "MB/s", "Commits", "Gates", "peak RSS"):
        assert fragment in out, out
    assert "G5_PII" in out


def test_report_of_an_unknown_run(ran: Ran) -> None:
    result = ran.ws.inproc("report", "run_0000000000000000").expect(2)
    result.assert_one_paragraph_error(
        "run run_0000000000000000 does not exist", "signalfactory runs"
    )
