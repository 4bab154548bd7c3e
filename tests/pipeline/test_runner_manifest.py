"""Manifest sources through a real run (B1): digests verified before any row is read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from factories import DAY1, DAY2, Project, certified_path, orders, pipeline_doc, read_table
from signalfactory.core.errors import ConfigError
from signalfactory.core.records import CertificationStatus, RunStatus


def _manifest(project: Project, dt: str, files: list[Path], *, tamper: bool = False) -> Path:
    entries = []
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if tamper:
            digest = hashlib.sha256(b"something else").hexdigest()
        entries.append({"uri": f"../raw/dt={dt}/{path.name}", "sha256": digest})
    folder = project.root / "manifests"
    folder.mkdir(exist_ok=True)
    target = folder / f"orders-{dt}.json"
    target.write_text(json.dumps({"files": entries}), encoding="utf-8")
    return target


@pytest.fixture
def manifest_project(project: Project) -> Project:
    doc = pipeline_doc()
    doc["source"] = {"format": "csv", "manifest": "manifests/orders-{dt}.json"}
    project.write(pipeline=doc)
    return project


def test_manifest_source_certifies_and_keys_on_the_manifest(manifest_project: Project) -> None:
    files = [manifest_project.partition(DAY1, orders(1500, seed=1))]
    _manifest(manifest_project, DAY1, files)
    sf = manifest_project.open()
    first = manifest_project.run(sf)
    assert first.run.status is RunStatus.SUCCEEDED, first.run.error
    assert first.run.certification_status is CertificationStatus.CERTIFIED
    assert read_table(certified_path(sf)).height == 1500
    again = manifest_project.run(sf)
    assert again.reused
    assert again.run.run_id == first.run.run_id


def test_a_wrong_digest_fails_the_run_and_writes_nothing(manifest_project: Project) -> None:
    files = [manifest_project.partition(DAY2, orders(1200, seed=2))]
    manifest = _manifest(manifest_project, DAY2, files, tamper=True)
    sf = manifest_project.open()
    outcome = manifest_project.run(sf, DAY2)
    assert outcome.run.status is RunStatus.FAILED
    error = outcome.run.error or ""
    assert files[0].name in error
    actual = hashlib.sha256(files[0].read_bytes()).hexdigest()
    expected = json.loads(manifest.read_text())["files"][0]["sha256"]
    assert actual in error
    assert expected in error
    lake = sf.settings.lake_root
    assert not lake.exists() or not any(p.is_file() for p in lake.rglob("*"))
    assert sf.store.list_quarantine() == []


def test_a_malformed_manifest_is_a_configuration_error(manifest_project: Project) -> None:
    manifest_project.partition(DAY1, orders(1000, seed=3))
    folder = manifest_project.root / "manifests"
    folder.mkdir(exist_ok=True)
    (folder / f"orders-{DAY1}.json").write_text('{"files": [', encoding="utf-8")
    sf = manifest_project.open()
    with pytest.raises(ConfigError, match="line 1"):
        manifest_project.run(sf)
    assert sf.store.list_runs() == []


def test_a_date_range_manifest_backfills_every_partition_once(project: Project) -> None:
    days = ["2026-02-13", "2026-02-14", "2026-02-15"]
    for i, day in enumerate(days):
        project.partition(day, orders(1_100, seed=20 + i, first_id=10_000 * (i + 1), day=day))
    window = project.root / "backfill.json"
    window.write_text(
        json.dumps({"partition_key": "dt", "start": days[0], "end": days[-1]}), encoding="utf-8"
    )
    sf = project.open()
    outcomes = sf.backfill(project.pipeline_yaml, window)
    assert [dict(o.run.partition) for o in outcomes] == [{"dt": d} for d in days]
    assert all(o.run.certification_status is CertificationStatus.CERTIFIED for o in outcomes)
    certified = read_table(certified_path(sf))
    assert certified.height == 3 * 1_100
    again = sf.backfill(project.pipeline_yaml, window)
    assert all(o.reused for o in again)
    assert read_table(certified_path(sf)).height == 3 * 1_100
