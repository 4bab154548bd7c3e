"""Exports: one partition of a lake table written as CSV, Parquet, JSON, Feather, HDF5 or Pickle."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pytest
from deltalake import write_deltalake

from factories import (
    DAY1,
    DAY2,
    URN,
    Project,
    certified_path,
    orders,
    pipeline_doc,
    read_table,
    set_rows,
)
from signalfactory.core.errors import ConfigError, InputDataError
from signalfactory.core.records import RunStatus
from signalfactory.production import exports
from signalfactory.production.exports import ExportError, export_table, run_exports
from signalfactory.production.formats import ROW_COLUMN, read_chunks
from signalfactory.production.spec import ExportSpec, load_pipeline

FORMATS = ("csv", "parquet", "json", "feather", "hdf5", "pickle")
EXTENSION = {"json": "ndjson", "hdf5": "h5", "pickle": "pkl"}


@dataclass(frozen=True)
class Lake:
    certified: str
    gold: str
    quarantine: str
    root: Path

    def rows(self, day: str) -> pl.DataFrame:
        return read_table(self.certified).filter(pl.col("dt") == day).sort("order_id")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """Two certified partitions made by real runs; DAY1 also quarantines two rows."""
    project = Project(tmp_path_factory.mktemp("exports") / "project")
    try:
        project.write(pipeline=pipeline_doc())
        day1 = set_rows(orders(2400, seed=21), [3, 900], order_total=-1.0)
        day1 = set_rows(day1, [50, 51], email=None)
        project.partition(DAY1, day1)
        project.partition(DAY2, orders(1300, seed=22, first_id=10_000, day=DAY2))
        sf = project.open()
        first = project.run(sf, DAY1)
        assert project.run(sf, DAY2).run.status is RunStatus.SUCCEEDED
        assert first.run.status is RunStatus.SUCCEEDED
        (record,) = [q for q in sf.store.list_quarantine(URN) if q.run_id == first.run.run_id]
        certified = certified_path(sf)
        gold = str(Path(certified).parent.parent / "gold" / "orders")
        yield Lake(certified, gold, record.path, project.root)
    finally:
        project.close()


def spec(fmt: str, layer: str = "certified", name: str = "orders") -> ExportSpec:
    ext = EXTENSION.get(fmt, fmt)
    return ExportSpec.model_validate(
        {"format": fmt, "path": f"exports/dt={{dt}}/{name}.{ext}", "layer": layer}
    )


def read_back(path: Path, fmt: str, schema: pa.Schema) -> pl.DataFrame:
    """An exported file as a frame, typed like ``schema`` (text formats are cast)."""
    if fmt == "csv":
        options = pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True)
        table = pacsv.read_csv(path, convert_options=options)
    elif fmt == "json":
        options = pajson.ParseOptions(explicit_schema=schema)
        table = pajson.read_json(path, parse_options=options)
    elif fmt == "parquet":
        return pl.read_parquet(path)
    elif fmt == "feather":
        table = pa.ipc.open_file(pa.OSFile(str(path))).read_all()
    elif fmt == "hdf5":
        chunks = list(read_chunks([path], None, 1000))
        return pl.concat([c.df for c in chunks]).drop(ROW_COLUMN)
    else:
        with path.open("rb") as handle:
            table = pickle.load(handle)
        assert isinstance(table, pa.Table)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_round_trips_the_certified_rows_of_a_partition(
    lake: Lake, tmp_path: Path, fmt: str
) -> None:
    expected = lake.rows(DAY1)
    assert expected.height == 2398
    assert expected["email"].null_count() == 2  # nulls survive every format

    path = export_table(lake.certified, {"dt": DAY1}, spec(fmt), tmp_path, batch_rows=500)

    assert path == tmp_path / "exports" / f"dt={DAY1}" / f"orders.{EXTENSION.get(fmt, fmt)}"
    got = read_back(path, fmt, expected.to_arrow().schema).sort("order_id")
    if fmt not in ("csv", "json"):  # typed formats keep the table's types
        assert got.schema == expected.schema, fmt
    assert got.equals(expected), fmt
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


@pytest.mark.parametrize("fmt", ["csv", "hdf5"])
def test_a_partition_filter_exports_only_that_partition(
    lake: Lake, tmp_path: Path, fmt: str
) -> None:
    path = export_table(lake.certified, {"dt": DAY2}, spec(fmt), tmp_path, batch_rows=400)
    expected = lake.rows(DAY2)
    got = read_back(path, fmt, expected.to_arrow().schema).sort("order_id")
    assert got["dt"].unique().to_list() == [DAY2]
    assert got.equals(expected)
    assert read_table(lake.certified).height > got.height  # the table holds more than this


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_writer_failing_midway_leaves_no_partial_file(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    real = exports._WRITERS[fmt]
    passes = 2 if fmt == "hdf5" else 1  # the HDF5 writer sizes text columns in a first pass
    seen: list[tuple[Path, bool]] = []

    def crash_after_first_batch(target: Path, schema: pa.Schema, batches: exports.Batches) -> int:
        calls = 0

        def failing() -> Iterator[pa.RecordBatch]:
            nonlocal calls
            calls += 1
            source = batches()
            yield next(source)
            if calls == passes:
                seen.append((target, target.exists()))
                raise RuntimeError("disk unplugged")
            yield from source

        return real(target, schema, failing)

    monkeypatch.setitem(exports._WRITERS, fmt, crash_after_first_batch)
    export = spec(fmt)
    folder = tmp_path / "exports" / f"dt={DAY1}"
    folder.mkdir(parents=True)
    previous = folder / Path(export.path).name
    previous.write_bytes(b"the previous export")

    with pytest.raises(RuntimeError, match="disk unplugged"):
        export_table(lake.certified, {"dt": DAY1}, export, tmp_path, batch_rows=300)

    (temporary, existed), *_ = seen
    assert temporary.parent == folder
    assert temporary.name.startswith(f".{previous.name}.")
    assert existed is (fmt != "pickle")  # the half-written file existed (pickle writes at the end)
    assert previous.read_bytes() == b"the previous export"  # untouched
    assert sorted(p.name for p in folder.iterdir()) == [previous.name]  # temporary removed


def test_run_exports_reports_every_export(lake: Lake, tmp_path: Path) -> None:
    specs = [spec("parquet"), spec("h5", "gold", "gold"), spec("csv", "quarantine", "held")]
    results = run_exports(
        specs,
        certified_path=lake.certified,
        gold_path=lake.gold,
        quarantine_path=lake.quarantine,
        partition={"dt": DAY1},
        base_dir=tmp_path,
        batch_rows=1000,
    )
    folder = tmp_path / "exports" / f"dt={DAY1}"
    assert results == [
        {
            "layer": "certified",
            "format": "parquet",
            "path": str(folder / "orders.parquet"),
            "rows": 2398,
            "error": None,
        },
        {
            "layer": "gold",
            "format": "hdf5",
            "path": str(folder / "gold.h5"),
            "rows": 2398,
            "error": None,
        },
        {
            "layer": "quarantine",
            "format": "csv",
            "path": str(folder / "held.csv"),
            "rows": 2,
            "error": None,
        },
    ]
    held = pl.read_csv(folder / "held.csv", infer_schema=False)
    assert sorted(held["order_id"].to_list()) == ["4", "901"]
    assert held["_sf_reasons"].str.contains("order_total > 0").all()

    # A later run without quarantine: no quarantine file, and the stale one is removed.
    again = run_exports(
        specs[2:],
        certified_path=lake.certified,
        gold_path=lake.gold,
        quarantine_path=None,
        partition={"dt": DAY1},
        base_dir=tmp_path,
    )
    assert again == [
        {"layer": "quarantine", "format": "csv", "path": None, "rows": 0, "error": None}
    ]
    assert not (folder / "held.csv").exists()


def test_an_export_that_cannot_hold_a_column_fails_alone(tmp_path: Path) -> None:
    table = tmp_path / "lake" / "tags"
    data = pa.table({"id": [1, 2], "tags": [["a"], ["b", "c"]], "dt": [DAY1, DAY1]})
    write_deltalake(str(table), data, partition_by=["dt"])
    results = run_exports(
        [spec("csv"), spec("hdf5"), spec("parquet")],
        certified_path=str(table),
        gold_path=str(table),
        quarantine_path=None,
        partition={"dt": DAY1},
        base_dir=tmp_path,
    )
    csv, hdf5, parquet = results
    assert csv["path"] is None
    assert "csv export of the certified layer" in csv["error"]
    assert "parquet and feather hold every column type" in csv["error"].lower()
    assert hdf5["path"] is None
    assert "column 'tags' has type list<element: string>" in hdf5["error"]
    assert parquet["error"] is None
    assert parquet["rows"] == 2
    assert sorted(p.name for p in (tmp_path / "exports" / f"dt={DAY1}").iterdir()) == [
        "orders.parquet"
    ]
    with pytest.raises(ExportError, match="csv export"):
        export_table(str(table), {"dt": DAY1}, spec("csv"), tmp_path)
    with pytest.raises(InputDataError, match="is not a Delta table"):
        export_table(str(tmp_path / "nowhere"), {"dt": DAY1}, spec("csv"), tmp_path)


def test_exports_in_the_pipeline_file(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    head = 'pipeline: p\ndataset: ds://a/b\nsource: {path: "raw/dt={dt}/*.csv"}\nexports:\n'
    pipeline.write_text(
        head + '  - {format: arrow, path: "out/{dt}.arrow"}\n'
        '  - {format: pkl, path: "out/{dt}-held.pkl", layer: quarantine}\n'
    )
    loaded = load_pipeline(pipeline).exports
    assert [(e.format, e.layer) for e in loaded] == [
        ("feather", "certified"),
        ("pickle", "quarantine"),
    ]

    for line, message in (
        ('  - {format: xlsx, path: "out/{dt}.xlsx"}\n', r"'xlsx' is not supported.*feather \(or"),
        (
            '  - {format: csv, path: "out/{day}.csv"}\n',
            r"uses \{day\}, which is not a partition key.*dt",
        ),
        ('  - {format: csv, path: "out/{dt}.csv", layer: silver}\n', r"exports\.0\.layer"),
    ):
        pipeline.write_text(head + line)
        with pytest.raises(ConfigError, match=message):
            load_pipeline(pipeline)
