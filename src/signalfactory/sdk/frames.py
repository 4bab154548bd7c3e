"""The frames a producer may hand to ``Observation.write``: polars, pyarrow or pandas."""

from __future__ import annotations

import polars as pl
import pyarrow as pa


def supported(data: object) -> bool:
    return isinstance(data, pl.DataFrame | pa.Table | pa.RecordBatch) or _is_pandas(data)


def _is_pandas(data: object) -> bool:
    cls = type(data)
    return cls.__module__.split(".")[0] == "pandas" and cls.__name__ == "DataFrame"


def to_polars(data: object) -> pl.DataFrame:
    """A polars DataFrame of ``data``; pandas goes through pyarrow (its index is dropped).

    Raises ``TypeError`` for anything else (the caller turns it into a rejected write).
    """
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return _frame(pl.from_arrow(data))
    if _is_pandas(data):
        return _frame(pl.from_arrow(pa.Table.from_pandas(data, preserve_index=False)))
    raise TypeError(
        f"observe: write() takes a polars DataFrame, a pyarrow Table or a pandas DataFrame, "
        f"got {type(data).__name__}"
    )


def _frame(value: pl.DataFrame | pl.Series) -> pl.DataFrame:
    return value if isinstance(value, pl.DataFrame) else value.to_frame()
