"""The CLI against PostgreSQL: SIGNALFACTORY_DATABASE_URL moves the store, the lake stays local."""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable
from sqlalchemy.engine import make_url

from consumption.harness import DAY1, DAY3, URN, make_workspace

pytestmark = pytest.mark.postgres


def test_register_and_run_against_postgres(postgres_url: str, tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path / "project",
        register=False,
        env={"SIGNALFACTORY_DATABASE_URL": postgres_url},
    )
    registered = ws.sf("register", ws.dataset, "--policy", ws.policy, "--json").expect(0).json()
    assert registered["dataset"]["urn"] == URN

    first = ws.sf("run", ws.pipeline, "--partition", f"dt={DAY1}", "--json").expect(0).json()
    assert first["status"] == "SUCCEEDED"
    assert first["certification_status"] == "CERTIFIED"
    assert first["certified_version"] == 0
    held = ws.sf("run", ws.pipeline, "--partition", f"dt={DAY3}", "--json").expect(3).json()
    assert held["certification_status"] == "HELD_AT_PREVIOUS"

    # The store is PostgreSQL: no SQLite file next to the lake.
    assert not (ws.home / "signalfactory.db").exists()
    runs = ws.inproc("runs", "--json").expect(0).json()
    assert {r["run_id"] for r in runs} == {first["run_id"], held["run_id"]}
    status = ws.inproc("status", first["run_id"], "--json").expect(0).json()
    assert status["rows_written"] == first["rows_written"] == 2500
    state = ws.inproc("certified", URN, "--json").expect(0).json()
    assert state["certified_version"] == 0
    assert DeltaTable(state["path"]).version() == 0

    missing = ws.inproc("status", "run_0000000000000000").expect(2)
    url = make_url(postgres_url)
    missing.assert_one_paragraph_error("run_0000000000000000", str(url.database))
    if url.password:
        assert url.password not in missing.stderr
    if url.username:
        assert f"{url.username}@" not in missing.stderr
