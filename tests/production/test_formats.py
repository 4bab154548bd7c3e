"""Source formats: chunking, malformed CSV lines, config errors, and format-independent runs."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
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
from signalfactory.core.errors import ConfigError
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
