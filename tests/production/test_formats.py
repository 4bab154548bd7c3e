"""Source formats: chunking, malformed CSV lines, config errors, and format-independent runs."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.feather as pafeather
import pytest

from factories import (
    DAY1,
    Project,
    certified_path,
    orders,
    pipeline_doc,
    quarantine,
    read_table,
    set_rows,
    write_source,
)
from signalfactory.core.errors import ConfigError, InputDataError
from signalfactory.core.records import RunStatus
from signalfactory.production.formats import (
    LINE_COLUMN,
    RAW_COLUMN,
    ROW_COLUMN,
    detect_format,
    read_chunks,
)
from signalfactory.production.spec import load_pipeline

SOURCE_FORMATS = ["csv", "parquet", "ndjson", "json"]
READER_FORMAT = {"csv": "csv", "parquet": "parquet", "ndjson": "json", "json": "json"}
RANGE = "1,000 to 1,000,000"


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
def test_chunks_have_exactly_chunk_size_rows_except_the_last(tmp_path: Path, fmt: str) -> None:
    rng = random.Random(fmt)
    for trial in range(3):
        sizes = [rng.randint(300, 2600) for _ in range(rng.randint(1, 3))]
        files = [
            write_source(tmp_path / f"t{trial}", orders(n, seed=i), fmt, name=f"f{i}")
            for i, n in enumerate(sizes)
        ]
        chunk_size = rng.choice([1000, 1100, 1999])
        chunks = list(read_chunks(files, READER_FORMAT[fmt], chunk_size))

        heights = [c.df.height for c in chunks]
        total = sum(sizes)
        assert sum(heights) == total
        assert heights[:-1] == [chunk_size] * (len(heights) - 1)
        assert 0 < heights[-1] <= chunk_size
        assert [c.index for c in chunks] == list(range(len(chunks)))
        rows = pl.concat([c.df.select(ROW_COLUMN) for c in chunks])[ROW_COLUMN]
        assert rows.to_list() == list(range(total))
        assert all(c.typed is (fmt != "csv") for c in chunks)


def test_malformed_csv_lines_travel_with_a_chunk(tmp_path: Path) -> None:
    path = write_source(tmp_path, orders(2500, seed=1), "csv")
    with path.open("a", encoding="utf-8") as handle:
        handle.write("1,2,3\n")
        handle.write("4,5\n")
    chunks = list(read_chunks([path], "csv", 1000))
    assert [c.df.height for c in chunks] == [1000, 1000, 500]
    bad = pl.concat([c.malformed for c in chunks if c.malformed is not None])
    assert bad[RAW_COLUMN].to_list() == ["1,2,3", "4,5"]
    assert bad[LINE_COLUMN].to_list() == [2502, 2503]  # 1-based, the header is line 1
    assert bad["_sf_reasons"].to_list() == [
        "MALFORMED_ROW:expected 8 fields, got 3",
        "MALFORMED_ROW:expected 8 fields, got 2",
    ]


def test_unknown_format_is_a_config_error(tmp_path: Path) -> None:
    path = write_source(tmp_path, orders(10, seed=1), "csv")
    with pytest.raises(ConfigError, match=r"'xml' is not supported.*csv, parquet, json"):
        list(read_chunks([path], "xml", 1000))
    with pytest.raises(ConfigError, match=r"set source\.format"):
        detect_format(tmp_path / "orders.txt", None)
    assert detect_format(tmp_path / "orders.NDJSON", None) == "json"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("pipeline: p\ndataset: ds://a/b\nsource: {path: x.xml, format: xml}\n")
    with pytest.raises(ConfigError, match=r"source\.format.*'xml'.*csv, parquet, json"):
        load_pipeline(pipeline)


@pytest.mark.parametrize("chunk_size", [0, 999, 1_000_001])
def test_chunk_size_outside_the_range_is_a_config_error(project: Project, chunk_size: int) -> None:
    project.write(pipeline=pipeline_doc(chunk_size=chunk_size))
    with pytest.raises(ConfigError, match=RANGE):
        load_pipeline(project.pipeline_yaml)
    project.write(pipeline=pipeline_doc(chunk_size=1000))
    project.partition(DAY1, orders(1000, seed=1))
    sf = project.open()
    with pytest.raises(ConfigError, match=RANGE):  # a CLI / API override
        project.run(sf, chunk_size=chunk_size)
    spec = load_pipeline(project.pipeline_yaml)
    with pytest.raises(ConfigError, match=RANGE):  # a PipelineSpec object with an override
        sf.run(spec, {"dt": DAY1}, chunk_size=chunk_size)
    assert sf.store.list_runs() == []  # refused before any run was recorded


@pytest.mark.parametrize("chunk_size", [1000, 1_000_000])
def test_chunk_size_bounds_are_allowed(project: Project, chunk_size: int) -> None:
    project.write(pipeline=pipeline_doc(chunk_size=chunk_size))
    assert load_pipeline(project.pipeline_yaml).chunk_size == chunk_size


def test_every_format_certifies_the_same_rows(project: Project) -> None:
    df = orders(2600, seed=8)
    df = set_rows(df, [5, 1500], order_total=-2.5)
    df = set_rows(df, [77], customer_id=None)
    df = set_rows(df, [2000], order_type="FLASH_SALE")
    results = {}
    for fmt in SOURCE_FORMATS:
        write_source(project.root / f"raw_{fmt}" / f"dt={DAY1}", df, fmt)
        ext = "parquet" if fmt == "parquet" else ("csv" if fmt == "csv" else "json")
        pipeline = project.write_yaml(
            f"pipeline_{fmt}.yaml",
            pipeline_doc(fmt=READER_FORMAT[fmt], path=f"raw_{fmt}/dt={{dt}}/*.{ext}"),
        )
        sf = project.open(f"home_{fmt}")
        outcome = sf.run(pipeline, {"dt": DAY1})
        assert outcome.run.status is RunStatus.SUCCEEDED, (fmt, outcome.run.error)
        certified = read_table(certified_path(sf)).sort("order_id")
        q = quarantine(sf, outcome)
        results[fmt] = (outcome, certified, q)

    base_outcome, base, base_q = results["csv"]
    assert base.height == 2596
    assert base_outcome.run.rows_quarantined == 4
    for fmt in SOURCE_FORMATS[1:]:
        outcome, certified, q = results[fmt]
        assert certified.schema == base.schema, fmt
        assert certified.equals(base), fmt
        assert sorted(q["order_id"].to_list()) == sorted(base_q["order_id"].to_list()), fmt
        assert sorted(q["_sf_reasons"].to_list()) == sorted(base_q["_sf_reasons"].to_list()), fmt
        for field in ("rows_read", "rows_written", "rows_quarantined"):
            assert getattr(outcome.run, field) == getattr(base_outcome.run, field), (fmt, field)


# -- typed binary formats: Feather / Arrow IPC, HDF5, Pickle ----------------------------------

BINARY_VARIANTS = {
    # variant: (file name suffix, format name read_chunks gets when detection is not used)
    "feather": (".feather", "feather"),
    "arrow_stream": (".arrow", "arrow"),
    "ipc_polars": (".ipc", "ipc"),
    "hdf5_pandas": (".h5", "h5"),
    "hdf5_pandas_columns": (".hdf5", "hdf5"),
    "hdf5_tables": (".h5", "hdf5"),
    "pickle_polars": (".pkl", "pickle"),
    "pickle_arrow": (".pickle", "pkl"),
    "pickle_pandas": (".pkl", "pickle"),
    "pickle_records": (".pkl", "pickle"),
}
PANDAS_VARIANTS = {"hdf5_pandas", "hdf5_pandas_columns", "pickle_pandas"}


def typed_orders(n: int, *, seed: int) -> pl.DataFrame:
    """``orders`` plus a boolean column: integer, float, text, timestamp and boolean types."""
    rng = random.Random(seed)
    return orders(n, seed=seed).with_columns(
        pl.Series("gift", [rng.random() < 0.3 for _ in range(n)], dtype=pl.Boolean)
    )


def _write_tables(path: Path, df: pl.DataFrame) -> None:
    """A plain PyTables table (no pandas metadata): text as bytes, time as Time64 seconds."""
    tables = pytest.importorskip("tables")
    width = {
        c: max(1, *(len(v.encode()) for v in df[c])) for c in df.columns if df[c].dtype == pl.String
    }
    description: dict[str, object] = {}
    for pos, (name, dtype) in enumerate(df.schema.items()):
        if dtype == pl.String:
            description[name] = tables.StringCol(width[name], pos=pos)
        elif isinstance(dtype, pl.Datetime):
            description[name] = tables.Time64Col(pos=pos)
        elif dtype == pl.Boolean:
            description[name] = tables.BoolCol(pos=pos)
        elif dtype == pl.Int64:
            description[name] = tables.Int64Col(pos=pos)
        else:
            description[name] = tables.Float64Col(pos=pos)
    with tables.open_file(str(path), mode="w") as handle:
        table = handle.create_table("/", "orders", description)
        for start in range(0, df.height, 700):
            part = df.slice(start, 700)
            rows = np.zeros(part.height, dtype=table.dtype)
            for name, dtype in part.schema.items():
                if dtype == pl.String:
                    rows[name] = [v.encode() for v in part[name]]
                elif isinstance(dtype, pl.Datetime):
                    rows[name] = part[name].dt.epoch("us").to_numpy() / 1e6
                else:
                    rows[name] = part[name].to_numpy()
            table.append(rows)


def write_variant(folder: Path, df: pl.DataFrame, variant: str, *, name: str = "orders") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{BINARY_VARIANTS[variant][0]}"
    if variant in PANDAS_VARIANTS:
        pytest.importorskip("pandas")
    if variant == "feather":
        pafeather.write_feather(df.to_arrow(), path, chunksize=700)
    elif variant == "arrow_stream":
        table = df.to_arrow()
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=650):
                writer.write_batch(batch)
    elif variant == "ipc_polars":
        df.write_ipc(path)
    elif variant == "hdf5_pandas":
        df.to_pandas().to_hdf(path, key="orders", format="table")
    elif variant == "hdf5_pandas_columns":
        df.to_pandas().to_hdf(path, key="orders", format="table", data_columns=True)
    elif variant == "hdf5_tables":
        _write_tables(path, df)
    else:
        obj: object = {
            "pickle_polars": df,
            "pickle_arrow": df.to_arrow(),
            "pickle_pandas": df.to_pandas() if variant == "pickle_pandas" else None,
            "pickle_records": df.to_dicts(),
        }[variant]
        with path.open("wb") as handle:
            pickle.dump(obj, handle)
    return path


def read_all(files: list[Path], fmt: str | None = None, **kwargs: Any) -> pl.DataFrame:
    chunks = list(read_chunks(files, fmt, 1000, **kwargs))
    assert all(c.typed for c in chunks)
    return pl.concat([c.df for c in chunks]).drop(ROW_COLUMN)


def csv_cast(df: pl.DataFrame, folder: Path) -> pl.DataFrame:
    """``df`` written as CSV, read back with ``read_chunks`` and cast to ``df``'s types."""
    text = pl.concat([c.df for c in read_chunks([write_source(folder, df, "csv")], None, 1000)])
    return text.select(
        pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_unit="us", time_zone="UTC")
        if isinstance(t, pl.Datetime)
        else (pl.col(c) == "true")
        if t == pl.Boolean
        else pl.col(c).cast(t)
        for c, t in df.schema.items()
    )


