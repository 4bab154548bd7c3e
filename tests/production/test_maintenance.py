"""B15: compaction and vacuum of one table, and of a dataset's lake with its store.

Maintenance never changes what the certified table reads, keeps the files of the current
certified version and of its rollback target, and never touches quarantine evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from factories import DAY1, DAY2, URN, Project, certified_path, orders, set_rows, tree_digest
from signalfactory.api import SignalFactory
from signalfactory.core.errors import ConfigError, NotFoundError
from signalfactory.core.records import RunRecord, RunStatus, utcnow
from signalfactory.pipeline.certified_ops import maintain, rollback
from signalfactory.production.maintenance import (
    commit_history,
    disk_files,
    file_counts,
    maintain_table,
    missing_files,
)

# -- one table -------------------------------------------------------------------------------


def small_files_table(path: Path, appends: int = 6) -> str:
    """``appends`` one-file commits over two partitions: v0 … v{appends - 1}."""
    for i in range(appends):
        rows = pa.table({"id": [i * 10 + j for j in range(10)], "dt": [f"d{i % 2}"] * 10})
        write_deltalake(str(path), rows, mode="append", partition_by=["dt"])
    return str(path)


def content(path: str, version: int | None = None) -> pl.DataFrame:
    return pl.read_delta(path, version=version).sort("id")


def test_compaction_and_vacuum_keep_content_and_the_kept_versions(tmp_path: Path) -> None:
    path = small_files_table(tmp_path / "t")
    before = content(path)

    done = maintain_table(
        path, retention_hours=0, enforce_retention=False, keep_versions=[2], metadata={"k": "v"}
    )

    assert (done.before.active_files, done.after.active_files) == (6, 2)
    assert (done.files_compacted, done.files_written) == (6, 2)
    assert content(path).equals(before)
    # files of v3..v5 existed only before compaction and are gone; v0..v2 stay restorable
    assert done.files_vacuumed == 3
    assert done.after.disk_files == 2 + 3 == len(disk_files(path))
    assert missing_files(path, 2) == []
    assert content(path, 2).height == 30
    assert len(missing_files(path, 5)) == 3
    operations = {c.metadata.get("signalfactory.operation") for c in commit_history(path)}
    assert {"maintenance.compact", "maintenance.vacuum"} <= operations


def test_default_retention_compacts_but_deletes_nothing_recent(tmp_path: Path) -> None:
    path = small_files_table(tmp_path / "t")
    done = maintain_table(path)
    assert done.files_compacted == 6
    assert done.files_vacuumed == 0
    assert done.after.disk_files == 6 + 2
    assert all(missing_files(path, v) == [] for v in range(6))


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    path = small_files_table(tmp_path / "t")
    snapshot = tree_digest(path)
    done = maintain_table(path, retention_hours=0, enforce_retention=False, dry_run=True)
    assert done.dry_run
    assert done.files_compacted == 6  # both partitions hold more than one file
    assert done.after == done.before == file_counts(path)
    assert tree_digest(path) == snapshot


def test_bad_retentions_are_refused(tmp_path: Path) -> None:
    path = small_files_table(tmp_path / "t", appends=2)
    with pytest.raises(ConfigError, match="0 hours or more"):
        maintain_table(path, retention_hours=-1)
    with pytest.raises(ConfigError, match="--retention-hours 168"):
        maintain_table(path, retention_hours=1, enforce_retention=True, dry_run=True)


# -- a dataset's lake ------------------------------------------------------------------------


@dataclass
class Lake:
    sf: SignalFactory
    path: str
    quarantine: str


@pytest.fixture
def lake(project: Project) -> Lake:
    """DAY1 with two bad rows (a quarantine table), then DAY2 certified three times: v0..v3."""
    project.partition(DAY1, set_rows(orders(1500, seed=1), [7, 70], order_total=-5.0))
    sf = project.open()
    first = project.run(sf, DAY1)
    assert first.run.rows_quarantined == 2
    for seed in (2, 3, 4):
        project.partition(DAY2, orders(1200 + seed, seed=seed, first_id=10_000, day=DAY2))
        project.run(sf, DAY2)
    state = sf.store.get_certification(URN)
    assert state is not None
    assert state.certified_version == 3
    (record,) = sf.store.list_quarantine(URN)
    return Lake(sf, certified_path(sf), record.path)


def files(path: str, version: int) -> set[str]:
    return set(DeltaTable(path, version=version).file_uris())


def certified(lake: Lake, version: int | None = None) -> pl.DataFrame:
    return pl.read_delta(lake.path, version=version).sort("order_id")


def test_maintain_keeps_the_certified_content_and_the_quarantine_evidence(lake: Lake) -> None:
    sf = lake.sf
    before = certified(lake, 3)
    evidence = tree_digest(lake.quarantine)
    only_v1 = files(lake.path, 1) - files(lake.path, 2) - files(lake.path, 3)
    assert only_v1  # the first DAY2 certification, replaced twice since

    report = maintain(sf.store, URN, sf.settings.lake_root, retention_hours=0, actor="ops")

    tables = {t.layer: t for t in report.tables}
    cert = tables["certified"].result
    assert cert is not None
    assert set(cert.kept_versions) >= {3, 2}  # the certified version and its rollback target
    assert cert.files_vacuumed == len(only_v1)
    assert cert.after.disk_files == (
        cert.before.disk_files + cert.files_written - cert.files_vacuumed
    )
    assert certified(lake).equals(before)
    assert certified(lake, 3).equals(before)
    state = sf.store.get_certification(URN)
    assert state is not None
    assert state.certified_version == 3
    for layer in ("bronze", "silver", "gold"):
        result = tables[layer].result
        assert result is not None
        # no version to keep but the latest: every other file goes (the replaced DAY2 ones)
        assert result.files_vacuumed > 0
        assert result.after.disk_files == result.after.active_files
        assert result.files_vacuumed == (
            result.before.disk_files + result.files_written - result.after.active_files
        )

    (quarantined,) = [t for t in report.tables if t.layer.startswith("quarantine:")]
    assert quarantined.result is None
    assert quarantined.skipped is not None
    assert "evidence" in quarantined.skipped
    assert tree_digest(lake.quarantine) == evidence

    for layer in ("bronze", "silver", "gold", "certified"):
        (entry,) = sf.store.list_transitions(f"{URN}#{layer}")
        assert entry.actor == "ops"
        assert entry.reason.startswith("maintenance: compacted")
        assert entry.from_status is not None
        assert entry.from_status.startswith("v")

    # the rollback target survives vacuum; a version only vacuumed files made does not
    with pytest.raises(ConfigError, match="removed by vacuum"):
        rollback(sf.store, URN, 1, actor="ops")
    assert rollback(sf.store, URN, 0, actor="ops").certified_version is not None
    assert rollback(sf.store, URN, 2, actor="ops").certified_version is not None
    assert certified(lake).equals(certified(lake, 2))


def test_default_retention_deletes_nothing_recent(lake: Lake) -> None:
    sf = lake.sf
    before = certified(lake)
    report = maintain(sf.store, URN, sf.settings.lake_root)
    assert all(t.result.files_vacuumed == 0 for t in report.tables if t.result)
    assert certified(lake).equals(before)
    assert rollback(sf.store, URN, 1, actor="ops").certified_version is not None


def test_dry_run_touches_nothing(lake: Lake) -> None:
    sf = lake.sf
    snapshot = tree_digest(sf.settings.lake_root)
    report = maintain(sf.store, URN, sf.settings.lake_root, retention_hours=0, dry_run=True)
    assert report.dry_run
    cert = next(t.result for t in report.tables if t.layer == "certified")
    assert cert is not None
    assert cert.files_vacuumed == len(
        files(lake.path, 1) - files(lake.path, 2) - files(lake.path, 3)
    )
    assert tree_digest(sf.settings.lake_root) == snapshot
    assert sf.store.list_transitions(f"{URN}#certified") == []


def test_a_short_retention_waits_for_runs_in_flight(lake: Lake) -> None:
    sf = lake.sf
    running = RunRecord(
        run_id="run_inflight000000",
        pipeline="orders_daily",
        dataset_urn=URN,
        partition={"dt": DAY2},
        status=RunStatus.RUNNING,
        idempotency_key="k",
        engine="sequential",
        chunk_size=1000,
        started_at=utcnow(),
    )
    sf.store.create_run(running)
    snapshot = tree_digest(sf.settings.lake_root)
    with pytest.raises(ConfigError, match="run_inflight000000"):
        maintain(sf.store, URN, sf.settings.lake_root, retention_hours=0)
    assert tree_digest(sf.settings.lake_root) == snapshot
    # the default retention never deletes files younger than a week: allowed
    maintain(sf.store, URN, sf.settings.lake_root)


def test_unknown_dataset_and_unwritten_tables(project: Project) -> None:
    sf = project.open()
    with pytest.raises(NotFoundError, match="ds://nope is not registered"):
        maintain(sf.store, "ds://nope", sf.settings.lake_root)
    with pytest.raises(ConfigError, match="0 or more"):
        maintain(sf.store, URN, sf.settings.lake_root, retention_hours=-3)
    report = maintain(sf.store, URN, sf.settings.lake_root)
    assert [(t.layer, t.skipped) for t in report.tables] == [
        (layer, "no table yet") for layer in ("bronze", "silver", "gold", "certified")
    ]
    assert DeltaTable.is_deltatable(str(sf.settings.lake_root)) is False
