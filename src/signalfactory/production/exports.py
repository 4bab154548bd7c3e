"""Exports: one partition of a lake table written to a file, after a certified run.

Each ``exports:`` entry of the pipeline file names a format, a path (with the partition's
``{key}`` placeholders, relative to the pipeline file) and a layer (``certified`` by default,
``gold`` or ``quarantine``)::

    exports:
      - {format: parquet, path: "exports/orders_{dt}.parquet"}
      - {format: csv, path: "exports/quarantine_{dt}.csv", layer: quarantine}

Rows are read from the Delta table as record batches (files pruned to the partition, rows
filtered on it) and written batch by batch, so no format but one holds the table in memory:
CSV (pyarrow ``CSVWriter``; a null and an empty text are both an empty field), Parquet
(``ParquetWriter``), JSON (NDJSON, one object per line; decimals as text), Feather (Arrow IPC
file, ``RecordBatchFileWriter``), HDF5 (a PyTables table ``/data``, written in two passes:
one sizes the text columns, one appends rows; the Arrow schema and null masks are stored
with it so it reads back exactly). **Pickle cannot stream**: the partition is collected into
one pyarrow Table in memory and pickled.

Every file is written to a hidden temporary file beside the target, flushed to disk and moved
into place with ``os.replace``: readers see the previous file or the complete new one, and a
failure midway leaves no partial file.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable

from signalfactory.core.errors import ConfigError, InputDataError, SignalFactoryError
from signalfactory.production.hdf5 import EXPORT_NODE, MASKS_ATTR, SCHEMA_ATTR, import_tables
from signalfactory.production.spec import ExportSpec

BATCH_ROWS = 65_536
Batches = Callable[[], Iterator[pa.RecordBatch]]
Writer = Callable[[Path, pa.Schema, Batches], int]


class ExportError(SignalFactoryError):
    """An export file could not be written. The lake tables are not affected."""


def export_target(spec: ExportSpec, partition: Mapping[str, str], base_dir: Path) -> Path:
    """The file ``spec`` writes for ``partition``: its path filled in, under ``base_dir``."""
    try:
        name = spec.path.format(**partition)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"export path {spec.path!r} cannot be filled in for partition "
            f"{dict(partition)} ({type(exc).__name__}: {exc}); use only {{key}} placeholders "
            f"of the partition keys ({', '.join(partition) or 'none'})."
        ) from None
    path = Path(name)
    return path if path.is_absolute() else base_dir / path


def _open_partition(
    delta_path: str, partition: Mapping[str, str], batch_rows: int
) -> tuple[pa.Schema, Batches]:
    """The schema of the table at ``delta_path`` and a way to stream ``partition``'s rows.

    Partition columns prune files; any other column named by the partition (the ``dt``
    column of a per-run quarantine table) filters rows. Keys the table lacks are ignored.
    """
    if not DeltaTable.is_deltatable(delta_path):
        raise InputDataError(f"{delta_path} is not a Delta table, so there is nothing to export.")
    table = DeltaTable(delta_path)
    partition_columns = set(table.metadata().partition_columns)
    pruned = [(k, "=", v) for k, v in partition.items() if k in partition_columns]
    try:
        dataset = table.to_pyarrow_dataset(file_pruning_predicate=pruned or None)
    except TypeError:  # deltalake < 1.5 names it ``partitions``
        dataset = table.to_pyarrow_dataset(partitions=pruned or None)
    condition: pads.Expression | None = None
    for key, value in partition.items():
        if key not in dataset.schema.names:
            continue
        try:
            scalar = pa.scalar(value).cast(dataset.schema.field(key).type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ConfigError(
                f"partition value {key}={value!r} does not fit column {key} "
                f"({dataset.schema.field(key).type}) of {delta_path}."
            ) from None
        term = pads.field(key) == scalar
        condition = term if condition is None else condition & term

    def batches() -> Iterator[pa.RecordBatch]:
        scanner = dataset.scanner(filter=condition, batch_size=batch_rows)
        return (batch for batch in scanner.to_batches() if batch.num_rows)

    return dataset.schema, batches


def _write_batches(writer: Any, batches: Batches) -> int:
    """Stream every batch into an Arrow writer (CSV, Parquet, IPC); the row count."""
    rows = 0
    with writer:
        for batch in batches():
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _write_csv(target: Path, schema: pa.Schema, batches: Batches) -> int:
    return _write_batches(pacsv.CSVWriter(str(target), schema), batches)


def _write_parquet(target: Path, schema: pa.Schema, batches: Batches) -> int:
    return _write_batches(pq.ParquetWriter(str(target), schema), batches)


def _write_ndjson(target: Path, schema: pa.Schema, batches: Batches) -> int:
    rows = 0
    with target.open("wb") as handle:
        for batch in batches():
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            frame.write_ndjson(handle)
            rows += batch.num_rows
    return rows


def _write_feather(target: Path, schema: pa.Schema, batches: Batches) -> int:
    codec = "lz4" if pa.Codec.is_available("lz4") else None
    options = pa.ipc.IpcWriteOptions(compression=codec)
    return _write_batches(
        pa.ipc.RecordBatchFileWriter(str(target), schema, options=options), batches
    )


def _write_pickle(target: Path, schema: pa.Schema, batches: Batches) -> int:
    table = pa.Table.from_batches(list(batches()), schema=schema)  # cannot stream: see above
    with target.open("wb") as handle:
        pickle.dump(table, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return int(table.num_rows)


def _stored(array: pa.Array, field: pa.Field) -> pa.Array:
    """``array`` in the form an HDF5 column holds: numbers, booleans or bytes."""
    kind = field.type
    if pa.types.is_dictionary(kind):
        return _stored(array.cast(kind.value_type), pa.field(field.name, kind.value_type))
    if pa.types.is_null(kind):
        return array.cast(pa.int8())
    if pa.types.is_decimal(kind):
        return array.cast(pa.string()).cast(pa.binary())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return array.cast(pa.binary())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return array.cast(pa.binary())
    if pa.types.is_fixed_size_binary(kind):
        return array.cast(pa.binary())
    if pa.types.is_date32(kind) or pa.types.is_time32(kind):
        return array.cast(pa.int32())
    if pa.types.is_temporal(kind):  # timestamp, date64, time64, duration
        return array.cast(pa.int64())
    if pa.types.is_float16(kind):
        return array.cast(pa.float32())
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return array
    raise ConfigError(
        f"column {field.name!r} has type {kind}, which an HDF5 table cannot hold; export this "
        "layer as parquet or feather, or drop the column in a gold step."
    )


def write_hdf5(target: Path, schema: pa.Schema, batches: Batches) -> int:
    """Write the batches to a PyTables table ``/data`` in ``target``; return the rows written.

    Two passes over ``batches()``: the first sizes the text columns and finds the columns
    with nulls (each gets a boolean ``<name>__null`` mask column), the second appends rows.
    Neither holds more than one batch in memory.
    """
    tables = import_tables()
    width = dict.fromkeys(schema.names, 1)
    nullable: set[str] = set()
    total = 0
    for batch in batches():
        total += batch.num_rows
        for field, column in zip(schema, batch.columns, strict=True):
            stored = _stored(column, field)
            if column.null_count:
                nullable.add(field.name)
            if pa.types.is_binary(stored.type) and len(stored):
                width[field.name] = max(
                    width[field.name], pc.max(pc.binary_length(stored)).as_py() or 1
                )
    description: dict[str, Any] = {}
    masks: dict[str, str] = {}
    for pos, field in enumerate(schema):
        storage = _stored(pa.nulls(0, field.type), field).type
        description[field.name] = (
            tables.StringCol(width[field.name], pos=pos)
            if pa.types.is_binary(storage)
            else tables.Col.from_dtype(np.dtype(storage.to_pandas_dtype()), pos=pos)
        )
    for field in schema:
        if field.name in nullable:
            mask = f"{field.name}__null"
            while mask in description:
                mask += "_"
            masks[field.name] = mask
            description[mask] = tables.BoolCol(pos=len(description))
    try:
        _append_hdf5(tables, target, schema, batches, description, masks, total)
    except tables.HDF5ExtError as exc:
        reason = (str(exc).strip().splitlines() or ["HDF5 error"])[0][:200]
        raise ExportError(f"writing HDF5 file {target} failed: {reason}.") from None
    return total


def _append_hdf5(
    tables: Any,
    target: Path,
    schema: pa.Schema,
    batches: Batches,
    description: dict[str, Any],
    masks: dict[str, str],
    total: int,
) -> None:
    with tables.open_file(str(target), mode="w") as handle:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", tables.NaturalNameWarning)
                table = handle.create_table(
                    "/",
                    EXPORT_NODE,
                    description,
                    title="Signal Factory export",
                    expectedrows=max(total, 1),
                    filters=tables.Filters(complevel=5, complib="zlib", shuffle=True),
                )
        except ValueError as exc:
            raise ConfigError(
                f"the columns cannot be stored in HDF5 ({exc}); rename them in a gold step "
                "or export as parquet."
            ) from None
        table.attrs[SCHEMA_ATTR] = base64.b64encode(schema.serialize().to_pybytes()).decode()
        table.attrs[MASKS_ATTR] = json.dumps(masks)
        for batch in batches():
            rows = np.zeros(batch.num_rows, dtype=table.dtype)
            for field, column in zip(schema, batch.columns, strict=True):
                stored = _stored(column, field)
                if field.name in masks:
                    rows[masks[field.name]] = column.is_null().to_numpy(zero_copy_only=False)
                if stored.null_count:
                    fill = b"" if pa.types.is_binary(stored.type) else 0
                    stored = pc.fill_null(stored, pa.scalar(fill).cast(stored.type))
                rows[field.name] = stored.to_numpy(zero_copy_only=False)
            table.append(rows)
        table.flush()


_WRITERS: dict[str, Writer] = {
    "csv": _write_csv,
    "parquet": _write_parquet,
    "json": _write_ndjson,
    "feather": _write_feather,
    "hdf5": write_hdf5,
    "pickle": _write_pickle,
}


def _atomic_write(target: Path, write: Callable[[Path], int]) -> int:
    """``write`` a hidden temporary file beside ``target``, then move it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        rows = write(temporary)
        with temporary.open("r+b") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return rows


