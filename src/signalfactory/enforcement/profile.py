"""Profiling and baselining (E2, PRD FR-8): what "normal" looks like, as ``baseline.json``.

``profile_frame`` profiles any polars frame lazily on the streaming engine (one pass for the
column figures, one for partition row counts, one for enum sets), and ``profile_table`` scans
a Delta table (polars' native Delta scan), a Parquet, CSV or NDJSON file without
loading it first. Counts, nulls, min/max/mean/std stream in bounded memory; exact distinct
counts and quantiles need each column's distinct values or its sort. (A certified run's partition
is profiled from its chunks instead, with estimates: ``profile_chunks``.) A :class:`Baseline`
has:

* row counts per partition (``dt=2026-02-15``) and in total;
* per column: logical type, null count and rate, distinct non-null values, for numeric
  columns min/max/mean/std (population) and p01/p25/p50/p75/p99, and for text columns with at
  most ``enum_max_distinct`` (default 50) distinct values, each seen on two rows or more on
  average (so a key column of a small table is not taken for an enum), their value set;
* the logical schema and its fingerprint (the same fingerprint G3_SCHEMA evidence carries).

``roll_forward`` merges a newly certified partition's profile in: row and null counts,
min/max, mean and std exactly; distinct counts and quantiles become estimates (``exact``
false; re-profile for exact figures). A partition certified again replaces its row count; its
column figures are not counted twice. Enum sets never hold PII: a text column with a value
shaped like an e-mail address, phone number, SSN, card number or IP address gets none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable
from pydantic import BaseModel, ConfigDict

from signalfactory.core.errors import ConfigError, InputDataError, NotFoundError
from signalfactory.core.records import utcnow
from signalfactory.enforcement.checks import SYSTEM_PREFIX
from signalfactory.enforcement.pii import PII_PATTERNS
from signalfactory.enforcement.schema import fingerprint, logical_schema

ENUM_MAX_DISTINCT = 50
QUANTILES = (("p01", 0.01), ("p25", 0.25), ("p50", 0.50), ("p75", 0.75), ("p99", 0.99))
NUMERIC_TYPES = frozenset({"INTEGER", "DECIMAL", "DOUBLE"})
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class NumericStats(BaseModel):
    model_config = _FROZEN
    min: float
    max: float
    mean: float
    std: float
    p01: float
    p25: float
    p50: float
    p75: float
    p99: float


class ColumnProfile(BaseModel):
    model_config = _FROZEN
    type: str
    rows: int
    null_count: int
    distinct_count: int
    numeric: NumericStats | None = None
    enum_values: tuple[str, ...] | None = None
    #: False once distinct counts or quantiles are estimates (after a roll-forward).
    exact: bool = True

    @property
    def null_rate(self) -> float:
        return self.null_count / self.rows if self.rows else 0.0

    @property
    def non_null(self) -> int:
        return self.rows - self.null_count


class Baseline(BaseModel):
    """The profile of a dataset (``baseline.json``)."""

    model_config = _FROZEN
    source: str
    profiled_at: datetime
    row_count: int
    partition_columns: tuple[str, ...] = ()
    #: Rows per partition, keyed like ``dt=2026-02-15`` (``a=1/b=2`` for several columns).
    partitions: dict[str, int] = {}
    columns: dict[str, ColumnProfile]
    schema_fields: dict[str, str]
    schema_fingerprint: str
    dataset_urn: str | None = None
    enum_max_distinct: int = ENUM_MAX_DISTINCT
    format_version: int = 1

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        return tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> Baseline:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Baseline:
        return cls.model_validate(dict(doc))


def partition_key(values: Mapping[str, Any]) -> str:
    return "/".join(f"{k}={v}" for k, v in values.items())


def pii_like(values: Sequence[str]) -> bool:
    return any(
        pl.Series(values, dtype=pl.String).str.contains(regex).any()
        for regex in PII_PATTERNS.values()
    )


def enum_like(distinct: int, present: int, limit: int) -> bool:
    # Low cardinality, and values repeat (two rows per value or more on average): a key
    # column of a small table is no enum.
    return 0 < distinct <= limit and 2 * distinct <= present


def profile_frame(
    frame: pl.LazyFrame | pl.DataFrame,
    *,
    source: str,
    dataset_urn: str | None = None,
    partition_columns: Sequence[str] = (),
    enum_max_distinct: int = ENUM_MAX_DISTINCT,
    profiled_at: datetime | None = None,
) -> Baseline:
    """Profile ``frame`` (system ``_sf_`` columns are skipped) in streaming passes."""
    if enum_max_distinct < 0:
        raise ConfigError(f"enum_max_distinct must be 0 or more, got {enum_max_distinct}")
    lf = frame.lazy()
    schema = lf.collect_schema()
    names = [n for n in schema.names() if not n.startswith(SYSTEM_PREFIX)]
    missing = [c for c in partition_columns if c not in names]
    if missing:
        raise ConfigError(
            f"cannot profile {source}: partition column(s) {', '.join(missing)} are not "
            f"columns of it (columns: {', '.join(names)})"
        )
    logical = logical_schema({n: schema[n] for n in names})
    values = [n for n in names if n not in partition_columns]
    exprs: list[pl.Expr] = [pl.len().alias("rows")]
    for i, name in enumerate(values):
        col = pl.col(name)
        exprs += [
            col.null_count().alias(f"n{i}"),
            col.drop_nulls().n_unique().alias(f"d{i}"),
        ]
        if logical[name] in NUMERIC_TYPES:
            num = col.cast(pl.Float64)
            exprs += [
                num.min().alias(f"min{i}"),
                num.max().alias(f"max{i}"),
                num.mean().alias(f"mean{i}"),
                num.std(ddof=0).alias(f"std{i}"),
                *(num.quantile(q, "linear").alias(f"{k}{i}") for k, q in QUANTILES),
            ]
    try:
        stats = lf.select(exprs).collect(engine="streaming").row(0, named=True)
        parts: dict[str, int] = {}
        if partition_columns:
            counts = lf.group_by(list(partition_columns)).len().collect(engine="streaming")
            for row in counts.iter_rows(named=True):
                rows = int(row.pop("len"))
                parts[partition_key({k: row[k] for k in partition_columns})] = rows
        total = int(stats["rows"])
        enum_candidates = [
            name
            for i, name in enumerate(values)
            if logical[name] == "STRING"
            and enum_like(int(stats[f"d{i}"]), total - int(stats[f"n{i}"]), enum_max_distinct)
        ]
        enum_frames = pl.collect_all(
            [lf.select(pl.col(n).drop_nulls().unique().sort()) for n in enum_candidates],
            engine="streaming",
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputDataError(f"cannot profile {source}: {exc}") from None
    enums: dict[str, tuple[str, ...]] = {}
    for name, found in zip(enum_candidates, enum_frames, strict=True):
        seen = [str(v) for v in found.to_series()]
        if not pii_like(seen):
            enums[name] = tuple(seen)
    row_count = total
    columns: dict[str, ColumnProfile] = {}
    for i, name in enumerate(values):
        numeric = None
        if logical[name] in NUMERIC_TYPES and stats[f"min{i}"] is not None:
            numeric = NumericStats(
                min=stats[f"min{i}"],
                max=stats[f"max{i}"],
                mean=stats[f"mean{i}"],
                std=stats[f"std{i}"] or 0.0,
                **{k: stats[f"{k}{i}"] for k, _ in QUANTILES},
            )
        columns[name] = ColumnProfile(
            type=logical[name],
            rows=row_count,
            null_count=int(stats[f"n{i}"]),
            distinct_count=int(stats[f"d{i}"]),
            numeric=numeric,
            enum_values=enums.get(name),
        )
    return Baseline(
        source=source,
        profiled_at=profiled_at or utcnow(),
        row_count=row_count,
        partition_columns=tuple(partition_columns),
        partitions=dict(sorted(parts.items())),
        columns=columns,
        schema_fields=logical,
        schema_fingerprint=fingerprint(logical),
        dataset_urn=dataset_urn,
        enum_max_distinct=enum_max_distinct,
    )


def scan_table(
    path: str | Path, partition: Mapping[str, str] | None = None
) -> tuple[pl.LazyFrame, tuple[str, ...]]:
    """A lazy scan of a Delta table folder or a Parquet/CSV/NDJSON file, and its partition
    columns. ``partition`` (Delta only) prunes the scan to one partition's files."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(
            f"cannot profile {p}: it does not exist. Pass a Delta table folder, or a .parquet, "
            ".csv or .json/.ndjson file."
        )
    if p.is_dir():
        if not DeltaTable.is_deltatable(str(p)):
            raise ConfigError(
                f"cannot profile {p}: the folder is not a Delta table (no _delta_log). Pass a "
                "Delta table folder, or a .parquet, .csv or .json/.ndjson file."
            )
        table = DeltaTable(str(p))
        part_cols = tuple(table.metadata().partition_columns)
        unknown = [k for k in (partition or {}) if k not in part_cols]
        if unknown:
            raise ConfigError(
                f"cannot read partition {partition_key(partition or {})} of {p}: the table is "
                f"partitioned by {', '.join(part_cols) or 'nothing'}"
            )
        # polars' own Delta scan reads the files natively (with the table's partition values);
        # a pyarrow dataset scan is several times slower.
        lf = pl.scan_delta(str(p))
        for key, value in (partition or {}).items():
            lf = lf.filter(pl.col(key).cast(pl.String) == value)
        return lf, part_cols
    if partition:
        raise ConfigError(f"cannot select partition {partition_key(partition)} of file {p}")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return pl.scan_parquet(p), ()
    if suffix == ".csv":
        return pl.scan_csv(p, try_parse_dates=True), ()
    if suffix in (".json", ".ndjson", ".jsonl"):
        return pl.scan_ndjson(p), ()
    raise ConfigError(
        f"cannot profile {p}: unknown file type {suffix or '(none)'!r}. Pass a Delta table "
        "folder, or a .parquet, .csv or .json/.ndjson (one JSON object per line) file."
    )


