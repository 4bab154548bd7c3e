"""Committing staged layers: the staged Parquet files become the table's files as they are.

A commit hard-links the files the chunk workers staged into the table folder and adds them
in one Delta transaction (replacing the partition), so the rows are never written again; the
certified table links gold's files. Types Delta cannot store as they are fall back to a
rewrite through ``write_deltalake``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from deltalake import DeltaTable

from factories import (
    DAY1,
    DAY2,
    URN,
    Project,
    certified_path,
    orders,
    pipeline_doc,
    policy_doc,
    set_rows,
)
from signalfactory.production import lake
from signalfactory.production.lake import StagedLayer, commit_layer
from signalfactory.production.maintenance import disk_files, maintain_table


def frame(start: int, n: int, dt: str = DAY1) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": list(range(start, start + n)),
            "name": [None if i % 3 == 0 else f"n{i}" for i in range(start, start + n)],
            "day": pl.date_range(pl.date(2026, 1, 1), pl.date(2026, 1, 1), eager=True).to_list()
            * n,
            "dt": [dt] * n,
        }
    )


def stage(folder: Path, *frames: pl.DataFrame) -> StagedLayer:
    staged = StagedLayer(folder)
    for i, df in enumerate(frames):
        staged.write(i, df)
    return staged


def inodes(paths: list[str] | list[Path]) -> set[int]:
    return {os.stat(p).st_ino for p in paths}


def data_files(path: str) -> list[str]:
    paths = pa.table(DeltaTable(path).get_add_actions())["path"].to_pylist()
    return [str(Path(path) / p) for p in paths]


def test_a_commit_adds_the_staged_files_themselves(tmp_path: Path) -> None:
    staged = stage(tmp_path / "stage", frame(0, 5), frame(5, 4))
    path = str(tmp_path / "t")

    result = commit_layer(path, staged, {"dt": DAY1}, {"k": "v"}, app_id="app:run1:bronze:g1")

    assert result is not None
    files = data_files(path)
    assert inodes(files) == inodes(staged.files())  # hard links, not copies
    assert all(Path(f).parent.name == f"dt={DAY1}" for f in files)
    assert (result.version, result.rows, result.files_added) == (0, 9, 2)
    assert result.bytes_written == staged.size_bytes()
    table = DeltaTable(path)
    assert table.count() == 9
    assert table.metadata().partition_columns == ["dt"]
    expected = pl.concat([frame(0, 5), frame(5, 4)])
    assert pl.read_delta(path).sort("id").equals(expected)
    assert pl.from_arrow(table.to_pyarrow_table()).sort("id").equals(expected)  # type: ignore[union-attr]
    # statistics come from the Parquet footers: rows and nulls (no min/max, see _stats)
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    first = next(a for a in actions if a["num_records"] == 5)
    assert (first["null_count.name"], first["null_count.id"]) == (2, 0)
    # filtered scans through deltalake's pyarrow dataset see every matching row
    dataset = table.to_pyarrow_dataset()
    assert dataset.to_table(filter=pads.field("name") == "n4").num_rows == 1
    assert dataset.to_table(filter=pads.field("dt") == DAY1).num_rows == 9
    assert dataset.to_table(filter=pads.field("name").is_null()).num_rows == 3
    entry = table.history(1)[0]
    assert entry["k"] == "v"
    assert entry["operationMetrics"]["num_added_rows"] == 9
    assert table.transaction_version("app:run1:bronze:g1") == 1


def test_counts_only_footers_commit_the_same_statistics(tmp_path: Path) -> None:
    """Bronze and quarantine skip min/max in their footers (a third of the encode); the
    commit's row and null counts are the same, and silver-like layers keep min/max."""
    import pyarrow.parquet as pq

    counts_only = StagedLayer(tmp_path / "lean", min_max=False)
    full = StagedLayer(tmp_path / "full")
    for staged in (counts_only, full):
        staged.write(0, frame(0, 5))

    def footer(staged: StagedLayer) -> tuple[bool, bool, int]:
        column = pq.ParquetFile(staged.files()[0]).metadata.row_group(0).column(1)  # "name"
        st = column.statistics
        return st.has_min_max, st.has_null_count, st.null_count

    assert footer(counts_only) == (False, True, 2)
    assert footer(full) == (True, True, 2)
    committed = []
    for name, staged in (("lean", counts_only), ("full", full)):
        path = str(tmp_path / f"t-{name}")
        commit_layer(path, staged, {"dt": DAY1}, {}, app_id=name)
        actions = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()
        committed.append({k: v for k, v in actions[0].items() if k.startswith(("num", "null"))})
        assert pl.read_delta(path).sort("id").equals(frame(0, 5))
    assert committed[0] == committed[1]
    assert committed[0]["null_count.name"] == 2


