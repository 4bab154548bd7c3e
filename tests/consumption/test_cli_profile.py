"""``signalfactory profile``: baseline.json from the certified table or from files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
import structlog
import typer
from typer.testing import CliRunner

from factories import DAY1, DAY2, URN, Project, certified_path, orders
from signalfactory.consumption.cli_profile import register_profile
from signalfactory.enforcement.profile import Baseline

from .harness import Result, _checked

app = typer.Typer()
register_profile(app)


@app.callback()
def _root() -> None:
    """Test app holding only the profile command."""


def profile(home: Path, *args: str | Path) -> Result:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SIGNALFACTORY_")}
    env["SIGNALFACTORY_HOME"] = str(home)
    try:
        res = CliRunner().invoke(app, ["profile", *map(str, args)], env=env)
    finally:
        structlog.reset_defaults()
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"profile raised {res.exception!r}") from res.exception
    return _checked(Result(tuple(map(str, args)), res.exit_code, res.stdout, res.stderr))


@pytest.fixture
def certified(project: Project) -> Path:
    project.partition(DAY1, orders(700, seed=1))
    project.partition(DAY2, orders(900, seed=2, first_id=5000, day=DAY2))
    sf = project.open()
    project.run(sf, DAY1)
    project.run(sf, DAY2)
    project.close()
    return project.root / "home"


def test_profile_of_the_certified_table_writes_and_stores_the_baseline(
    project: Project, certified: Path
) -> None:
    # The two certified runs already rolled the baseline forward (versions 1 and 2).
    sf = project.open()
    assert [b.version for b in sf.store.list_baselines(URN)] == [1, 2]
    res = profile(certified, URN, "--json").expect(0)
    doc = res.json()
    out = certified / "baselines" / "orders_enriched" / "baseline.json"
    assert doc["path"] == str(out)
    assert doc["version"] == 3
    written = Baseline.read(out)
    assert written.document() == doc["baseline"]
    assert written.partitions == {f"dt={DAY1}": 700, f"dt={DAY2}": 900}
    table = pl.read_delta(certified_path(sf))
    assert written.row_count == table.height
    assert written.columns["order_type"].distinct_count == table["order_type"].n_unique()
    stored = sf.store.get_baseline(URN)
    assert stored is not None
    assert stored.document == doc["baseline"]

    again = profile(certified, URN).expect(0)  # the Rich summary; a new version
    assert "v4" in again.stdout
    assert "order_type" in again.stdout
    assert "1600 rows" in again.stdout
    assert [b.version for b in sf.store.list_baselines(URN)] == [1, 2, 3, 4]


def test_profile_from_a_file_to_a_chosen_output(project: Project, tmp_path: Path) -> None:
    raw = project.partition(DAY1, orders(400, seed=3))
    project.open()
    project.close()
    out = tmp_path / "elsewhere" / "b.json"
    res = profile(project.root / "home", URN, "--from-path", raw, "--out", out, "--json")
    assert res.expect(0).json()["baseline"]["row_count"] == 400
    assert json.loads(out.read_text())["source"] == str(raw)


def test_an_unknown_urn_says_to_register_it(tmp_path: Path) -> None:
    res = profile(tmp_path / "home", "ds://curated/nope").expect(2)
    res.assert_one_paragraph_error("ds://curated/nope", "register it first with")


def test_no_certified_table_yet_says_what_to_do(project: Project) -> None:
    project.open()
    project.close()
    res = profile(project.root / "home", URN).expect(2)
    res.assert_one_paragraph_error(URN, "no certified table yet", "--from-path")


def test_a_bad_path_is_named(project: Project, tmp_path: Path) -> None:
    project.open()
    project.close()
    res = profile(project.root / "home", URN, "--from-path", tmp_path / "missing.parquet")
    res.expect(2).assert_one_paragraph_error("missing.parquet", "does not exist")
