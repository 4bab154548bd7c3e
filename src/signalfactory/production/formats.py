"""Chunked readers for CSV, Parquet, JSON, Feather / Arrow IPC, HDF5 and Pickle sources.

``read_chunks`` yields ``Chunk`` values of exactly ``chunk_size`` rows (the last may be smaller)
without loading the whole input where the format allows: CSV and NDJSON stream in blocks,
Parquet by row group batches, Feather / Arrow IPC by record batch, HDF5 in row slices. A JSON
array, a Feather v1 file and a pickle are read one file at a time. The format comes from the
file extension unless ``source.format`` names it. Pickle runs code from the file while loading,
so it is refused unless the pipeline sets ``source.allow_pickle: true``.
CSV lines with the wrong number of fields are not lost: they come with the chunk as malformed
rows (line number and raw text) and are quarantined with reason ``MALFORMED_ROW``.

``chunk_refs.plan_chunks`` gives the chunks of Parquet and CSV sources as descriptors that
engine workers read themselves, so the driver never reads or ships the rows.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from signalfactory.core.errors import ConfigError, InputDataError
from signalfactory.production.hdf5 import hdf5_batches
from signalfactory.production.readers import feather_batches, pickle_batches

FORMATS = ("csv", "parquet", "json", "feather", "hdf5", "pickle")
#: Other names ``format:`` accepts, and the format each one means.
FORMAT_ALIASES = {"arrow": "feather", "ipc": "feather", "h5": "hdf5", "pkl": "pickle"}
ROW_COLUMN = "_sf_row"
FILE_COLUMN = "_sf_source_file"
LINE_COLUMN = "_sf_source_line"
RAW_COLUMN = "_sf_raw"
MIN_CHUNK, MAX_CHUNK = 1_000, 1_000_000
_EXTENSIONS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".ndjson": "json",
    ".jsonl": "json",
    ".feather": "feather",
    ".arrow": "feather",
    ".ipc": "feather",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".pkl": "pickle",
    ".pickle": "pickle",
}


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    df: pl.DataFrame
    typed: bool
    #: False when the format has no decimal type (JSON numbers arrive as doubles).
    exact_decimals: bool = True
    malformed: pl.DataFrame | None = None
    #: Text columns the reader parsed into their declared types (``conform(parsed=…)``).
    parsed: tuple[str, ...] = ()


def check_chunk_size(chunk_size: int, where: str) -> int:
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ConfigError(
            f"{where}: chunk_size {chunk_size:,} is outside the allowed range "
            f"{MIN_CHUNK:,} to {MAX_CHUNK:,} rows. Pick a value in that range, e.g. 100000."
        )
    return chunk_size


def canonical_format(name: str) -> str | None:
    """``"arrow"`` → ``"feather"``; None when ``name`` is no format (case is ignored)."""
    fmt = name.lower()
    return fmt if fmt in FORMATS else FORMAT_ALIASES.get(fmt)


def format_names() -> str:
    """``csv, parquet, json, feather (or arrow, ipc), …`` for error messages."""
    names = []
    for fmt in FORMATS:
        aliases = [a for a, f in FORMAT_ALIASES.items() if f == fmt]
        names.append(f"{fmt} (or {', '.join(aliases)})" if aliases else fmt)
    return ", ".join(names)


def detect_format(path: Path, declared: str | None) -> str:
    if declared:
        fmt = canonical_format(declared)
        if fmt is None:
            raise ConfigError(
                f"source.format {declared!r} is not supported; supported formats are "
                f"{format_names()}."
            )
        return fmt
    fmt_name = _EXTENSIONS.get(path.suffix.lower())
    if fmt_name is None:
        raise ConfigError(
            f"cannot tell the format of {path} from its extension; set source.format to one "
            f"of {format_names()}."
        )
    return fmt_name


def pickle_refused(source: object) -> str:
    """Why a pickle ``source`` (a path) is refused without ``allow_pickle``."""
    return (
        f"source {source} is a pickle file; unpickling executes code from the file, so Signal "
        "Factory refuses it unless the pipeline sets source.allow_pickle: true (only for files "
        "you trust)"
    )


_DATA_AFTER_COUNT = re.compile(r"(got \d+)\s*:.*", re.DOTALL)


def safe_arrow_message(exc: Exception) -> str:
    """pyarrow may echo the offending row; keep the diagnosis, drop the data."""
    text = _DATA_AFTER_COUNT.sub(r"\1", str(exc).splitlines()[0] if str(exc) else repr(exc))
    return text[:200]


class Rechunker:
    """Collects arrow batches and hands out polars frames of exactly ``size`` rows."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.parts: list[pa.RecordBatch] = []
        self.rows = 0

    def push(self, batch: pa.RecordBatch) -> Iterator[pl.DataFrame]:
        if batch.num_rows:
            self.parts.append(batch)
            self.rows += batch.num_rows
        while self.rows >= self.size:
            table = pa.Table.from_batches(self.parts)
            yield pl.from_arrow(table.slice(0, self.size))  # type: ignore[misc]
            rest = table.slice(self.size)
            self.parts = rest.to_batches()
            self.rows = rest.num_rows

    def flush(self) -> Iterator[pl.DataFrame]:
        if self.rows:
            yield pl.from_arrow(pa.Table.from_batches(self.parts))  # type: ignore[misc]
        self.parts, self.rows = [], 0


