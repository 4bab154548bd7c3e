"""Chunks by reference (``plan_chunks``): a worker reading a ``ChunkRef`` gets the very chunk
``read_chunks`` gives the driver — same index, rows, ``_sf_row`` numbers and types."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import polars as pl
import pytest

from factories import orders, write_source
from signalfactory.core.errors import ConfigError, InputDataError
from signalfactory.production.formats import ChunkRef, plan_chunks, read_chunks


def _assert_same(files: list[Path], chunk_size: int) -> list[ChunkRef]:
    expected = list(read_chunks(files, None, chunk_size))
    plan = plan_chunks(files, None, chunk_size)
    assert plan is not None
    refs = list(plan)
    assert [r.index for r in refs] == [c.index for c in expected]
    for ref, chunk in zip(refs, expected, strict=True):
        got = pickle.loads(pickle.dumps(ref)).read()  # as a worker process receives it
        assert got.index == chunk.index
        assert got.typed == chunk.typed
        assert got.exact_decimals == chunk.exact_decimals
        assert got.malformed is None
        assert chunk.malformed is None
        assert got.df.schema == chunk.df.schema
        assert got.df.equals(chunk.df)
    return refs


def test_refs_read_the_same_chunks_as_the_driver_across_files(tmp_path: Path) -> None:
    rng = random.Random(7)
    for trial in range(4):
        sizes = [rng.randint(0, 2600) for _ in range(rng.randint(1, 4))]
        files = [
            write_source(tmp_path / f"t{trial}", orders(n, seed=i), "parquet", name=f"f{i}")
            for i, n in enumerate(sizes)
        ]
        _assert_same(files, rng.choice([1000, 1100, 1999]))


def test_refs_follow_the_first_files_column_order(tmp_path: Path) -> None:
    pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}).write_parquet(tmp_path / "1.parquet")
    pl.DataFrame({"b": ["z"], "a": [3]}).write_parquet(tmp_path / "2.parquet")
    (ref,) = _assert_same([tmp_path / "1.parquet", tmp_path / "2.parquet"], 1_000)
    assert ref.read().df.select("a", "b").rows() == [(1, "x"), (2, "y"), (3, "z")]


def test_a_file_with_other_columns_is_named_when_planned(tmp_path: Path) -> None:
    pl.DataFrame({"a": [1], "b": ["x"]}).write_parquet(tmp_path / "1.parquet")
    pl.DataFrame({"c": ["z"], "a": [3]}).write_parquet(tmp_path / "odd.parquet")
    plan = plan_chunks([tmp_path / "1.parquet", tmp_path / "odd.parquet"], None, 1_000)
    assert plan is not None
    with pytest.raises(InputDataError, match=r"odd\.parquet has other columns.*missing b"):
        list(plan)


def test_only_parquet_is_planned_and_config_errors_come_first(tmp_path: Path) -> None:
    csv = write_source(tmp_path, orders(10, seed=1), "csv")
    parquet = write_source(tmp_path, orders(10, seed=1), "parquet")
    assert plan_chunks([csv], None, 1_000) is None
    assert plan_chunks([parquet, csv], None, 1_000) is None
    with pytest.raises(ConfigError, match=r"source\.key"):
        plan_chunks([parquet], None, 1_000, key="orders")


def test_a_file_that_shrank_after_planning_fails_to_read(tmp_path: Path) -> None:
    path = write_source(tmp_path, orders(1_500, seed=1), "parquet")
    plan = plan_chunks([path], None, 1_000)
    assert plan is not None
    refs = list(plan)
    orders(500, seed=1).write_parquet(path)
    with pytest.raises(InputDataError, match="fewer rows"):
        refs[1].read()