def _export(
    delta_path: str,
    partition: Mapping[str, str],
    spec: ExportSpec,
    base_dir: Path,
    batch_rows: int,
) -> tuple[Path, int]:
    target = export_target(spec, partition, base_dir)
    schema, batches = _open_partition(delta_path, partition, batch_rows)
    writer = _WRITERS[spec.format]
    what = f"{spec.format} export of the {spec.layer} layer to {target}"
    try:
        rows = _atomic_write(target, lambda temporary: writer(temporary, schema, batches))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ExportError(
            f"{what} failed: {reason}. Parquet and feather hold every column type; the lake "
            "tables are unchanged."
        ) from None
    except OSError as exc:
        raise ExportError(
            f"{what} failed: {exc.strerror or exc}. Check that the folder is writable and has "
            "space; the lake tables are unchanged."
        ) from None
    return target, rows


def export_table(
    delta_path: str,
    partition: Mapping[str, str],
    spec: ExportSpec,
    base_dir: Path,
    *,
    batch_rows: int = BATCH_ROWS,
) -> Path:
    """Write ``partition`` of the Delta table at ``delta_path`` as ``spec`` says; return the file.

    Rows stream in batches of ``batch_rows`` (except for pickle, see the module docstring).
    """
    return _export(delta_path, partition, spec, base_dir, batch_rows)[0]