def family(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "float"
    if isinstance(dtype, pl.Datetime):
        return "datetime"  # JSON text infers naive UTC timestamps; the values are compared
    return {pl.String: "text", pl.Categorical: "text", pl.Boolean: "boolean"}[dtype.base_type()]


@pytest.mark.parametrize("variant", [*SOURCE_FORMATS[1:], *BINARY_VARIANTS])
def test_every_typed_format_reads_the_rows_and_types_of_csv_cast_data(
    tmp_path: Path, variant: str
) -> None:
    df = typed_orders(2300, seed=11)
    expected = csv_cast(df, tmp_path / "csv")
    if variant in BINARY_VARIANTS:
        path = write_variant(tmp_path / "in", df, variant)
    else:
        path = write_source(tmp_path / "in", df, variant)
    got = read_all([path], allow_pickle=True)  # format detected from the extension

    assert got.columns == expected.columns
    assert [family(t) for t in got.dtypes] == [family(t) for t in expected.dtypes], variant
    assert got.cast(dict(expected.schema)).equals(expected), variant


@pytest.mark.parametrize(
    "variant", ["feather", "arrow_stream", "ipc_polars", "hdf5_pandas", "hdf5_tables"]
)
def test_feather_and_hdf5_chunks_have_exactly_chunk_size_rows(tmp_path: Path, variant: str) -> None:
    rng = random.Random(variant)
    for trial in range(3):
        sizes = [rng.randint(300, 2600) for _ in range(rng.randint(1, 3))]
        files = [
            write_variant(tmp_path / f"t{trial}", typed_orders(n, seed=i), variant, name=f"f{i}")
            for i, n in enumerate(sizes)
        ]
        chunk_size = rng.choice([1000, 1100, 1999])
        chunks = list(read_chunks(files, BINARY_VARIANTS[variant][1], chunk_size))
        heights = [c.df.height for c in chunks]
        assert sum(heights) == sum(sizes)
        assert heights[:-1] == [chunk_size] * (len(heights) - 1)
        assert 0 < heights[-1] <= chunk_size
        rows = pl.concat([c.df.select(ROW_COLUMN) for c in chunks])[ROW_COLUMN]
        assert rows.to_list() == list(range(sum(sizes)))
        assert all(c.typed for c in chunks)


class _Touch:
    """Unpickling this creates ``marker``: proof that code from a file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_pickle_source_is_refused_without_allow_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "orders.pkl"
    path.write_bytes(pickle.dumps([{"order_id": 1, "touch": _Touch(marker)}]))
    disguised = tmp_path / "orders.bin"
    disguised.write_bytes(path.read_bytes())
    refusal = (
        r"source .*orders\.(pkl|bin) is a pickle file; unpickling executes code from the file, "
        r"so Signal Factory refuses it unless the pipeline sets source\.allow_pickle: true "
        r"\(only for files you trust\)"
    )
    for files, fmt in (([path], None), ([disguised], "pkl"), ([disguised], "pickle")):
        with pytest.raises(ConfigError, match=refusal) as caught:
            read_chunks(files, fmt, 1000)  # refused before anything is read
        assert caught.value.exit_code == 2
    assert not marker.exists()

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text('pipeline: p\ndataset: ds://a/b\nsource: {path: "raw/{dt}/*.pkl"}\n')
    with pytest.raises(ConfigError, match=r"allow_pickle: true"):
        load_pipeline(pipeline)
    pipeline.write_text(
        'pipeline: p\ndataset: ds://a/b\nsource: {path: "raw/{dt}/x", format: PKL}\n'
    )
    with pytest.raises(ConfigError, match=r"allow_pickle: true"):
        load_pipeline(pipeline)
    pipeline.write_text(
        'pipeline: p\ndataset: ds://a/b\nsource: {path: "raw/{dt}/*.pkl", allow_pickle: true}\n'
    )
    assert load_pipeline(pipeline).source.allow_pickle is True


def test_a_pickle_source_is_read_with_allow_pickle(tmp_path: Path) -> None:
    df = typed_orders(1500, seed=4)
    path = write_variant(tmp_path, df, "pickle_polars")
    chunks = list(read_chunks([path], None, 1000, allow_pickle=True))
    assert [c.df.height for c in chunks] == [1000, 500]
    assert pl.concat([c.df for c in chunks]).drop(ROW_COLUMN).equals(df)

    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"not": "a table"}))
    with pytest.raises(InputDataError, match=r"holds a builtins\.dict; a pickle source must hold"):
        list(read_chunks([other], None, 1000, allow_pickle=True))


def test_formats_come_from_the_extension_or_an_explicit_format(tmp_path: Path) -> None:
    for name, fmt in {
        "a.feather": "feather",
        "a.ARROW": "feather",
        "a.ipc": "feather",
        "a.h5": "hdf5",
        "a.hdf5": "hdf5",
        "a.pkl": "pickle",
        "a.pickle": "pickle",
        "a.pq": "parquet",
    }.items():
        assert detect_format(tmp_path / name, None) == fmt, name
    for alias, fmt in {"arrow": "feather", "IPC": "feather", "h5": "hdf5", "pkl": "pickle"}.items():
        assert detect_format(tmp_path / "a.csv", alias) == fmt  # the explicit format wins

    df = typed_orders(1200, seed=2)
    feather = write_variant(tmp_path, df, "feather").rename(tmp_path / "orders.dat")
    with pytest.raises(
        ConfigError, match=r"set source\.format to one of .*feather \(or arrow, ipc\)"
    ):
        read_chunks([feather], None, 1000)
    assert read_all([feather], "arrow").equals(df)
    hdf5 = write_variant(tmp_path, df, "hdf5_tables").rename(tmp_path / "orders.csv")
    assert read_all([hdf5], "hdf5").height == df.height  # not read as CSV

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("pipeline: p\ndataset: ds://a/b\nsource: {path: x.dat, format: ipc}\n")
    assert load_pipeline(pipeline).source.format == "ipc"
    pipeline.write_text("pipeline: p\ndataset: ds://a/b\nsource: {path: x.dat, format: xlsx}\n")
    with pytest.raises(
        ConfigError, match=r"'xlsx' is not supported.*hdf5 \(or h5\), pickle \(or pkl\)"
    ):
        load_pipeline(pipeline)


def test_an_hdf5_file_with_several_tables_needs_source_key(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    path = tmp_path / "two.h5"
    first, second = typed_orders(1200, seed=1), typed_orders(300, seed=2)
    first.to_pandas().to_hdf(path, key="orders", format="table")
    second.to_pandas().to_hdf(path, key="archive/old", format="table")
    assert isinstance(pd.read_hdf(path, "orders"), pd.DataFrame)

    with pytest.raises(InputDataError, match=r"two\.h5: holds 2 tables") as caught:
        list(read_chunks([path], None, 1000))
    assert "/orders" in caught.value.message
    assert "/archive/old" in caught.value.message
    assert "source.key" in caught.value.message

    assert read_all([path], key="orders").equals(first)
    assert read_all([path], key="/archive/old/table").equals(second)
    with pytest.raises(InputDataError, match=r"no table at source\.key 'nope'.*/archive/old"):
        list(read_chunks([path], None, 1000, key="nope"))
    csv = write_source(tmp_path, first, "csv")
    with pytest.raises(ConfigError, match=r"source\.key 'orders'.*no input file is HDF5"):
        read_chunks([csv], None, 1000, key="orders")


def test_hdf5_from_pandas_reads_missing_values_as_null(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "name": ["a", None, "é"],
            "score": [1.5, float("nan"), 2.0],
            "seen": pd.to_datetime(["2026-02-13T01:00:00Z", None, "2026-02-14T00:00:00Z"]),
            "size": pd.Categorical(["S", "L", None]),
        }
    )
    path = tmp_path / "nulls.h5"
    frame.to_hdf(path, key="t", format="table")
    got = read_all([path])
    assert got["name"].to_list() == ["a", None, "é"]
    assert got["score"].to_list() == [1.5, None, 2.0]
    seen = got["seen"].dtype
    assert isinstance(seen, pl.Datetime)
    assert seen.time_zone == "UTC"
    assert got["seen"].is_null().to_list() == [False, True, False]
    assert got["size"].to_list() == ["S", "L", None]


def test_hdf5_attributes_cannot_run_code(tmp_path: Path) -> None:
    """PyTables unpickles node attributes on open: the reader lets them hold plain data only."""
    tables = pytest.importorskip("tables")
    attributeset = pytest.importorskip("tables.attributeset")

    marker = tmp_path / "code-ran"
    path = tmp_path / "crafted.h5"
    _write_tables(path, typed_orders(1100, seed=3))
    with tables.open_file(str(path), mode="a") as handle:
        handle.root._v_attrs.payload = _Touch(marker)
        handle.get_node("/orders").attrs.payload = _Touch(marker)
    assert not marker.exists()

    assert read_all([path]).height == 1100
    assert not marker.exists()
    assert attributeset.pickle is pickle  # the guard is lifted after reading


def test_files_of_one_source_may_order_columns_differently(tmp_path: Path) -> None:
    pl.DataFrame({"a": ["1", "2"], "b": ["x", "y"]}).write_csv(tmp_path / "1.csv")
    pl.DataFrame({"b": ["z"], "a": ["3"]}).write_csv(tmp_path / "2.csv")
    (chunk,) = read_chunks([tmp_path / "1.csv", tmp_path / "2.csv"], "csv", 1_000)
    assert chunk.df.select("a", "b").rows() == [("1", "x"), ("2", "y"), ("3", "z")]


def test_a_file_with_other_columns_is_named_in_the_error(tmp_path: Path) -> None:
    pl.DataFrame({"a": ["1"], "b": ["x"]}).write_csv(tmp_path / "1.csv")
    pl.DataFrame({"c": ["z"], "a": ["3"]}).write_csv(tmp_path / "odd.csv")
    with pytest.raises(InputDataError, match=r"odd\.csv has other columns.*missing b, extra c"):
        list(read_chunks([tmp_path / "1.csv", tmp_path / "odd.csv"], "csv", 1_000))
