"""A partition's profile built from its chunks, where the rows already are (E2).

A certified run must not read its output again to profile it. Each chunk worker summarises
its gold rows in a small frame (``chunk_profile``, one row per column), staged beside the
chunk's files; after the run ``merge_chunk_profiles`` folds the summaries into the same
:class:`~signalfactory.enforcement.profile.Baseline` that ``profile_frame`` gives:

* row and null counts, min and max: exact;
* mean and std: exact (each chunk's count, mean and sum of squared deviations, merged with
  Chan's formula);
* distinct counts: exact below ``KMV_SIZE`` (16,384) distinct values, else a k-minimum-values
  estimate over the 64-bit hashes (about 1% error), so the columns say ``exact: false``;
* quantiles: from every ``SAMPLE_EVERY``-th row of each chunk, thinned to at most about
  ``SAMPLE_ROWS`` values (estimates);
* enum sets: exact (each chunk keeps a text column's values while there are few).

Summaries are bounded by column count, not by rows: at most ``KMV_SIZE`` hashes and
``chunk rows / SAMPLE_EVERY`` sampled values per column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import polars as pl

from signalfactory.core.records import utcnow
from signalfactory.enforcement.profile import (
    ENUM_MAX_DISTINCT,
    NUMERIC_TYPES,
    QUANTILES,
    Baseline,
    ColumnProfile,
    NumericStats,
    enum_like,
    partition_key,
    pii_like,
)
from signalfactory.enforcement.schema import fingerprint, logical_schema

KMV_SIZE = 16_384
SAMPLE_EVERY = 32
#: The merged quantile sample is thinned to about this many values.
SAMPLE_ROWS = 200_000
_HASH_RANGE = float(1 << 64)

_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "name": pl.String,
    "type": pl.String,
    "rows": pl.Int64,
    "nulls": pl.Int64,
    "n": pl.Int64,
    "mean": pl.Float64,
    "m2": pl.Float64,
    "min": pl.Float64,
    "max": pl.Float64,
    "sample": pl.List(pl.Float64),
    "hashes": pl.List(pl.UInt64),
    "values": pl.List(pl.String),
}


def chunk_profile(df: pl.DataFrame, enum_max_distinct: int = ENUM_MAX_DISTINCT) -> pl.DataFrame:
    """One row per column of ``df`` (system columns skipped): its counts, moments, a row
    sample, the ``KMV_SIZE`` smallest distinct hashes and, for a text column with at most
    ``enum_max_distinct`` values, those values."""
    logical = logical_schema(df.schema)
    records: list[dict[str, object]] = []
    lists: dict[str, list[pl.Series]] = {"sample": [], "hashes": [], "values": []}
    for name, kind in logical.items():
        column = df.get_column(name)
        present = column.drop_nulls()
        record: dict[str, object] = {
            "name": name,
            "type": kind,
            "rows": df.height,
            "nulls": column.null_count(),
            "n": present.len(),
        }
        sample = None
        if kind in NUMERIC_TYPES and present.len():
            values = present.cast(pl.Float64)
            record.update(mean=values.mean(), m2=_m2(values), min=values.min(), max=values.max())
            sample = values.gather_every(SAMPLE_EVERY)
        hashes = _smallest_hashes(present.hash(seed=0))
        few = kind == "STRING" and 0 < hashes.len() <= enum_max_distinct
        lists["sample"].append(_one_list(sample, "sample"))
        lists["hashes"].append(_one_list(hashes, "hashes"))
        lists["values"].append(_one_list(present.unique().sort() if few else None, "values"))
        records.append(record)
    scalars = pl.DataFrame(records, schema={k: v for k, v in _SCHEMA.items() if k not in lists})
    if not records:
        return scalars.with_columns(pl.Series(k, [], _SCHEMA[k]) for k in lists).select(
            list(_SCHEMA)
        )
    return scalars.with_columns(
        pl.concat(series).alias(key) for key, series in lists.items()
    ).select(list(_SCHEMA))


def _one_list(values: pl.Series | None, key: str) -> pl.Series:
    """``values`` as one list cell of column ``key`` (a null cell for None), built in
    Arrow: a list of Series passed to ``pl.Series`` would go through Python objects."""
    dtype = _SCHEMA[key]
    if values is None:
        return pl.Series(key, [None], dtype=dtype)
    return values.cast(dtype.inner).implode().alias(key)  # type: ignore[union-attr]


def _m2(values: pl.Series) -> float:
    """The sum of squared deviations from the mean (n × population variance)."""
    variance = values.var(ddof=0)
    return float(variance) * values.len() if isinstance(variance, float) else 0.0


def _smallest_hashes(hashes: pl.Series) -> pl.Series:
    """The ``KMV_SIZE`` smallest distinct values of ``hashes``. Deduplicating all of a big
    column is what costs, so look below 1/64, then 1/8 of the hash range first."""
    for limit in (1 << 58, 1 << 61):
        low = hashes.filter(hashes < limit).unique()
        if low.len() >= KMV_SIZE:
            return low.sort().head(KMV_SIZE)
    return hashes.unique().sort().head(KMV_SIZE)


def _flat(lists: pl.Series, dtype: type[np.generic]) -> np.ndarray:
    """Every value of a list column (null and empty cells add none), as one numpy array."""
    return lists.explode().drop_nulls().to_numpy().astype(dtype, copy=False)


def _distinct(hashes: np.ndarray) -> tuple[int, bool]:
    """The distinct count from every chunk's kept hashes (``hashes``, all chunks together)."""
    union = np.unique(hashes)
    if len(union) < KMV_SIZE:
        # Every chunk kept all its hashes (none had KMV_SIZE distinct ones), or the union
        # of the kept ones is still below KMV_SIZE: an exact count.
        return len(union), True
    kth = float(union[KMV_SIZE - 1]) + 1.0
    return round((KMV_SIZE - 1) * _HASH_RANGE / kth), False