def profile_table(
    path: str | Path,
    *,
    dataset_urn: str | None = None,
    partition: Mapping[str, str] | None = None,
    enum_max_distinct: int = ENUM_MAX_DISTINCT,
) -> Baseline:
    """Profile the table at ``path`` (or one of its partitions) without loading it whole."""
    lf, part_cols = scan_table(path, partition)
    return profile_frame(
        lf,
        source=str(path),
        dataset_urn=dataset_urn,
        partition_columns=part_cols,
        enum_max_distinct=enum_max_distinct,
    )


# -- rolling forward ---------------------------------------------------------------------


def _merge_numeric(a: NumericStats, na: int, b: NumericStats, nb: int) -> NumericStats:
    # Chan et al.: the exact mean and population variance of the union; quantiles weighted.
    n = na + nb
    mean = (na * a.mean + nb * b.mean) / n
    m2 = na * a.std**2 + nb * b.std**2 + (b.mean - a.mean) ** 2 * na * nb / n
    weighted = {k: (na * getattr(a, k) + nb * getattr(b, k)) / n for k, _ in QUANTILES}
    return NumericStats(
        min=min(a.min, b.min),
        max=max(a.max, b.max),
        mean=mean,
        std=math.sqrt(max(m2 / n, 0.0)),
        **weighted,
    )