def csv_header(path: Path) -> list[str]:
    """The column names on the first line of CSV ``path`` (a clear error if there are none)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError as exc:
        raise InputDataError(
            f"{path}: the header line is not UTF-8 ({exc.reason}). Re-encode the file as UTF-8."
        ) from None
    if not header:
        raise InputDataError(f"{path}: the file is empty; a CSV source needs a header line.")
    return header


def malformed_row(row: pacsv.InvalidRow, line: int) -> dict[str, object]:
    """What the quarantine keeps of a CSV line with the wrong number of fields."""
    return {
        LINE_COLUMN: line,
        RAW_COLUMN: row.text,
        "_sf_reasons": f"MALFORMED_ROW:expected {row.expected_columns} fields, "
        f"got {row.actual_columns}",
    }


def _csv_batches(path: Path, malformed: list[dict[str, object]]) -> Iterator[pa.RecordBatch]:
    header = csv_header(path)

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append(malformed_row(row, row.number))
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False, block_size=8 << 20),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
        ),
    )
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise InputDataError(
                f"{path}: cannot be read as CSV after line "
                f"{max([int(str(m[LINE_COLUMN])) for m in malformed] or [1])}: "
                f"{safe_arrow_message(exc)}. Fix the file (UTF-8, consistent quoting)."
            ) from None
        yield batch


def _json_batches(path: Path, chunk_size: int) -> Iterator[pa.RecordBatch]:
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    try:
        if head.startswith(b"["):
            # A JSON array cannot be streamed; it is read one file at a time. It goes through
            # the NDJSON reader so both shapes infer the same types (ISO text → timestamp).
            frame = pl.read_json(path)
            if frame.height:
                lines = pajson.read_json(pa.py_buffer(frame.write_ndjson().encode()))
                yield from lines.to_batches(max_chunksize=chunk_size)
            return
        reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=8 << 20))
        yield from reader
    except (pa.ArrowInvalid, pl.exceptions.ComputeError) as exc:
        raise InputDataError(
            f"{path}: cannot be read as JSON ({safe_arrow_message(exc)}). Use one JSON "
            "object per line (NDJSON) or a single JSON array of objects."
        ) from None


def _parquet_batches(path: Path, chunk_size: int) -> Iterator[pa.RecordBatch]:
    """One chunk at a time through polars' reader: it decodes only the row groups a slice
    needs and, unlike pyarrow's pre-buffering batch reader, keeps none of them afterwards."""
    try:
        total = pq.read_metadata(path).num_rows
        lazy = pl.scan_parquet(path)
        for offset in range(0, total, chunk_size):
            frame = lazy.slice(offset, chunk_size).collect()
            yield from frame.to_arrow().to_batches()
    except (pa.ArrowInvalid, OSError, pl.exceptions.PolarsError) as exc:
        raise InputDataError(f"{path}: cannot be read as Parquet ({exc}).") from None


