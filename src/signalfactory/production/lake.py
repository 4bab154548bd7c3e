"""Versioned lake tables: Delta Lake via ``deltalake``.

Chunk outputs are staged as Parquet files under the run's staging folder; a layer is then
committed in one Delta commit that replaces the run's partition (so re-running a partition
never duplicates rows) and carries the run id in the commit metadata. The commit adds the
staged files themselves (hard-linked into the table folder), so rows are written once per
layer and the certified table shares gold's files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import structlog
from deltalake import CommitProperties, DeltaTable, Field, Schema, Transaction, write_deltalake
from deltalake.transaction import AddAction, create_table_with_add_actions

from signalfactory.core.errors import ConfigError

log = structlog.get_logger("signalfactory.lake")

SUPPORTED_LATER = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


def resolve_table_path(raw: str, lake_root: Path, where: str) -> str:
    """A layer path from dataset.yaml: relative (under the lake root), absolute or a URI."""
    parsed = urlparse(raw)
    if parsed.scheme in SUPPORTED_LATER:
        raise ConfigError(
            f"{where}: {raw!r} is object storage ({parsed.scheme}://), which this version "
            "does not write yet. Use a relative path (resolved under SIGNALFACTORY_HOME/lake) "
            "or an absolute local path."
        )
    if parsed.scheme == "file":
        return str(Path(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ConfigError(f"{where}: URI scheme {parsed.scheme!r} in {raw!r} is not supported.")
    path = Path(raw)
    return str(path if path.is_absolute() else lake_root / raw.strip("/"))


def derive_certified_path(gold_path: str) -> str:
    """``…/gold/orders`` → ``…/gold_certified/orders`` (the PRD's ``gold_certified.orders``)."""
    path = Path(gold_path)
    parts = list(path.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "gold":
            parts[i] = "gold_certified"
            return str(Path(*parts))
    return str(path.with_name(path.name + "_certified"))


def table_version(path: str) -> int | None:
    if not DeltaTable.is_deltatable(path):
        return None
    return int(DeltaTable(path).version())


def table_schema(path: str) -> pa.Schema | None:
    if not DeltaTable.is_deltatable(path):
        return None
    return pa.schema(DeltaTable(path).schema().to_arrow())


def partition_predicate(partition: Mapping[str, str]) -> str | None:
    if not partition:
        return None
    return " AND ".join(f"{k} = '{v}'" for k, v in partition.items())


#: Footer statistics of a file only the pipeline writes and tools scan whole (bronze,
#: quarantine, handoffs): the null counts the commit reads. Min/max of every column is 5-13%
#: of writing 1M lineitem rows, so only files that become tables readers filter (silver,
#: whose files gold and the certified table share) keep them.
_COUNTS_ONLY = {"min": False, "max": False, "distinct_count": False, "null_count": True}


def replace_parquet(df: pl.DataFrame, path: Path, *, min_max: bool = True) -> None:
    """Write ``df`` to ``path`` as a new file, never in place.

    Committed layers hard-link the staged files into the tables, so a staged file that is
    written again (a retried chunk, reasons rewritten for a replay) must get a new inode: the
    table keeps the bytes it committed. The footer keeps statistics: the commit reads row and
    null counts from it, and readers of the file prune row groups by min/max unless
    ``min_max`` is off. Snappy, as ``write_deltalake`` writes: faster to write than zstd.
    """
    tmp = path.with_name(path.name + ".tmp")
    df.write_parquet(tmp, compression="snappy", statistics=True if min_max else _COUNTS_ONLY)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class CommitResult:
    path: str
    version: int
    rows: int
    files_added: int
    #: Bytes of the data files this commit added (0 when unknown, e.g. a replayed commit).
    bytes_written: int = 0


class StagedLayer:
    """Parquet files written by chunk workers, later committed to a Delta table at once.
    ``min_max``: whether the files' footers keep min/max statistics (``replace_parquet``)."""

    def __init__(self, folder: Path, *, min_max: bool = True) -> None:
        self.folder = folder
        self.min_max = min_max
        self.rows = 0

    def write(self, index: int, df: pl.DataFrame, suffix: str = "") -> None:
        if df.height == 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        replace_parquet(df, self.folder / f"part-{index:07d}{suffix}.parquet", min_max=self.min_max)

    def link_from(self, other: StagedLayer, index: int, rows: int) -> None:
        """Stage chunk ``index`` as the very file ``other`` staged for it (same rows, same
        columns): a new hard link, or a copy where linking is impossible. ``rows`` is what
        the caller expects the file to hold; a file that does not exist or differs is an
        error, never a silent empty layer."""
        if rows == 0:
            return
        name = f"part-{index:07d}.parquet"
        source, target = other.folder / name, self.folder / name
        found = pq.ParquetFile(source).metadata.num_rows if source.is_file() else None
        if found != rows:
            raise RuntimeError(
                f"cannot stage {target} from {source}: it holds {found} rows, expected {rows}"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)

    def files(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(str(p) for p in self.folder.glob("*.parquet"))

    def size_bytes(self) -> int:
        return sum(Path(f).stat().st_size for f in self.files())

    def count(self) -> int:
        files = self.files()
        return pads.dataset(files).count_rows() if files else 0

    def reader(self, schema: pa.Schema | None = None) -> pa.RecordBatchReader:
        files = self.files()
        if schema is None:
            schema = pa.unify_schemas(
                [pads.dataset(f).schema for f in files], promote_options="permissive"
            )
        return pads.dataset(files, schema=schema).scanner(batch_size=256_000).to_reader()

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _committed(path: str, app_id: str) -> CommitResult | None:
    """The commit an earlier attempt already made under ``app_id``, if any (exactly-once)."""
    if not DeltaTable.is_deltatable(path):
        return None
    table = DeltaTable(path)
    if table.transaction_version(app_id) is None:
        return None
    for entry in table.history():
        if entry.get("signalfactory.app_id") == app_id:
            metrics = entry.get("operationMetrics", {})
            return CommitResult(
                path=path,
                version=int(entry["version"]),
                rows=int(metrics.get("num_added_rows", 0) or 0),
                files_added=int(metrics.get("num_added_files", 0) or 0),
                bytes_written=int(metrics.get("num_added_bytes", 0) or 0),
            )
    return None


# -- committing staged files as they are --------------------------------------------------------
#
# A layer's rows are already in Parquet files staged by the chunk workers. Committing them is
# pure metadata: each staged file is hard-linked (copied where a link is impossible) into the
# table folder under a name unique to the commit, and one Delta transaction adds those files
# and removes the partition's current ones. Nothing is decoded or encoded again, so the
# certified table costs a few links after gold. Staged files keep their partition columns;
# Delta readers take a partition's value from the log either way.
#
# Files are only committed as they are when every column already has a type Delta stores
# without conversion and the schema agrees with the table's (or may be merged into it);
# otherwise the layer is rewritten through ``write_deltalake`` as before.

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _native(t: pa.DataType) -> bool:
    """Whether Delta stores values of ``t`` exactly as a Parquet file holds them."""
    if pa.types.is_timestamp(t):
        return t.unit == "us" and t.tz in (None, "UTC")
    return bool(
        pa.types.is_boolean(t)
        or pa.types.is_signed_integer(t)
        or pa.types.is_float32(t)
        or pa.types.is_float64(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_date32(t)
        or pa.types.is_decimal128(t)
    )


def _partition_type(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_date32(t)
        or pa.types.is_signed_integer(t)
    )


@dataclass(frozen=True, slots=True)
class _File:
    source: Path
    meta: pq.FileMetaData
    schema: pa.Schema


@dataclass(frozen=True, slots=True)
class _Plan:
    files: list[_File]
    schema: Schema
    table: DeltaTable | None
    folder: str  # the partition's folder relative to the table root ("" for the root)


def _field_types(schema: Schema) -> dict[str, str]:
    return {f.name: repr(f.type) for f in schema.fields}


def _plan(
    path: str, files: list[str], partition: Mapping[str, str], merge_schema: bool
) -> _Plan | None:
    """How to commit ``files`` without rewriting them, or None when they must be rewritten."""
    if not all(_SAFE_NAME.fullmatch(part) for kv in partition.items() for part in kv):
        return None
    staged: list[_File] = []
    fields: dict[str, Field] = {}
    types: dict[str, str] = {}
    converted: dict[pa.Schema, Schema] = {}
    for name in files:
        meta = pq.read_metadata(name)
        arrow = meta.schema.to_arrow_schema()
        if not all(_native(f.type) for f in arrow):
            return None
        delta = converted.get(arrow)
        if delta is None:
            delta = converted[arrow] = Schema.from_arrow(arrow)
        for field in delta.fields:
            known = types.setdefault(field.name, repr(field.type))
            if known != repr(field.type):
                return None
            if field.name not in fields:  # nullable, as every column written so far
                fields[field.name] = Field(field.name, field.type, nullable=True)
        staged.append(_File(Path(name), meta, arrow))
    for key in partition:
        column = next((f.schema.field(key) for f in staged if key in f.schema.names), None)
        if column is None or not _partition_type(column.type):
            return None
    schema = Schema(list(fields.values()))
    table = DeltaTable(path) if DeltaTable.is_deltatable(path) else None
    if table is not None:
        if list(table.metadata().partition_columns) != list(partition):
            return None
        current = table.schema()
        have = _field_types(current)
        if any(name in have and have[name] != t for name, t in types.items()):
            return None
        extra = [f for name, f in fields.items() if name not in have]
        missing = [f for f in current.fields if f.name not in types]
        if not extra and all(f.nullable for f in missing):
            # The same columns, or fewer: readers see nulls where a file lacks a nullable
            # column (e.g. ``_sf_row`` in bronze tables written before it moved out).
            schema = current
        elif not merge_schema:
            return None
        else:
            schema = Schema([*current.fields, *extra])
    folder = "/".join(f"{k}={v}" for k, v in partition.items())
    return _Plan(staged, schema, table, folder)


def _place(source: Path, target: Path) -> None:
    """Hard-link ``source`` at ``target``; copy it where a link is impossible."""
    for _ in range(3):
        try:
            os.link(source, target)
            return
        except FileExistsError:
            if os.path.samefile(source, target):
                return  # linked by an attempt that stopped before its commit
            target.unlink()  # an uncommitted copy from such an attempt
        except OSError:  # another file system, or links not supported
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            return
    raise FileExistsError(f"could not place {source} at {target}")


def _stats(file: _File, partition: Mapping[str, str]) -> str:
    """Delta file statistics from the Parquet footer: the row count, and null counts where
    the footer has them.

    No min/max: deltalake's pyarrow datasets turn a column without min/max next to one with
    them into a ``col >= null`` guard that drops the file from every filtered scan.
    """
    meta = file.meta
    stats: dict[str, object] = {"numRecords": meta.num_rows}
    nulls: dict[str, int] = {}
    for j in range(meta.num_columns):
        name = meta.schema.column(j).path
        if name in partition or name not in file.schema.names:
            continue  # partition values live in the log; nested columns carry no stats here
        count = 0
        for r in range(meta.num_row_groups):
            st = meta.row_group(r).column(j).statistics
            if st is None or not st.has_null_count:
                count = -1
                break
            count += st.null_count
        if count >= 0:
            nulls[name] = count
    if nulls:
        stats["nullCount"] = nulls
    return json.dumps(stats)


def _referenced(path: str, relative: set[str]) -> bool:
    if not relative or not DeltaTable.is_deltatable(path):
        return False
    paths = pa.table(DeltaTable(path).get_add_actions()).column("path").to_pylist()
    return not relative.isdisjoint(paths)


def _commit_files(
    path: str,
    plan: _Plan,
    partition: Mapping[str, str],
    custom: dict[str, object],
    transactions: list[Transaction],
    tag: str,
) -> CommitResult:
    folder = Path(path) / plan.folder if plan.folder else Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    adds: list[AddAction] = []
    placed: list[Path] = []
    rows = size = 0
    try:
        for file in plan.files:
            name = f"sf-{tag}-{file.source.stem}.parquet"
            target = folder / name
            _place(file.source, target)
            placed.append(target)
            st = target.stat()
            adds.append(
                AddAction(
                    path=f"{plan.folder}/{name}" if plan.folder else name,
                    size=st.st_size,
                    partition_values=dict(partition),
                    modification_time=int(st.st_mtime * 1000),
                    data_change=True,
                    stats=_stats(file, partition),
                )
            )
            rows += file.meta.num_rows
            size += st.st_size
        custom["operationMetrics"] = {
            "num_added_rows": rows,
            "num_added_files": len(adds),
            "num_added_bytes": size,
        }
        properties = CommitProperties(custom_metadata=custom, app_transactions=transactions)
        if plan.table is None:
            create_table_with_add_actions(
                path,
                plan.schema,
                adds,
                mode="error",
                partition_by=list(partition) or None,
                commit_properties=properties,
            )
        else:
            plan.table.create_write_transaction(
                list(adds),
                "overwrite",
                plan.schema,
                partition_by=list(partition) or None,
                partition_filters=[(k, "=", v) for k, v in partition.items()] or None,
                commit_properties=properties,
            )
    except Exception as exc:
        if not _referenced(path, {a.path for a in adds}):
            # Files of a commit that did not happen are garbage: remove them.
            for target in placed:
                target.unlink(missing_ok=True)
            raise
        # The commit happened and only a post-commit step (e.g. a checkpoint) failed.
        log.warning("post_commit_failed", path=path, error_type=type(exc).__name__)
    version = int(DeltaTable(path).version())
    return CommitResult(path, version, rows, len(adds), size)


def _rewrite_commit(
    path: str,
    staged: StagedLayer,
    partition: Mapping[str, str],
    custom: dict[str, object],
    transactions: list[Transaction],
    merge_schema: bool,
) -> CommitResult:
    """The general path: read the staged rows back and let ``write_deltalake`` write them."""
    exists = DeltaTable.is_deltatable(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    write_deltalake(
        path,
        staged.reader(),
        mode="overwrite",
        predicate=partition_predicate(partition) if exists else None,
        partition_by=list(partition) or None,
        schema_mode="merge" if merge_schema and exists else None,
        commit_properties=CommitProperties(custom_metadata=custom, app_transactions=transactions),
    )
    table = DeltaTable(path)
    version = int(table.version())
    added = next(iter(table.history(1))).get("operationMetrics", {})
    return CommitResult(
        path=path,
        version=version,
        rows=int(added.get("num_added_rows", staged.count())),
        files_added=int(added.get("num_added_files", 0) or 0),
        bytes_written=staged.size_bytes(),
    )


def commit_layer(
    path: str,
    staged: StagedLayer,
    partition: Mapping[str, str],
    metadata: Mapping[str, str],
    *,
    merge_schema: bool = False,
    app_id: str | None = None,
) -> CommitResult | None:
    """Replace ``partition`` of the Delta table at ``path`` with the staged rows, atomically.

    The staged files become the table's data files as they are (hard links), unless their
    types or schema need a conversion, in which case they are rewritten. With ``app_id`` the
    commit carries a Delta application transaction: if a crashed attempt already committed
    under that id, nothing is written again and that commit is returned.
    """
    if app_id is not None:
        done = _committed(path, app_id)
        if done is not None:
            return done
    files = staged.files()
    if not files:
        return None
    custom: dict[str, object] = dict(metadata)
    transactions = []
    if app_id is not None:
        custom["signalfactory.app_id"] = app_id
        transactions.append(Transaction(app_id, 1))
    plan = _plan(path, files, partition, merge_schema)
    if plan is not None:
        tag = (app_id.split(":", 1)[-1] if app_id else uuid.uuid4().hex).replace(":", "-")
        try:
            return _commit_files(path, plan, partition, dict(custom), transactions, tag)
        except Exception as exc:
            if app_id is not None and (done := _committed(path, app_id)) is not None:
                return done
            log.warning(
                "commit_rewrites_files", path=path, error_type=type(exc).__name__, error=str(exc)
            )
    return _rewrite_commit(path, staged, partition, custom, transactions, merge_schema)


def clear_partition(
    path: str, partition: Mapping[str, str], metadata: Mapping[str, str], app_id: str
) -> CommitResult | None:
    """Empty ``partition`` of an existing table in one commit (a run that certified no rows
    must not leave the previous rows of that partition in place)."""
    if not partition or not DeltaTable.is_deltatable(path) or _committed(path, app_id):
        return _committed(path, app_id) if DeltaTable.is_deltatable(path) else None
    table = DeltaTable(path)
    table.delete(
        partition_predicate(partition),
        commit_properties=CommitProperties(
            custom_metadata={**metadata, "signalfactory.app_id": app_id},
            app_transactions=[Transaction(app_id, 1)],
        ),
    )
    table = DeltaTable(path)
    return CommitResult(path=path, version=int(table.version()), rows=0, files_added=0)
