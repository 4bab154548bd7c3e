"""Chunks by reference (``plan_chunks``): a worker reading a ``ChunkRef`` gets the very chunk
``read_chunks`` gives the driver — same index, rows, ``_sf_row`` numbers and types. CSV
sources are cut at line ends (``CsvChunkRef``): the same chunks when every line is a row, and
blank or malformed lines keep their line numbers."""

from __future__ import annotations

import dataclasses
import pickle
import random
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from factories import orders, write_source
from signalfactory.core.errors import ConfigError, InputDataError
from signalfactory.enforcement.policy import PolicyBundle
from signalfactory.enforcement.schema import conform, reader_types
from signalfactory.production.chunk_refs import ChunkRef, CsvChunkRef, plan_chunks, plan_csv
from signalfactory.production.formats import read_chunks


def _assert_same(files: list[Path], chunk_size: int) -> list[ChunkRef | CsvChunkRef]:
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


def test_files_of_one_chunk_with_other_column_types_are_named(tmp_path: Path) -> None:
    pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}).write_parquet(tmp_path / "1.parquet")
    pl.DataFrame({"a": ["3"], "b": ["z"]}).write_parquet(tmp_path / "odd.parquet")
    plan = plan_chunks([tmp_path / "1.parquet", tmp_path / "odd.parquet"], None, 1_000)
    assert plan is not None
    (ref,) = list(plan)
    with pytest.raises(InputDataError, match=r"odd\.parquet.*different column types"):
        ref.read()


def test_a_file_with_other_columns_is_named_when_planned(tmp_path: Path) -> None:
    pl.DataFrame({"a": [1], "b": ["x"]}).write_parquet(tmp_path / "1.parquet")
    pl.DataFrame({"c": ["z"], "a": [3]}).write_parquet(tmp_path / "odd.parquet")
    plan = plan_chunks([tmp_path / "1.parquet", tmp_path / "odd.parquet"], None, 1_000)
    assert plan is not None
    with pytest.raises(InputDataError, match=r"odd\.parquet has other columns.*missing b"):
        list(plan)


def test_only_parquet_and_csv_are_planned_and_config_errors_come_first(tmp_path: Path) -> None:
    csv = write_source(tmp_path, orders(10, seed=1), "csv")
    parquet = write_source(tmp_path, orders(10, seed=1), "parquet")
    ndjson = write_source(tmp_path, orders(10, seed=1), "json")
    assert plan_chunks([csv], None, 1_000) is not None
    assert plan_chunks([ndjson], None, 1_000) is None
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


def _lines(path: Path, *, crlf: bool = False, terminated: bool = True) -> Path:
    """Rewrite ``path`` with CRLF line ends and/or without the last line break."""
    text = path.read_text(encoding="utf-8")
    if crlf:
        text = text.replace("\n", "\r\n")
    if not terminated:
        text = text.rstrip("\r\n")
    path.write_bytes(text.encode())
    return path


def test_csv_refs_read_the_same_chunks_as_the_driver_across_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signalfactory.production import chunk_refs

    monkeypatch.setattr(chunk_refs, "SCAN_BLOCK", 4096)  # chunk boundaries inside scan blocks
    rng = random.Random(11)
    for trial in range(6):
        sizes = [rng.randint(1, 2600) for _ in range(rng.randint(1, 3))]
        files = [
            _lines(
                write_source(tmp_path / f"t{trial}", orders(n, seed=i), "csv", name=f"f{i}"),
                crlf=trial % 3 == 1,
                terminated=trial % 2 == 0,
            )
            for i, n in enumerate(sizes)
        ]
        refs = _assert_same(files, rng.choice([1000, 1100, 1999]))
        assert all(isinstance(r, CsvChunkRef) for r in refs)
        assert sum(r.rows for r in refs) == sum(sizes)