def _merge_column(old: ColumnProfile, new: ColumnProfile, limit: int) -> ColumnProfile:
    numeric = old.numeric or new.numeric
    if old.numeric is not None and new.numeric is not None and old.non_null and new.non_null:
        numeric = _merge_numeric(old.numeric, old.non_null, new.numeric, new.non_null)
    enum: tuple[str, ...] | None = None
    if old.enum_values is not None and new.enum_values is not None:
        union = sorted(set(old.enum_values) | set(new.enum_values))
        enum = tuple(union) if len(union) <= limit else None
    elif old.enum_values is not None and not new.non_null:
        enum = old.enum_values
    distinct = len(enum) if enum is not None else max(old.distinct_count, new.distinct_count)
    return ColumnProfile(
        type=new.type,
        rows=old.rows + new.rows,
        null_count=old.null_count + new.null_count,
        distinct_count=distinct,
        numeric=numeric,
        enum_values=enum,
        exact=old.exact and new.exact and enum is not None and numeric is None,
    )


def roll_forward(baseline: Baseline, partition: Baseline) -> Baseline:
    """``baseline`` with the profile of a newly certified ``partition`` merged in.

    The partition's schema becomes the baseline's (fields only in older partitions stay).
    """
    replaced = any(k in baseline.partitions for k in partition.partitions)
    partitions = {**baseline.partitions, **partition.partitions}
    columns = dict(baseline.columns)
    for name, new in partition.columns.items():
        old = columns.get(name)
        if old is None:
            columns[name] = new
        elif not replaced:
            columns[name] = _merge_column(old, new, baseline.enum_max_distinct)
        elif old.enum_values is not None and new.enum_values is not None:
            union = tuple(sorted(set(old.enum_values) | set(new.enum_values)))
            keep = union if len(union) <= baseline.enum_max_distinct else None
            columns[name] = old.model_copy(update={"enum_values": keep, "type": new.type})
    schema = {**baseline.schema_fields, **partition.schema_fields}
    if partitions:
        rows = sum(partitions.values())
    else:
        rows = baseline.row_count + (0 if replaced else partition.row_count)
    return baseline.model_copy(
        update={
            "profiled_at": partition.profiled_at,
            "row_count": rows,
            "partition_columns": baseline.partition_columns or partition.partition_columns,
            "partitions": dict(sorted(partitions.items())),
            "columns": columns,
            "schema_fields": schema,
            "schema_fingerprint": fingerprint(schema),
        }
    )


