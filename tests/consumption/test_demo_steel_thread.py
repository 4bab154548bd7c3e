"""``signalfactory demo`` (the steel thread) end to end through the real console script.

Two weeks of daily runs with three seeded bad days; asserted from the home the demo leaves:
the right incidents (and no others), each explained with the right root cause, and a
certified table that never holds the quarantined day.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from consumption.harness import URN, Result, sf, sf_inproc, squash
from signalfactory.consumption.steel_thread import (
    DAYS,
    DEPLOY_REF,
    DROP_DAY,
    ENUM_DAY,
    MISSED_DAY,
)


@dataclass(frozen=True)
class Thread:
    home: Path
    output: Result
    incidents: list[dict[str, Any]]
    runs: list[dict[str, Any]]

    def incident(self, signature: str, dt: str) -> dict[str, Any]:
        found = [
            i
            for i in self.incidents
            if i["signature"] == signature and i["partition"] == f"dt={dt}"
        ]
        assert len(found) == 1, (signature, dt, self.incidents)
        return found[0]

    def explain(self, incident_id: str) -> dict[str, Any]:
        result = sf_inproc("explain", incident_id, "--json", home=self.home).expect(0)
        doc: dict[str, Any] = result.json()
        return doc


@pytest.fixture(scope="module")
def thread(tmp_path_factory: pytest.TempPathFactory) -> Thread:
    base = tmp_path_factory.mktemp("steel")
    directory = base / "demo"
    output = sf("demo", "--dir", directory, home=base / "unused-home", cwd=base).expect(0)
    home = directory / ".signalfactory"
    incidents = sf_inproc("incidents", "--status", "all", "--json", home=home).expect(0).json()
    runs = sf_inproc("runs", "--json", "--limit", "100", home=home).expect(0).json()
    return Thread(home, output, incidents, runs)


def test_every_day_ran_except_the_missed_one(thread: Thread) -> None:
    days = sorted(r["partition"]["dt"] for r in thread.runs)
    assert len(days) == DAYS - 1
    assert MISSED_DAY.isoformat() not in days
    held = [r["partition"]["dt"] for r in thread.runs if r["certification_status"] != "CERTIFIED"]
    assert held == [ENUM_DAY.isoformat()]


def test_exactly_the_seeded_incidents_open(thread: Thread) -> None:
    seen = {(i["signature"], i["partition"]) for i in thread.incidents}
    assert seen == {
        ("VOLUME_ANOMALY", f"dt={DROP_DAY}"),
        ("UNKNOWN_ENUM:order_type:FLASH_SALE", f"dt={ENUM_DAY}"),
        ("PARTIAL_WRITE", f"dt={ENUM_DAY}"),
        ("JOB_NOT_TRIGGERED", f"dt={MISSED_DAY}"),
    }, thread.incidents


def test_volume_drop_is_traced_to_the_failed_upstream_task(thread: Thread) -> None:
    inc = thread.incident("VOLUME_ANOMALY", DROP_DAY.isoformat())
    exp = thread.explain(inc["incident_id"])
    root = exp["root_cause"]
    assert root is not None
    assert root["kind"] == "upstream_dataset"
    assert root["node"] == "dataset:warehouse:raw.orders_us"
    assert "ingest_orders_us" in exp["conclusion"]
    assert "failed" in exp["conclusion"]
    assert "ConnectionResetError" in exp["conclusion"]
    kinds = [s["kind"] for s in exp["chain"]]
    assert kinds[:3] == ["incident", "signal", "run"]
    # The healthy upstream is shown as such, not blamed.
    eu = [s for s in exp["chain"] if s["node"] == "dataset:warehouse:raw.orders_eu"]
    assert eu
    assert "was written" in eu[0]["text"]


def test_new_enum_is_quarantined_held_and_linked_to_the_deploy(thread: Thread) -> None:
    inc = thread.incident("UNKNOWN_ENUM:order_type:FLASH_SALE", ENUM_DAY.isoformat())
    exp = thread.explain(inc["incident_id"])
    assert "quarantine.orders_enriched_" in exp["conclusion"]
    assert "HELD_AT_PREVIOUS" in exp["conclusion"]
    assert [c["node"] for c in exp["candidate_causes"]] == [DEPLOY_REF]
    partial = thread.incident("PARTIAL_WRITE", ENUM_DAY.isoformat())
    assert (
        "UNKNOWN_ENUM:order_type:FLASH_SALE" in thread.explain(partial["incident_id"])["conclusion"]
    )


def test_missed_run_blames_the_scheduler_not_upstream(thread: Thread) -> None:
    inc = thread.incident("JOB_NOT_TRIGGERED", MISSED_DAY.isoformat())
    assert inc["severity"] == "CRITICAL"
    exp = thread.explain(inc["incident_id"])
    assert exp["root_cause"] is None
    assert "never triggered" in exp["conclusion"]
    upstream = [s for s in exp["chain"] if s["node"].startswith("dataset:warehouse:")]
    assert len(upstream) == 2
    assert all("was written" in s["text"] for s in upstream)
    assert "raw.orders_eu" in exp["conclusion"]
    assert exp["candidate_causes"] == []


def test_certified_table_never_holds_the_quarantined_day(thread: Thread) -> None:
    state = sf_inproc("certified", URN, "--json", home=thread.home).expect(0).json()
    days = set(pl.read_delta(state["path"])["dt"].unique().to_list())
    assert ENUM_DAY.isoformat() not in days
    assert MISSED_DAY.isoformat() not in days
    assert len(days) == DAYS - 2


def test_output_tells_the_story(thread: Thread) -> None:
    out = squash(thread.output.stdout)
    for fragment in (
        "ingest_orders_usfailed",
        "nevertriggered",
        "UNKNOWN_ENUM:order_type:FLASH_SALE",
        "signalfactoryexplain",
    ):
        assert fragment in out, thread.output.describe()
    assert not thread.output.stderr.strip(), thread.output.describe()
