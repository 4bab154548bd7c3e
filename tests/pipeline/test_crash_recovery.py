"""Crashes are normal: real subprocesses, real ``kill -9``, then a restart with the same result.

Each test asserts rows certified + quarantined = rows read and no duplicate certified rows.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from factories import (
    DAY1,
    TEST_PII_KEY,
    URN,
    Project,
    certified_path,
    orders,
    pipeline_doc,
    policy_doc,
    read_table,
    set_rows,
)
from signalfactory.api import SignalFactory
from signalfactory.core.records import RunStatus

ROWS, CHUNK = 60_000, 1_000
BIN = Path(sys.executable).parent / "signalfactory"


def _source() -> pl.DataFrame:
    df = orders(ROWS, seed=99)
    df = set_rows(df, [5, 30_500], order_total=-1.0)  # quarantined by the invariant
    # Duplicates whose first occurrence is early and the copy late: resume must remember it.
    return set_rows(df, [41_000, 55_000], order_id=3)


def _env(project: Project, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALFACTORY_")}
    env.update(
        SIGNALFACTORY_HOME=str(project.root / "home"),
        SIGNALFACTORY_PII_KEY=TEST_PII_KEY,
        SIGNALFACTORY_LOG_LEVEL="ERROR",
        **extra,
    )
    return env


def _command(project: Project) -> list[str]:
    return [str(BIN), "run", str(project.pipeline_yaml), "--partition", f"dt={DAY1}", "--json"]


def _run(project: Project, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(project),
        env=_env(project, **extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def crash_project(project: Project) -> Project:
    project.write(pipeline=pipeline_doc(chunk_size=CHUNK))
    project.partition(DAY1, _source())
    return project


def _expected(project: Project) -> pl.DataFrame:
    """The certified table of an uninterrupted run, in a home of its own (``opened[-1]``)."""
    clean = project.open("clean-home")
    outcome = project.run(clean)
    assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
    return _layer(clean, "gold_certified")


def _layer(sf: SignalFactory, layer: str) -> pl.DataFrame:
    table = read_table(certified_path(sf).replace("gold_certified", layer))
    return table.sort("order_id", "customer_id", "order_total")


def _check_balanced(sf: SignalFactory, run_id: str) -> None:
    run = sf.store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
    assert run.rows_read == ROWS
    assert run.rows_written + run.rows_quarantined + run.rows_dropped == ROWS
    certified = read_table(certified_path(sf))
    assert certified.height == run.rows_written
    assert certified["order_id"].is_duplicated().sum() == 0


@pytest.mark.parametrize("pii", [True, False], ids=["pii", "no-pii"])
def test_kill_9_at_a_random_chunk_then_resume_gives_the_uninterrupted_result(
    crash_project: Project, pii: bool
) -> None:
    """Also without PII rules, where bronze shares silver's files and stages each chunk's
    rejected rows beside them: the resumed bronze equals the uninterrupted one."""
    if not pii:
        crash_project.write(policy=policy_doc(pii={"scan_for": []}))
    sf = crash_project.open()
    kill_after = random.Random(7).randint(3, 15)
    proc = subprocess.Popen(
        _command(crash_project),
        env=_env(crash_project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_id = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        runs = sf.store.list_runs(dataset_urn=URN)
        if runs:
            run_id = runs[0].run_id
            if len(sf.store.list_checkpoints(run_id)) >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert run_id is not None
    crashed = sf.store.get_run(run_id)
    assert crashed is not None
    assert crashed.status is RunStatus.RUNNING  # what a crash leaves behind
    done_before = len(sf.store.list_checkpoints(run_id))
    assert kill_after <= done_before < ROWS // CHUNK

    resumed = subprocess.run(
        [str(BIN), "resume", run_id, "--json"],
        env=_env(crash_project),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run_id
    assert len(sf.store.list_checkpoints(run_id)) == ROWS // CHUNK
    _check_balanced(sf, run_id)
    got = _layer(sf, "gold_certified")
    bronze = _layer(sf, "bronze")
    assert bronze.height == ROWS  # every row once, the rejected ones too
    assert got.equals(_expected(crash_project))
    assert bronze.equals(_layer(crash_project.opened[-1], "bronze"))
    reasons = [t.reason for t in sf.store.list_transitions(run_id)]
    assert "resumed from its checkpoints" in reasons


def test_crash_between_the_certified_commit_and_the_store_update_publishes_once(
    crash_project: Project,
) -> None:
    sf = crash_project.open()
    crashed = _run(crash_project, SIGNALFACTORY_FAULT="after_certified_commit")
    assert crashed.returncode == -signal.SIGKILL
    path = certified_path(sf)
    version_after_crash = DeltaTable(path).version()
    (run,) = sf.store.list_runs(dataset_urn=URN)
    assert run.status is RunStatus.RUNNING

    again = _run(crash_project)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["run_id"] == run.run_id
    # The certified commit made before the crash is found, not made twice.
    assert DeltaTable(path).version() == version_after_crash
    commits = [h for h in DeltaTable(path).history() if h.get("signalfactory.run_id") == run.run_id]
    assert len(commits) == 1
    _check_balanced(sf, run.run_id)
    assert sf.store.get_certification(URN).certified_version == version_after_crash


def test_two_concurrent_runs_of_one_key_one_wins_the_other_returns_the_winner(
    crash_project: Project,
) -> None:
    sf = crash_project.open()
    procs = [
        subprocess.Popen(
            _command(crash_project),
            env=_env(crash_project),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    payloads = [json.loads(out) for out, _ in results]
    assert payloads[0]["run_id"] == payloads[1]["run_id"]
    assert sorted(p["reused"] for p in payloads) == [False, True]
    assert len(sf.store.list_runs(dataset_urn=URN)) == 1
    path = certified_path(sf)
    # one data commit (a table's first commit is a CREATE TABLE carrying the files)
    writes = [h for h in DeltaTable(path).history() if h.get("signalfactory.run_id")]
    assert len(writes) == 1
    _check_balanced(sf, payloads[0]["run_id"])


def test_half_a_percent_of_malformed_lines_are_quarantined_exactly(project: Project) -> None:
    rows = 20_000
    project.write(pipeline=pipeline_doc(chunk_size=CHUNK))
    path = project.partition(DAY1, orders(rows, seed=12))
    lines = path.read_text(encoding="utf-8").splitlines()
    rng = random.Random(12)
    bad = sorted(rng.sample(range(1, rows + 1), rows // 200))  # 0.5 % of the data lines
    for i in bad:
        lines[i] = lines[i] + ",unexpected-extra-field"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sf = project.open()
    proc = subprocess.run(
        _command(project),
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rows_read"] == rows
    assert result["rows_quarantined"] == len(bad) == 100
    assert result["rows_written"] == rows - len(bad)
    (record,) = sf.store.list_quarantine(URN)
    assert record.reasons == {"MALFORMED_ROW:expected 8 fields, got 9": len(bad)}
    quarantined = pl.read_delta(record.path)
    assert sorted(quarantined["_sf_source_line"].cast(pl.Int64).to_list()) == [i + 1 for i in bad]


def test_resume_works_from_any_directory_and_refuses_changed_input(
    crash_project: Project, tmp_path: Path
) -> None:
    sf = crash_project.open()
    crashed = _run(crash_project, SIGNALFACTORY_FAULT="after_checkpoint:2")
    assert crashed.returncode == -signal.SIGKILL
    (run,) = sf.store.list_runs(dataset_urn=URN)
    # The input changes before anyone resumes: the old run must not absorb it.
    crash_project.partition(DAY1, orders(2_000, seed=1))
    refused = subprocess.run(
        [str(BIN), "resume", run.run_id],
        env=_env(crash_project),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    assert "cannot be resumed" in refused.stderr
    crash_project.partition(DAY1, _source())  # the original input is back
    resumed = subprocess.run(
        [str(BIN), "resume", run.run_id, "--json"],
        env=_env(crash_project),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run.run_id
    _check_balanced(sf, run.run_id)