def changes(baseline: Baseline, partition: Baseline) -> dict[str, Any]:
    """What ``partition`` shows that ``baseline`` did not: the drift a roll-forward absorbs.

    ``new_enum_values`` {field: [values]} (only for fields with an enum set in the baseline),
    ``added_fields``, ``removed_fields``, ``retyped_fields`` {field: [old, new]} and the
    partition's ``null_rates`` {field: rate} next to the baseline's ``baseline_null_rates``.
    """
    old, new = baseline.schema_fields, partition.schema_fields
    new_values: dict[str, list[str]] = {}
    for name, col in partition.columns.items():
        known = baseline.columns.get(name)
        if known is None or known.enum_values is None:
            continue
        fresh = sorted(set(col.enum_values or ()) - set(known.enum_values))
        if col.enum_values is None and col.non_null:
            continue  # too many values to list: not judged as an enum this time
        if fresh:
            new_values[name] = fresh
    return {
        "partitions": sorted(partition.partitions),
        "new_enum_values": new_values,
        "added_fields": sorted(n for n in new if n not in old),
        "removed_fields": sorted(n for n in old if n not in new),
        "retyped_fields": {
            n: [old[n], new[n]] for n in sorted(new) if n in old and old[n] != new[n]
        },
        "null_rates": {n: round(c.null_rate, 6) for n, c in partition.columns.items()},
        "baseline_null_rates": {n: round(c.null_rate, 6) for n, c in baseline.columns.items()},
        "rows": partition.row_count,
    }