def _batches(
    path: Path, kind: str, chunk_size: int, key: str | None, malformed: list[dict[str, object]]
) -> Iterator[pa.RecordBatch]:
    if kind == "csv":
        return _csv_batches(path, malformed)
    if kind == "json":
        return _json_batches(path, chunk_size)
    if kind == "parquet":
        return _parquet_batches(path, chunk_size)
    if kind == "feather":
        return feather_batches(path)
    if kind == "hdf5":
        return hdf5_batches(path, chunk_size, key)
    return pickle_batches(path, chunk_size)


def align_columns(
    batch: pa.RecordBatch, columns: list[str] | None, path: Path, first: Path
) -> pa.RecordBatch:
    """Files of one source must have the same columns; their order may differ."""
    if columns is None or batch.schema.names == columns:
        return batch
    check_columns(batch.schema.names, columns, path, first)
    return batch.select(columns)


def check_columns(names: list[str], columns: list[str], path: Path, first: Path) -> None:
    if sorted(names) == sorted(columns):
        return
    missing = sorted(set(columns) - set(names))
    extra = sorted(set(names) - set(columns))
    raise InputDataError(
        f"{path} has other columns than {first} (the first file of this source): missing "
        f"{', '.join(missing) or 'none'}, extra {', '.join(extra) or 'none'}. All files of a "
        "partition must share one header; land the odd file as its own source."
    )


def read_chunks(
    files: Sequence[Path],
    fmt: str | None,
    chunk_size: int,
    *,
    allow_pickle: bool = False,
    key: str | None = None,
) -> Iterator[Chunk]:
    """Stream ``files`` as chunks of ``chunk_size`` rows, numbering rows in ``_sf_row``.

    ``fmt`` overrides the extension. Formats and the pickle refusal are checked for every file
    before any is read, so this raises ``ConfigError`` at once. ``key`` picks the table of an
    HDF5 file that holds several.
    """
    kinds = checked_kinds(files, fmt, allow_pickle, key)
    return _read_chunks(files, kinds, chunk_size, key)


def checked_kinds(
    files: Sequence[Path], fmt: str | None, allow_pickle: bool, key: str | None
) -> list[str]:
    kinds = [detect_format(path, fmt) for path in files]
    for path, kind in zip(files, kinds, strict=True):
        if kind == "pickle" and not allow_pickle:
            raise ConfigError(pickle_refused(path))
    if key is not None and files and "hdf5" not in kinds:
        raise ConfigError(
            f"source.key {key!r} picks a table inside an HDF5 file, but no input file is HDF5 "
            f"({', '.join(sorted(set(kinds)))}). Remove source.key."
        )
    return kinds


def _read_chunks(
    files: Sequence[Path], kinds: Sequence[str], chunk_size: int, key: str | None
) -> Iterator[Chunk]:
    index = 0
    row = 0
    rechunker = Rechunker(chunk_size)
    malformed: list[dict[str, object]] = []
    typed = exact = True

    def emit(frame: pl.DataFrame) -> Chunk:
        nonlocal index, row, malformed
        frame = frame.with_columns(
            pl.int_range(row, row + frame.height, dtype=pl.Int64).alias(ROW_COLUMN)
        )
        bad = pl.DataFrame(malformed) if malformed else None
        chunk = Chunk(index=index, df=frame, typed=typed, malformed=bad, exact_decimals=exact)
        index += 1
        row += frame.height
        malformed = []
        return chunk

    first_columns: list[str] | None = None
    for path, kind in zip(files, kinds, strict=True):
        typed, exact = kind != "csv", kind != "json"
        file_malformed: list[dict[str, object]] = []
        for raw in _batches(path, kind, chunk_size, key, file_malformed):
            batch = align_columns(raw, first_columns, path, files[0])
            if first_columns is None:
                first_columns = batch.schema.names
            for frame in rechunker.push(batch):
                malformed.extend({**m, FILE_COLUMN: str(path)} for m in file_malformed)
                file_malformed.clear()
                yield emit(frame)
        malformed.extend({**m, FILE_COLUMN: str(path)} for m in file_malformed)
    for frame in rechunker.flush():
        yield emit(frame)
    if malformed:
        yield emit(pl.DataFrame())
