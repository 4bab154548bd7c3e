"""Lake table upkeep and introspection: commit history, compaction and vacuum (B12, B15).

Everything here works on one Delta table at a path and knows nothing of datasets or the
store: which tables to maintain, which versions must stay restorable and what to record in
the audit trail is decided by ``pipeline.certified_ops``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError

from signalfactory.core.errors import ConfigError, Transient

#: Delta's default ``delta.deletedFileRetentionDuration``: one week.
DEFAULT_RETENTION_HOURS = 168
META_PREFIX = "signalfactory."


@dataclass(frozen=True, slots=True)
class Commit:
    """One entry of a Delta table's history, with our commit metadata picked out."""

    version: int
    operation: str
    timestamp: datetime | None
    metadata: Mapping[str, str]
    metrics: Mapping[str, Any]


def _commit(entry: Mapping[str, Any]) -> Commit:
    millis = entry.get("timestamp")
    return Commit(
        version=int(entry["version"]),
        operation=str(entry.get("operation", "")),
        timestamp=(
            datetime.fromtimestamp(millis / 1000, UTC) if isinstance(millis, int | float) else None
        ),
        metadata={k: str(v) for k, v in entry.items() if k.startswith(META_PREFIX)},
        metrics=dict(entry.get("operationMetrics") or {}),
    )


def commit_history(path: str) -> list[Commit]:
    """The table's commits, oldest first; empty when ``path`` is not a Delta table."""
    if not DeltaTable.is_deltatable(path):
        return []
    return sorted((_commit(e) for e in DeltaTable(path).history()), key=lambda c: c.version)


def _local(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)


def _add_actions(table: DeltaTable) -> pa.Table:
    return pa.table(table.get_add_actions(flatten=True))


def added_by_commit(path: str, version: int) -> tuple[int, int]:
    """(files, bytes) that commit ``version`` added: its data files not in the version before."""
    now = _add_actions(DeltaTable(path, version=version))
    before: set[str] = set()
    if version > 0:
        before = set(_add_actions(DeltaTable(path, version=version - 1)).column("path").to_pylist())
    sizes = [
        int(size)
        for p, size in zip(
            now.column("path").to_pylist(), now.column("size_bytes").to_pylist(), strict=True
        )
        if p not in before
    ]
    return len(sizes), sum(sizes)


def missing_files(path: str, version: int) -> list[str]:
    """Data files version ``version`` needs that are no longer on disk (vacuumed)."""
    return [u for u in DeltaTable(path, version=version).file_uris() if not _local(u).exists()]


def disk_files(path: str) -> list[Path]:
    """Parquet data files under the table folder, referenced or not (the log excluded)."""
    root = Path(path)
    return [
        p
        for p in root.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
    ]


@dataclass(frozen=True, slots=True)
class FileCounts:
    version: int
    active_files: int
    active_bytes: int
    disk_files: int
    disk_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {
            "version": self.version,
            "active_files": self.active_files,
            "active_bytes": self.active_bytes,
            "disk_files": self.disk_files,
            "disk_bytes": self.disk_bytes,
        }


def file_counts(path: str) -> FileCounts:
    table = DeltaTable(path)
    actions = _add_actions(table)
    on_disk = disk_files(path)
    return FileCounts(
        version=int(table.version()),
        active_files=actions.num_rows,
        active_bytes=int(sum(actions.column("size_bytes").to_pylist())),
        disk_files=len(on_disk),
        disk_bytes=sum(p.stat().st_size for p in on_disk),
    )


def _compaction_candidates(table: DeltaTable) -> int:
    """Active files sharing a partition with another file: what ``compact`` would rewrite."""
    actions = _add_actions(table)
    keys = [c for c in actions.column_names if c.startswith("partition.")]
    rows = zip(*(actions.column(k).to_pylist() for k in keys), strict=True) if keys else None
    per_partition = Counter(rows) if rows is not None else Counter({(): actions.num_rows})
    return sum(n for n in per_partition.values() if n > 1)