def test_quoted_commas_and_quotes_are_planned_and_quoted_line_breaks_are_not(
    tmp_path: Path,
) -> None:
    quoted = tmp_path / "quoted.csv"
    rows = [f'{i},"a, ""b"" {i}",x' for i in range(2_500)]
    quoted.write_text("id,note,tag\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (first, *_rest) = _assert_same([quoted], 1_000)
    assert first.read().df["note"][1] == 'a, "b" 1'

    broken = tmp_path / "multiline.csv"
    broken.write_text('id,note,tag\n1,"two\nlines",x\n2,plain,y\n', encoding="utf-8")
    assert plan_csv([broken], 1_000) is None
    assert plan_chunks([quoted, broken], None, 1_000) is None  # one such file: all streamed


def test_blank_and_malformed_csv_lines_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    lines = ["a,b"] + [f"{i},v{i}" for i in range(2_400)]
    lines[5] = ""  # blank: line 6, no row
    lines[1_203] = "1202,too,many"  # malformed: line 1,204
    lines[2_001] = "lonely"  # malformed: line 2,002, in the third chunk
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plan = plan_chunks([path], None, 1_000)
    assert plan is not None
    chunks = [ref.read() for ref in plan]
    # 1,000 lines a chunk (the last has 400); a blank or malformed line is no row.
    assert [c.df.height for c in chunks] == [999, 999, 399]
    rows = pl.concat([c.df for c in chunks])
    # _sf_row is the data line's ordinal (line - 2), so it leads back to the file's line.
    assert rows["_sf_row"].to_list() == [i for i in range(2_400) if i not in (4, 1_202, 2_000)]
    assert (rows["a"].cast(pl.Int64) == rows["_sf_row"]).all()
    bad = pl.concat([c.malformed for c in chunks if c.malformed is not None])
    assert bad["_sf_source_line"].to_list() == [1_204, 2_002]
    assert bad["_sf_raw"].to_list() == ["1202,too,many", "lonely"]
    assert bad["_sf_source_file"].to_list() == [str(path)] * 2


def test_a_typed_chunk_with_malformed_lines_stays_typed(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    lines = ["a,b"] + [f"{i},v{i}" for i in range(1_500)]
    lines[7] = "6,too,many"  # malformed: line 8
    lines[1_100] = ""  # blank: line 1,101
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plan = plan_chunks([path], None, 1_000, csv_types={"a": pa.int64(), "b": None})
    assert plan is not None
    chunks = [ref.read() for ref in plan]
    assert [c.parsed for c in chunks] == [("a",), ("a",)]
    assert chunks[0].df.schema["a"] == pl.Int64
    rows = pl.concat([c.df for c in chunks])
    assert rows["_sf_row"].to_list() == [i for i in range(1_500) if i not in (6, 1_099)]
    assert (rows["a"] == rows["_sf_row"]).all()
    (bad,) = [c.malformed for c in chunks if c.malformed is not None]
    assert bad["_sf_source_line"].to_list() == [8]
    assert bad["_sf_raw"].to_list() == ["6,too,many"]


@pytest.mark.parametrize("typed", [False, True])
def test_a_quote_inside_an_unquoted_field_that_arrow_reads_across_lines_is_named(
    tmp_path: Path, typed: bool
) -> None:
    # Every line holds an even number of quotes, so the scan cuts at line ends; Arrow opens a
    # quoted field only at a field's start, so "c<newline>d" is one field and 3 lines read
    # as 2 records. The read names the lines and the fix instead of misnumbering rows.
    path = tmp_path / "stray.csv"
    path.write_bytes(b'id,v,w\n1,a"b,"c\nd"e"\n3,f,g\n')
    plan = plan_chunks([path], None, 1_000, csv_types={"id": pa.int64()} if typed else None)
    assert plan is not None
    (ref,) = plan
    with pytest.raises(InputDataError, match=r"stray\.csv: lines 2–4 .* as 2 records"):
        ref.read()


def test_a_csv_slice_that_is_not_utf8_is_named_with_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    rows = [f"{i},name{i}".encode() for i in range(1_500)]
    rows[1_300] = b"1300,caf\xe9"  # line 1,302, in the second chunk (lines 1,002-1,501)
    path.write_bytes(b"id,name\n" + b"\n".join(rows) + b"\n")
    for types in (None, {"id": pa.int64()}):  # typed parses fall back to text, which names it
        plan = plan_chunks([path], None, 1_000, csv_types=types)
        assert plan is not None
        first, second = plan
        assert first.read().df.height == 1_000
        with pytest.raises(
            InputDataError, match=r"latin1\.csv: cannot be read as CSV in lines 1,002–1,501"
        ):
            second.read()


def test_a_csv_that_shrank_after_planning_fails_to_read(tmp_path: Path) -> None:
    path = write_source(tmp_path, orders(1_500, seed=1), "csv")
    refs = plan_csv([path], 1_000)
    assert refs is not None
    orders(500, seed=1).write_csv(path)
    with pytest.raises(InputDataError, match="shorter than when the run started"):
        refs[1].read()


#: Values a text column may hold, per declared type: ones Arrow parses as the text path casts
#: them, ones it refuses (the chunk goes the text way) and the two it would read otherwise
#: (a hex integer, a decimal past its precision), which the reader must catch.
EDGE_VALUES = {
    "INTEGER": ["5", "+5", "-0", "007", "1e3", " 5", "0x10", "0X1f", "9223372036854775808", ""],
    "DECIMAL(15,2)": [
        "1.5",
        "1.005",
        ".5",
        "+1.5",
        "1e2",
        "12345678901234.5",
        "-12345678901234.5",
        "1,5",
        "NaN",
        "-0.00",
        "0x10",
    ],
    "DOUBLE": [
        *("1.5", "1e3", "inf", "-Infinity", "nan", "+1.5", "5.", "1,5", "1e400", "0x10"),
        *("nan(1)", "-nan(ind)", "NAN"),
    ],
    "DATE": ["2024-01-05", "2024-1-5", "20240105", "2024-02-30", " 2024-01-05", "9999-12-31"],
}
CLEAN = {"INTEGER": "42", "DECIMAL(15,2)": "12.30", "DOUBLE": "0.25", "DATE": "2026-03-01"}


def _typed_and_text(path: Path, policy: Any) -> tuple[Any, Any, tuple[str, ...]]:
    (typed_ref,) = plan_csv([path], 1_000, reader_types(policy)) or []
    assert typed_ref.types  # every declared column is in the header
    text_ref = dataclasses.replace(typed_ref, types=())
    typed_chunk, text_chunk = typed_ref.read(), text_ref.read()
    assert text_chunk.parsed == ()
    results = [
        conform(c.df, policy, typed=c.typed, exact_decimals=c.exact_decimals, parsed=c.parsed)
        for c in (typed_chunk, text_chunk)
    ]
    return results[0], results[1], typed_chunk.parsed


@pytest.mark.parametrize("kind", sorted(EDGE_VALUES))
def test_typed_csv_parsing_gives_what_casting_the_text_gives(tmp_path: Path, kind: str) -> None:
    """Workers parse declared columns straight into their types where that cannot change the
    result: same rows, same quarantined rows and the same G3_SCHEMA evidence as the text path
    (parse as text, cast in ``conform``), for every edge value."""
    policy = PolicyBundle.model_validate(
        {
            "schema": {
                "constraints": [{"field": "id", "type": "STRING"}, {"field": "x", "type": kind}]
            }
        }
    )
    read_typed = []
    for i, value in enumerate(["", *EDGE_VALUES[kind]]):  # "" first: only clean values
        lines = [f"r{n},{CLEAN[kind]}" for n in range(20)]
        if value:
            lines.insert(7, f'r-edge,"{value}"')
        path = tmp_path / f"{i}.csv"
        path.write_text("id,x\n" + "\n".join(lines) + "\n")
        typed, text, parsed = _typed_and_text(path, policy)
        assert typed.df.schema == text.df.schema, value
        assert typed.df.equals(text.df), value
        assert typed.invalid.equals(text.invalid), value
        assert typed.tally.to_json() == text.tally.to_json(), value
        if parsed:
            read_typed.append(value)
    assert read_typed[0] == ""  # a clean chunk is parsed typed, not cast from text
    # the two values Arrow would read where the text path does not are caught
    assert not {"0x10", "0X1f", "12345678901234.5", "-12345678901234.5"} & set(read_typed)


def test_no_typed_parsing_while_a_declared_column_is_cast_from_text() -> None:
    """A BOOLEAN or TIMESTAMP column is cast from text; a value of it that does not cast
    quarantines its row at bronze as it arrived, so the other columns must be text too."""

    def policy(*kinds: str) -> PolicyBundle:
        fields = [{"field": f"c{i}", "type": kind} for i, kind in enumerate(kinds)]
        return PolicyBundle.model_validate({"schema": {"constraints": fields}})

    assert reader_types(policy("INTEGER", "STRING", "DATE")) == {
        "c0": pa.int64(),
        "c1": None,
        "c2": pa.date32(),
    }
    assert reader_types(policy("INTEGER", "TIMESTAMP")) == {}
    assert reader_types(policy("BOOLEAN", "DECIMAL(10,2)")) == {}