def _thinned(values: np.ndarray) -> np.ndarray:
    step = max(1, len(values) // SAMPLE_ROWS)
    return values[::step]


def merge_chunk_profiles(
    chunks: Sequence[pl.DataFrame],
    *,
    source: str,
    dataset_urn: str | None,
    partition: Mapping[str, str],
    enum_max_distinct: int = ENUM_MAX_DISTINCT,
    profiled_at: datetime | None = None,
) -> Baseline:
    """The partition's ``Baseline`` from its chunks' summaries, as ``profile_table`` of the
    partition gives it (partition columns are in the schema, not profiled)."""
    frame = pl.concat(chunks) if chunks else pl.DataFrame(schema=_SCHEMA)
    schema = dict(frame.select("name", "type").unique("name", maintain_order=True).iter_rows())
    per_column = frame.group_by("name").agg(pl.col("rows").sum())["rows"]
    rows = int(per_column.max() or 0) if per_column.len() else 0  # type: ignore[arg-type]
    columns: dict[str, ColumnProfile] = {}
    for name, kind in schema.items():
        if name in partition:
            continue
        part = frame.filter(pl.col("name") == name)
        present = int(part["n"].sum())
        distinct, exact = _distinct(_flat(part["hashes"], np.uint64))
        numeric = _numeric(part) if kind in NUMERIC_TYPES and present else None
        enum = None
        listed = part["values"].to_list()
        if kind == "STRING" and listed and all(v is not None for v in listed):
            union = sorted(set().union(*listed))
            if enum_like(len(union), present, enum_max_distinct) and not pii_like(union):
                enum = tuple(union)
        columns[name] = ColumnProfile(
            type=kind,
            rows=rows,
            null_count=int(part["nulls"].sum()),
            distinct_count=distinct,
            numeric=numeric,
            enum_values=enum,
            exact=exact and numeric is None,  # quantiles are sampled
        )
    partition_columns = tuple(k for k in partition if k in schema)
    parts = {partition_key({k: partition[k] for k in partition_columns}): rows}
    return Baseline(
        source=source,
        profiled_at=profiled_at or utcnow(),
        row_count=rows,
        partition_columns=partition_columns,
        partitions=parts if partition_columns and rows else {},
        columns=columns,
        schema_fields=schema,
        schema_fingerprint=fingerprint(schema),
        dataset_urn=dataset_urn,
        enum_max_distinct=enum_max_distinct,
    )


def _numeric(part: pl.DataFrame) -> NumericStats:
    live = part.filter(pl.col("n") > 0)
    count = mean = m2 = 0.0
    for n, chunk_mean, chunk_m2 in live.select("n", "mean", "m2").iter_rows():
        total = count + n
        delta = chunk_mean - mean
        mean += delta * n / total
        m2 += chunk_m2 + delta * delta * count * n / total
        count = total
    sample = _thinned(_flat(live["sample"], np.float64))
    at = np.quantile(sample, [q for _, q in QUANTILES])  # one partition pass, all quantiles
    quantiles = {k: float(v) for (k, _), v in zip(QUANTILES, at, strict=True)}
    return NumericStats(
        min=float(live["min"].min()),  # type: ignore[arg-type]
        max=float(live["max"].max()),  # type: ignore[arg-type]
        mean=mean,
        std=float(np.sqrt(max(m2 / count, 0.0))),
        **quantiles,
    )