def test_files_without_a_nullable_column_of_the_table_commit_without_schema_merge(
    tmp_path: Path,
) -> None:
    """Bronze tables written before system columns moved to the quarantine have ``_sf_row``;
    a strict-mode commit (no schema merge) of files without it still adds them as they are."""
    path = str(tmp_path / "t")
    old = frame(0, 3).with_columns(pl.int_range(0, 3, dtype=pl.Int64).alias("_sf_row"))
    commit_layer(path, stage(tmp_path / "a", old), {"dt": DAY1}, {}, app_id="a")
    new = stage(tmp_path / "b", frame(10, 2, DAY2))

    result = commit_layer(path, new, {"dt": DAY2}, {}, app_id="b", merge_schema=False)

    assert result is not None
    assert inodes(data_files(path)) >= inodes(new.files())  # linked, not rewritten
    table = pl.read_delta(path).sort("id")
    assert table["_sf_row"].to_list() == [0, 1, 2, None, None]
    assert DeltaTable(path).schema().fields[-1].name == "_sf_row"


def test_a_commit_replaces_only_its_partition_and_is_exactly_once(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    commit_layer(path, stage(tmp_path / "a", frame(0, 5)), {"dt": DAY1}, {}, app_id="a")
    commit_layer(path, stage(tmp_path / "b", frame(100, 3, DAY2)), {"dt": DAY2}, {}, app_id="b")
    again = stage(tmp_path / "c", frame(50, 2))

    first = commit_layer(path, again, {"dt": DAY1}, {}, app_id="c")
    replay = commit_layer(path, again, {"dt": DAY1}, {}, app_id="c")

    assert first is not None
    assert replay == first
    assert DeltaTable(path).version() == 2
    assert sorted(pl.read_delta(path)["id"].to_list()) == [50, 51, 100, 101, 102]
    # the replaced files are removed from the log only; vacuum deletes them later
    assert len(disk_files(path)) == 1 + 1 + 1


def test_a_restaged_file_never_changes_a_committed_one(tmp_path: Path) -> None:
    staged = stage(tmp_path / "s", frame(0, 5))
    path = str(tmp_path / "t")
    commit_layer(path, staged, {"dt": DAY1}, {}, app_id="one")
    before = pl.read_delta(path)

    staged.write(0, frame(10, 2))  # e.g. a retried chunk or rewritten reasons

    assert pl.read_delta(path).equals(before)
    assert inodes(data_files(path)).isdisjoint(inodes(staged.files()))


def test_schema_merge_adds_the_new_column(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    commit_layer(path, stage(tmp_path / "a", frame(0, 3)), {"dt": DAY1}, {}, app_id="a")
    wider = frame(10, 2, DAY2).with_columns(pl.lit(1.5).alias("score"))
    staged = stage(tmp_path / "b", wider)

    commit_layer(path, staged, {"dt": DAY2}, {}, merge_schema=True, app_id="b")

    assert DeltaTable(path).schema().fields[-1].name == "score"
    table = pl.read_delta(path).sort("id")
    assert table["score"].to_list() == [None, None, None, 1.5, 1.5]
    assert inodes(staged.files()) <= inodes(data_files(path))


def test_types_delta_cannot_store_as_they_are_are_rewritten(tmp_path: Path) -> None:
    odd = frame(0, 4).with_columns(pl.col("id").cast(pl.UInt32))
    staged = stage(tmp_path / "s", odd)
    path = str(tmp_path / "t")

    result = commit_layer(path, staged, {"dt": DAY1}, {}, app_id="u")

    assert result is not None
    assert result.rows == 4
    assert inodes(data_files(path)).isdisjoint(inodes(staged.files()))
    assert sorted(pl.read_delta(path)["id"].to_list()) == [0, 1, 2, 3]


def test_a_failed_commit_leaves_no_files_and_a_retry_reuses_the_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "t")
    commit_layer(path, stage(tmp_path / "a", frame(0, 3)), {"dt": DAY1}, {}, app_id="a")
    staged = stage(tmp_path / "b", frame(10, 2), frame(20, 2))
    calls: list[int] = []

    def boom(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise OSError("disk on fire")

    # The commit fails: its linked files go, and the layer is committed by a rewrite.
    monkeypatch.setattr(DeltaTable, "create_write_transaction", boom)
    monkeypatch.setattr(lake, "_rewrite_commit", boom)
    with pytest.raises(OSError, match="disk on fire"):
        commit_layer(path, staged, {"dt": DAY1}, {}, app_id="b")
    assert len(calls) == 2
    assert len(disk_files(path)) == 1
    monkeypatch.undo()

    # A crash after linking and before the commit leaves links behind; the retry reuses them.
    folder = Path(path) / f"dt={DAY1}"
    for i, source in enumerate(staged.files()):
        os.link(source, folder / f"sf-b-part-{i:07d}.parquet")
    result = commit_layer(path, staged, {"dt": DAY1}, {}, app_id="b")

    assert result is not None
    assert result.files_added == 2
    assert len(disk_files(path)) == 1 + 2
    assert sorted(pl.read_delta(path)["id"].to_list()) == [10, 11, 20, 21]


def test_a_run_links_gold_into_the_certified_table(project: Project) -> None:
    project.partition(DAY1, set_rows(orders(2500, seed=1), [3, 7], order_total=-5))
    sf = project.open()
    run = project.run(sf).run
    certified = certified_path(sf)
    gold = certified.replace("gold_certified", "gold")
    bronze = certified.replace("gold_certified", "bronze")

    silver = certified.replace("gold_certified", "silver")
    # No gold steps and no gold row failed: gold is silver as staged, so silver, gold and the
    # certified table share one set of files (same inodes). PII remediation changed silver's
    # rows (emails tokenized), so bronze, which keeps them as they arrived, has its own.
    assert inodes(data_files(certified)) == inodes(data_files(gold)) == inodes(data_files(silver))
    assert inodes(data_files(bronze)).isdisjoint(inodes(data_files(silver)))
    # Row numbers trace rows in the quarantine; every layer holds the data's own columns.
    for path in (bronze, silver, gold, certified):
        assert not [c for c in pl.read_delta(path).columns if c.startswith("_sf_")]
    for path in (bronze, silver, gold, certified):
        assert sorted(map(str, disk_files(path))) == sorted(data_files(path))
        assert all(Path(f).name.startswith(f"sf-{run.run_id}-") for f in data_files(path))
    assert DeltaTable(certified).count() == run.rows_written == 2498
    assert pl.read_delta(certified).height == 2498
    assert DeltaTable(bronze).count() == 2500
    history = DeltaTable(certified).history(1)[0]
    assert history["signalfactory.run_id"] == run.run_id
    assert json.loads(history["signalfactory.partition"]) == {"dt": DAY1}
    assert sf.certified(URN).certified_version == 0


def test_bronze_shares_silvers_files_when_silver_keeps_its_rows(project: Project) -> None:
    """No silver steps and no PII to remediate: bronze is silver's files (one encode of the
    valid rows) plus a file per chunk of the rows silver rejected, which the quarantine
    holds too; bronze still has every conformed row once."""
    project.write(policy=policy_doc(pii={"scan_for": []}))
    rejected = [3, 7, 1500]
    project.partition(DAY1, set_rows(orders(2500, seed=1), rejected, order_total=-5))
    sf = project.open()
    run = project.run(sf).run
    certified = certified_path(sf)
    bronze, silver = (certified.replace("gold_certified", n) for n in ("bronze", "silver"))

    silver_files = inodes(data_files(silver))
    bronze_files = inodes(data_files(bronze))
    assert silver_files == inodes(data_files(certified))
    assert silver_files < bronze_files  # every silver file, plus the rejected rows' files
    assert len(bronze_files - silver_files) == 2  # chunks 0 and 1 rejected rows (size 1000)
    frame = pl.read_delta(bronze)
    assert frame.height == 2500 == run.rows_read
    assert frame["order_id"].n_unique() == 2500
    assert sorted(frame.filter(pl.col("order_total") < 0)["order_id"].to_list()) == [
        i + 1 for i in rejected
    ]
    assert pl.read_delta(silver).height == run.rows_written == 2497
    quarantined = pl.concat([pl.read_delta(q.path) for q in sf.store.list_quarantine(URN)])
    assert sorted(quarantined["_sf_row"].cast(pl.Int64).to_list()) == rejected


def test_maintenance_removes_files_a_commit_never_took(tmp_path: Path) -> None:
    staged = stage(tmp_path / "s", frame(0, 5), frame(5, 5))
    path = str(tmp_path / "t")
    commit_layer(path, staged, {"dt": DAY1}, {}, app_id="a")
    # a run that linked its files and then died for good before committing them
    orphan = Path(path) / f"dt={DAY1}" / "sf-dead-run-part-0000000.parquet"
    os.link(staged.files()[0], orphan)

    done = maintain_table(path, retention_hours=0, enforce_retention=False)

    assert not orphan.exists()
    assert f"dt={DAY1}/{orphan.name}" in done.vacuumed
    assert pl.read_delta(path).height == 10


def test_a_gold_step_gives_gold_files_of_its_own(project: Project) -> None:
    project.write(
        pipeline=pipeline_doc(gold=[{"sql": "SELECT *, order_total * 2 AS doubled FROM batch"}])
    )
    project.partition(DAY1, orders(1200, seed=2))
    sf = project.open()
    run = project.run(sf).run
    certified = certified_path(sf)
    gold = certified.replace("gold_certified", "gold")
    silver = certified.replace("gold_certified", "silver")

    assert inodes(data_files(certified)) == inodes(data_files(gold))
    assert inodes(data_files(gold)).isdisjoint(inodes(data_files(silver)))
    assert "doubled" in pl.read_delta(gold).columns
    assert "doubled" not in pl.read_delta(silver).columns
    assert DeltaTable(certified).count() == run.rows_written == 1200
