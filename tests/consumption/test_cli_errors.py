"""Bad input, configuration and usage: exit code 2 (1 for a run that failed), one paragraph on
stderr naming what is wrong, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumption.harness import (
    DAY1,
    URN,
    Result,
    Workspace,
    make_workspace,
    run_cli,
    sf_inproc,
)


@dataclass(frozen=True)
class Case:
    """``args`` builds the command line from the workspace; ``expect`` the stderr fragments."""

    args: Callable[[Workspace], list[str | Path]]
    exit_code: int
    expect: Callable[[Workspace], list[str]]


def _write(ws: Workspace, name: str, text: str) -> Path:
    path = ws.root / name
    path.write_text(text, encoding="utf-8")
    return path


def _bad_yaml(ws: Workspace) -> list[str | Path]:
    path = _write(ws, "broken_pipeline.yaml", "pipeline: orders_daily\n  dataset: [oops\n")
    return ["run", path, "--partition", f"dt={DAY1}"]


def _unregistered(ws: Workspace) -> list[str | Path]:
    text = ws.pipeline.read_text(encoding="utf-8").replace(URN, "ds://curated/never_registered")
    path = _write(ws, "unregistered_pipeline.yaml", text)
    return ["run", path, "--partition", f"dt={DAY1}"]


def _policy_unknown_column(ws: Workspace) -> list[str | Path]:
    text = ws.policy.read_text(encoding="utf-8").replace(
        "{check: str_length, column: country", "{check: str_length, column: no_such_col"
    )
    assert "no_such_col" in text
    path = _write(ws, "policy_unknown_column.yaml", text)
    return ["register", ws.dataset, "--policy", path]


def _s3_dataset(ws: Workspace) -> list[str | Path]:
    text = ws.dataset.read_text(encoding="utf-8").replace(
        'bronze: "bronze/orders/"', 'bronze: "s3://lake-bucket/bronze/orders/"'
    )
    assert "s3://" in text
    path = _write(ws, "dataset_s3.yaml", text)
    return ["register", path, "--policy", ws.policy]


def _run(*extra: str) -> Callable[[Workspace], list[str | Path]]:
    return lambda ws: ["run", ws.pipeline, *extra]


CASES: dict[str, Case] = {
    "unknown partition key": Case(
        _run("--partition", f"day={DAY1}"), 2, lambda ws: ["unknown partition key day", "dt"]
    ),
    "no partition": Case(_run(), 2, lambda ws: ["needs a value for dt", "--partition dt="]),
    "partition without value": Case(_run("--partition"), 2, lambda ws: ["--partition"]),
    "partition not KEY=VALUE": Case(
        _run("--partition", "dt"), 2, lambda ws: ["--partition 'dt' must look like KEY=VALUE"]
    ),
    "bad yaml": Case(_bad_yaml, 2, lambda ws: ["broken_pipeline.yaml", "not valid YAML", "line 2"]),
    "unknown engine": Case(
        _run("--partition", f"dt={DAY1}", "--engine", "warp"),
        2,
        lambda ws: ["engine 'warp' is not known", "sequential", "threads"],
    ),
    "chunk size too small": Case(
        _run("--partition", f"dt={DAY1}", "--chunk-size", "10"),
        2,
        lambda ws: ["chunk_size", "1,000 to 1,000,000"],
    ),
    "missing pipeline file": Case(
        lambda ws: ["run", ws.root / "nope.yaml", "--partition", f"dt={DAY1}"],
        2,
        lambda ws: ["nope.yaml"],
    ),
    "unregistered dataset": Case(
        _unregistered,
        2,
        lambda ws: ["ds://curated/never_registered", "is not registered", "signalfactory register"],
    ),
    "unknown run id": Case(
        lambda ws: ["status", "run_0000000000000000"],
        2,
        lambda ws: ["run run_0000000000000000 does not exist", "signalfactory runs"],
    ),
    "unknown certified dataset": Case(
        lambda ws: ["certified", "ds://x/unknown"],
        2,
        lambda ws: ["ds://x/unknown", "is not registered", "signalfactory register"],
    ),
    "policy names an unknown column": Case(
        _policy_unknown_column,
        2,
        lambda ws: ["policy_unknown_column.yaml", "dq.2.column", "no_such_col"],
    ),
    "object storage": Case(
        _s3_dataset, 2, lambda ws: ["dataset_s3.yaml", "storage.bronze", "s3://"]
    ),
    "missing dataset file": Case(
        lambda ws: ["register", ws.root / "absent.yaml", "--policy", ws.policy],
        2,
        lambda ws: ["absent.yaml", "does not exist"],
    ),
    "missing input file": Case(
        _run("--partition", "dt=2026-03-31"),
        1,
        lambda ws: [str(ws.root / "raw" / "orders" / "dt=2026-03-31" / "*.csv")],
    ),
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("errors") / "project")


def _check(ws: Workspace, case: Case, result: Result) -> None:
    result.expect(case.exit_code)
    result.assert_one_paragraph_error(*case.expect(ws))


@pytest.mark.parametrize("name", list(CASES))
def test_error_in_process(ws: Workspace, name: str) -> None:
    case = CASES[name]
    _check(ws, case, ws.inproc(*case.args(ws)))


#: One of each kind through the installed script (each start costs ~1 s of imports): a failed
#: run, a refused configuration, a Typer usage error and a lookup of something unknown.
SCRIPT_CASES = ("missing input file", "unknown engine", "partition without value", "unknown run id")


def test_errors_from_the_console_script(ws: Workspace) -> None:
    """The same messages through the installed script: exit codes, one paragraph, no traceback."""
    results = run_cli(*(ws.call(*CASES[n].args(ws)) for n in SCRIPT_CASES))
    for name, result in zip(SCRIPT_CASES, results, strict=True):
        _check(ws, CASES[name], result)


def test_bad_input_records_no_run_except_a_failed_one(ws: Workspace) -> None:
    """Invalid configuration is refused before a run exists; a missing input file is a
    recorded FAILED run whose error names the path."""
    before = ws.inproc("runs", "--json").expect(0).json()
    ws.inproc("run", ws.pipeline, "--partition", f"dt={DAY1}", "--engine", "warp").expect(2)
    ws.inproc("run", ws.pipeline, "--partition", "day=1").expect(2)
    assert ws.inproc("runs", "--json").expect(0).json() == before
    failed = ws.inproc("run", ws.pipeline, "--partition", "dt=2026-04-30", "--json").expect(1)
    data = failed.json()
    assert data["status"] == "FAILED"
    assert data["certification_status"] == "NOT_EVALUATED"
    assert "dt=2026-04-30" in data["error"]
    assert data["run_id"] in {r["run_id"] for r in ws.inproc("runs", "--json").json()}
    shown = ws.inproc("status", data["run_id"]).expect(0)
    assert "FAILED" in shown.stdout


def test_unregistered_home_tells_to_register(tmp_path: Path) -> None:
    fresh = make_workspace(tmp_path / "project", register=False)
    result = fresh.inproc("run", fresh.pipeline, "--partition", f"dt={DAY1}").expect(2)
    result.assert_one_paragraph_error(URN, "signalfactory register")
    listing = fresh.inproc("certified", URN).expect(2)
    listing.assert_one_paragraph_error("registered: none yet")


def test_usage_errors_do_not_touch_a_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for args in (["run"], ["nonsense"], ["run", "p.yaml", "--chunk-size", "many"]):
        result = sf_inproc(*args, home=home).expect(2)
        assert result.stderr.strip()
    assert not home.exists()