def run_exports(
    exports: Sequence[ExportSpec],
    *,
    certified_path: str,
    gold_path: str,
    quarantine_path: str | None,
    partition: Mapping[str, str],
    base_dir: Path,
    batch_rows: int = BATCH_ROWS,
) -> list[dict[str, Any]]:
    """Write every export of a certified run: one dict per export, in order.

    Each dict holds ``layer``, ``format``, ``path`` (str, or None when nothing was written),
    ``rows`` and ``error`` (None, or the message of a ``SignalFactoryError`` that stopped this
    export; the others are still written, and the lake tables are never touched). A run
    without a quarantine table (``quarantine_path`` None) writes no quarantine export and
    removes an earlier one for the partition, so the file never describes an older run.
    """
    sources = {"certified": certified_path, "gold": gold_path, "quarantine": quarantine_path}
    results: list[dict[str, Any]] = []
    for spec in exports:
        result: dict[str, Any] = {
            "layer": spec.layer,
            "format": spec.format,
            "path": None,
            "rows": 0,
            "error": None,
        }
        source = sources[spec.layer]
        try:
            if source is None:
                export_target(spec, partition, base_dir).unlink(missing_ok=True)
            else:
                path, rows = _export(source, partition, spec, base_dir, batch_rows)
                result.update(path=str(path), rows=rows)
        except SignalFactoryError as exc:
            result["error"] = exc.message
        except OSError as exc:
            result["error"] = f"cannot remove the stale export: {exc}"
        results.append(result)
    return results
