"""Versioned lake tables: Delta Lake via ``deltalake``.

Chunk outputs are staged as Parquet files under the run's staging folder; a layer is then
committed in one Delta commit that replaces the run's partition (so re-running a partition
never duplicates rows) and carries the run id in the commit metadata.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from signalfactory.core.errors import ConfigError

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


@dataclass(frozen=True, slots=True)
class CommitResult:
    path: str
    version: int
    rows: int
    files_added: int
    #: Bytes of the data files this commit added (0 when unknown, e.g. a replayed commit).
    bytes_written: int = 0


class StagedLayer:
    """Parquet files written by chunk workers, later committed to a Delta table at once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows = 0

    def write(self, index: int, df: pl.DataFrame, suffix: str = "") -> None:
        if df.height == 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        df.write_parquet(self.folder / f"part-{index:07d}{suffix}.parquet", statistics=False)

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
            )
    return None


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

    With ``app_id`` the commit carries a Delta application transaction: if a crashed attempt
    already committed under that id, nothing is written again and that commit is returned.
    """
    if app_id is not None:
        done = _committed(path, app_id)
        if done is not None:
            return done
    files = staged.files()
    if not files:
        return None
    exists = DeltaTable.is_deltatable(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    predicate = partition_predicate(partition) if exists else None
    custom = dict(metadata)
    transactions = []
    if app_id is not None:
        custom["signalfactory.app_id"] = app_id
        transactions.append(Transaction(app_id, 1))
    write_deltalake(
        path,
        staged.reader(),
        mode="overwrite",
        predicate=predicate,
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
