"""Readers for the typed binary sources: Feather / Arrow IPC and Pickle (HDF5: ``hdf5.py``).

Each yields Arrow record batches; ``formats.read_chunks`` cuts them into chunks.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.feather as pafeather

from signalfactory.core.errors import InputDataError

_IPC_FILE_MAGIC = b"ARROW1"
_FEATHER_V1_MAGIC = b"FEA1"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def feather_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Record batches of a Feather v2 / Arrow IPC file or an Arrow IPC stream, one at a time.

    The IPC file format is read batch by batch through its footer, the stream format in
    order. Legacy Feather v1 files have no record batches and are read whole.
    """
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_IPC_FILE_MAGIC))
        if magic.startswith(_FEATHER_V1_MAGIC):
            yield from pafeather.read_table(str(path)).to_batches()
            return
        with pa.OSFile(str(path), "rb") as source:
            if magic == _IPC_FILE_MAGIC:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)
            else:
                yield from pa.ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(
            f"{path}: cannot be read as Feather / Arrow IPC ({_reason(exc)}). Write it with "
            "pyarrow.feather.write_feather, polars DataFrame.write_ipc or an Arrow IPC writer."
        ) from None


def _as_table(obj: Any, path: Path) -> pa.Table:
    kind = type(obj)
    if isinstance(obj, pl.DataFrame):
        return obj.to_arrow()
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    if kind.__module__.startswith("pandas") and kind.__name__ == "DataFrame":
        return pa.Table.from_pandas(obj, preserve_index=False)
    if isinstance(obj, list) and all(isinstance(row, dict) for row in obj):
        return pa.Table.from_pylist(obj)
    raise InputDataError(
        f"{path}: holds a {kind.__module__}.{kind.__qualname__}; a pickle source must hold a "
        "polars DataFrame, a pyarrow Table, a pandas DataFrame or a list of dicts."
    )


def pickle_batches(path: Path, chunk_size: int) -> Iterator[pa.RecordBatch]:
    """The rows of a pickled table, in batches of ``chunk_size``.

    A pickle cannot be read in parts: the whole file is loaded into memory first. Unpickling
    runs code from the file, so callers only get here when the pipeline set
    ``source.allow_pickle: true``.
    """
    try:
        with path.open("rb") as handle:
            obj = pickle.load(handle)  # noqa: S301 - only with source.allow_pickle: true
    except Exception as exc:  # unpickling can raise anything the file's code raises
        raise InputDataError(
            f"{path}: cannot be unpickled ({type(exc).__name__}: {_reason(exc)})."
        ) from None
    try:
        table = _as_table(obj, path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise InputDataError(
            f"{path}: the pickled rows cannot be made a table ({_reason(exc)}); every row "
            "needs the same type in each column."
        ) from None
    yield from table.to_batches(max_chunksize=chunk_size)