@dataclass(frozen=True, slots=True)
class TableMaintenance:
    """What maintaining one table did (or, for a dry run, would do)."""

    path: str
    before: FileCounts
    after: FileCounts
    files_compacted: int
    files_written: int
    files_vacuumed: int
    retention_hours: int
    kept_versions: tuple[int, ...]
    dry_run: bool
    vacuumed: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dry_run": self.dry_run,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "files_compacted": self.files_compacted,
            "files_written": self.files_written,
            "files_vacuumed": self.files_vacuumed,
            "retention_hours": self.retention_hours,
            "kept_versions": list(self.kept_versions),
        }


def _vacuum(
    table: DeltaTable,
    *,
    retention_hours: int,
    enforce_retention: bool,
    keep_versions: Iterable[int],
    dry_run: bool,
    metadata: Mapping[str, str],
) -> list[str]:
    keep = sorted(set(keep_versions))
    try:
        removed = table.vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=enforce_retention,
            keep_versions=keep or None,
            commit_properties=CommitProperties(custom_metadata=dict(metadata)),
            # Also files no version references (e.g. linked by a commit that never happened),
            # once they are older than the retention.
            full=True,
        )
    except DeltaError as exc:
        if "retention" in str(exc).lower():
            raise ConfigError(
                f"vacuum of {table.table_uri} refused a retention of {retention_hours} h: {exc}. "
                f"Use --retention-hours {DEFAULT_RETENTION_HOURS} or more."
            ) from None
        raise Transient(f"vacuum of {table.table_uri} failed ({exc}). Retry.") from None
    return sorted(set(removed))


def maintain_table(
    path: str,
    *,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    enforce_retention: bool = True,
    keep_versions: Iterable[int] = (),
    metadata: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> TableMaintenance:
    """Compact small files, then vacuum files unreferenced for ``retention_hours``.

    ``keep_versions``: versions whose data files vacuum must keep whatever their age (the
    current snapshot is always kept). ``enforce_retention=False`` lets ``retention_hours``
    go below the table's configured minimum (one week): the caller decides when that is safe.
    A dry run changes nothing; it counts the files compaction would rewrite and the files
    vacuum would delete now (files compaction would replace are not among them yet).
    """
    if retention_hours < 0:
        raise ConfigError(f"retention must be 0 hours or more, got {retention_hours}")
    meta = dict(metadata or {})
    before = file_counts(path)
    keep = tuple(sorted(set(keep_versions)))
    table = DeltaTable(path)
    if dry_run:
        would_vacuum = _vacuum(
            table,
            retention_hours=retention_hours,
            enforce_retention=enforce_retention,
            keep_versions=keep,
            dry_run=True,
            metadata=meta,
        )
        return TableMaintenance(
            path=path,
            before=before,
            after=before,
            files_compacted=_compaction_candidates(table),
            files_written=0,
            files_vacuumed=len(would_vacuum),
            retention_hours=retention_hours,
            kept_versions=keep,
            dry_run=True,
            vacuumed=tuple(would_vacuum),
        )
    try:
        metrics = table.optimize.compact(
            commit_properties=CommitProperties(
                custom_metadata={**meta, f"{META_PREFIX}operation": "maintenance.compact"}
            )
        )
    except DeltaError as exc:  # e.g. a concurrent commit won the race
        raise Transient(f"compacting {path} failed ({exc}); nothing changed. Retry.") from None
    vacuumed = _vacuum(
        DeltaTable(path),
        retention_hours=retention_hours,
        enforce_retention=enforce_retention,
        keep_versions=keep,
        dry_run=False,
        metadata={**meta, f"{META_PREFIX}operation": "maintenance.vacuum"},
    )
    return TableMaintenance(
        path=path,
        before=before,
        after=file_counts(path),
        files_compacted=int(metrics.get("numFilesRemoved", 0)),
        files_written=int(metrics.get("numFilesAdded", 0)),
        files_vacuumed=len(vacuumed),
        retention_hours=retention_hours,
        kept_versions=keep,
        dry_run=False,
        vacuumed=tuple(vacuumed),
    )
