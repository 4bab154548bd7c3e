"""Operating a dataset's lake after the runs: certified rollback (B12) and maintenance (B15).

Rollback restores the certified Delta table to an earlier *certified* version with
``DeltaTable.restore``: the restore is itself a new version (so it can be undone by rolling
back to the version it replaced), the certification state points at it and the audit trail
records the move. Only the certified table moves; bronze, silver and gold keep their history.

Maintenance compacts small files and vacuums old ones on the bronze, silver, gold and
certified tables. It never deletes what the certified view needs: the files of the current
certified version, of the version it replaced (the rollback that undoes the last change) and
of every certified version committed within the retention window stay on disk. Quarantine
tables the store references are evidence and are never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError

from signalfactory.core.errors import ConfigError, NotFoundError, Transient
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import (
    CertificationState,
    CertificationStatus,
    RunStatus,
    Transition,
    utcnow,
)
from signalfactory.enforcement.policy import DatasetSpec
from signalfactory.pipeline.paths import DatasetPaths
from signalfactory.production.maintenance import (
    DEFAULT_RETENTION_HOURS,
    META_PREFIX,
    Commit,
    FileCounts,
    TableMaintenance,
    commit_history,
    file_counts,
    maintain_table,
    missing_files,
)

ACTOR = "signalfactory.ops"
ROLLBACK_OPERATIONS = ("rollback", "restore")
LAYERS = ("bronze", "silver", "gold", "certified")
_VERSION = re.compile(r"^\s*[vV]?(\d+)\s*$")


def _meta(commit: Commit, key: str) -> str | None:
    return commit.metadata.get(META_PREFIX + key)


def is_certified_state(commit: Commit) -> bool:
    """A run's certified commit, or a rollback of ours (maintenance commits are neither)."""
    operation = _meta(commit, "operation")
    if operation in ROLLBACK_OPERATIONS:
        return True
    return _meta(commit, "layer") == "certified" and operation is None


def parse_version(value: int | str) -> int:
    """``3``, ``"3"`` or ``"v3"`` → 3."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _VERSION.match(str(value))
    if match is None:
        raise ConfigError(
            f"--to {value!r} is not a table version; give a number such as 3 or v3 "
            "(see `signalfactory certified DATASET_URN`)."
        )
    return int(match.group(1))


def _versions(numbers: list[int], limit: int = 20) -> str:
    shown = [f"v{n}" for n in numbers[-limit:]]
    return ("… " if len(numbers) > limit else "") + ", ".join(shown) if shown else "none"


def _unknown_dataset(store: MetadataStore, dataset_urn: str) -> NotFoundError:
    known = ", ".join(d.urn for d in store.list_datasets()) or "none yet"
    return NotFoundError(
        f"dataset {dataset_urn} is not registered (registered: {known}). Register it with "
        "`signalfactory register dataset.yaml --policy policy_bundle.yaml`."
    )


# -- rollback (B12) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RollbackResult:
    state: CertificationState
    from_version: int | None
    to_version: int
    new_version: int
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_urn": self.state.dataset_urn,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "new_version": self.new_version,
            "rows": self.rows,
            "undo": None if self.from_version is None else f"--to v{self.from_version}",
            "certification": self.state.to_dict(),
        }


def rollback_to(
    store: MetadataStore, dataset_urn: str, to_version: int | str, actor: str
) -> RollbackResult:
    """Restore the certified table to ``to_version`` as a new version; see ``rollback``."""
    state = store.get_certification(dataset_urn)
    if state is None:
        raise _unknown_dataset(store, dataset_urn)
    history = commit_history(state.path)
    if not history:
        raise NotFoundError(
            f"dataset {dataset_urn} has no certified table yet ({state.path}): no run has "
            "certified it, so there is nothing to roll back."
        )
    target = parse_version(to_version)
    certified = [c.version for c in history if is_certified_state(c)]
    current = state.certified_version
    listing = f"certified versions: {_versions(certified)} (current: " + (
        f"v{current})" if current is not None else "none)"
    )
    by_version = {c.version: c for c in history}
    if target not in by_version:
        raise NotFoundError(
            f"the certified table of {dataset_urn} has no version v{target}; {listing}."
        )
    if target not in certified:
        raise ConfigError(
            f"v{target} of the certified table of {dataset_urn} is not a certified state (a "
            f"{by_version[target].operation} commit written by neither a certified run nor a "
            f"rollback); {listing}."
        )
    changed_since = [
        c
        for c in history
        if c.version > target and not (_meta(c, "operation") or "").startswith("maintenance.")
    ]
    if target == current and not changed_since:
        raise ConfigError(f"{dataset_urn} is already certified at v{target}; {listing}.")
    gone = missing_files(state.path, target)
    if gone:
        raise ConfigError(
            f"v{target} of the certified table of {dataset_urn} can no longer be restored: "
            f"{len(gone)} of its data files were removed by vacuum (`signalfactory maintain`); "
            f"{listing}."
        )
    table = DeltaTable(state.path)
    if target != table.version():
        metadata = {
            f"{META_PREFIX}operation": "rollback",
            f"{META_PREFIX}layer": "certified",
            f"{META_PREFIX}dataset": dataset_urn,
            f"{META_PREFIX}from_version": "" if current is None else str(current),
            f"{META_PREFIX}to_version": str(target),
            f"{META_PREFIX}actor": actor,
        }
        try:
            table.restore(target, commit_properties=CommitProperties(custom_metadata=metadata))
        except DeltaError as exc:  # e.g. a concurrent commit won the race
            raise Transient(
                f"restoring v{target} of {state.path} failed ({exc}); nothing changed. Retry."
            ) from None
        table = DeltaTable(state.path)
    # else: the table already is at that state (a rollback whose bookkeeping was interrupted).
    new_version = int(table.version())
    new_state = CertificationState(
        dataset_urn=dataset_urn,
        certification_status=CertificationStatus.CERTIFIED,
        certified_version=new_version,
        last_certified_at=utcnow(),
        last_run_id=state.last_run_id,
        path=state.path,
    )
    store.put_certification(new_state)
    store.append_transition(
        Transition(
            subject=dataset_urn,
            from_status=None if current is None else f"v{current}",
            to_status=f"v{new_version}",
            actor=actor,
            reason=f"rollback to v{target}",
        )
    )
    rows = int(table.to_pyarrow_dataset().count_rows())
    return RollbackResult(new_state, current, target, new_version, rows)


def rollback(
    store: MetadataStore, dataset_urn: str, to_version: int | str, actor: str
) -> CertificationState:
    """Roll the certified table of ``dataset_urn`` back to the certified version ``to_version``.

    The restore is a new Delta version carrying ``signalfactory.operation=rollback``,
    ``from_version``, ``to_version`` and ``actor`` in its commit metadata; undo it by rolling
    back to the version it replaced. Raises ``NotFoundError`` for an unknown dataset or
    version and ``ConfigError`` for a version that is not a certified state (or was vacuumed).
    """
    return rollback_to(store, dataset_urn, to_version, actor).state


# -- maintenance (B15) -----------------------------------------------------------------------


def protected_versions(
    current: int | None, history: list[Commit], retention_hours: int, now: datetime
) -> set[int]:
    """Certified versions vacuum must keep: the current one, the one it replaced and every
    certified state committed within the retention window."""
    certifying = [c for c in history if is_certified_state(c)]
    keep: set[int] = set()
    if current is not None:
        keep.add(current)
        earlier = [c.version for c in certifying if c.version < current]
        if earlier:
            keep.add(earlier[-1])
        commit = next((c for c in certifying if c.version == current), None)
        source = _meta(commit, "from_version") if commit else None
        if source and source.isdigit():  # the current state is a rollback: keep its undo
            keep.add(int(source))
    cutoff = now - timedelta(hours=retention_hours)
    keep |= {c.version for c in certifying if c.timestamp is not None and c.timestamp >= cutoff}
    return keep


@dataclass(frozen=True, slots=True)
class TableOutcome:
    layer: str
    path: str
    result: TableMaintenance | None = None
    counts: FileCounts | None = None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"layer": self.layer, "path": self.path, "skipped": self.skipped}
        if self.result is not None:
            data.update(self.result.to_dict())
        elif self.counts is not None:
            data["before"] = data["after"] = self.counts.to_dict()
        return data


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    dataset_urn: str
    retention_hours: int
    dry_run: bool
    certified_version: int | None
    tables: tuple[TableOutcome, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_urn": self.dataset_urn,
            "retention_hours": self.retention_hours,
            "dry_run": self.dry_run,
            "certified_version": self.certified_version,
            "tables": [t.to_dict() for t in self.tables],
        }


def _short_retention_allowed(store: MetadataStore, dataset_urn: str, retention_hours: int) -> bool:
    """Whether the retention may go below Delta's one-week minimum: only with no run in flight,
    whose not-yet-committed files a short vacuum would delete."""
    if retention_hours >= DEFAULT_RETENTION_HOURS:
        return False
    busy = [
        r.run_id
        for r in store.list_runs(dataset_urn=dataset_urn, limit=1000)
        if r.status in (RunStatus.RUNNING, RunStatus.PENDING)
    ]
    if busy:
        raise ConfigError(
            f"run {', '.join(busy)} of {dataset_urn} is in flight: a retention of "
            f"{retention_hours} h could delete files it is writing. Retry when it has finished, "
            f"or keep --retention-hours {DEFAULT_RETENTION_HOURS} or more."
        )
    return True


def _quarantine_tables(store: MetadataStore, dataset_urn: str, root: str) -> list[TableOutcome]:
    referenced = {str(Path(q.path).resolve()): q for q in store.list_quarantine(dataset_urn)}
    folders = {str(p.resolve()) for p in Path(root).iterdir()} if Path(root).is_dir() else set()
    outcomes = []
    for path in sorted(folders | set(referenced)):
        if not DeltaTable.is_deltatable(path):
            continue
        record = referenced.get(path)
        reason = (
            f"evidence of run {record.run_id}: never compacted or vacuumed"
            if record
            else "not referenced by the store: left for review"
        )
        outcomes.append(
            TableOutcome(
                f"quarantine:{Path(path).name}", path, counts=file_counts(path), skipped=reason
            )
        )
    return outcomes


def maintain(
    store: MetadataStore,
    dataset_urn: str,
    lake_root: Path,
    *,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    dry_run: bool = False,
    actor: str = ACTOR,
) -> MaintenanceReport:
    """Compact and vacuum the dataset's layer tables; record one transition per table."""
    if retention_hours < 0:
        raise ConfigError(f"--retention-hours must be 0 or more, got {retention_hours}")
    record = store.get_dataset(dataset_urn)
    if record is None:
        raise _unknown_dataset(store, dataset_urn)
    paths = DatasetPaths.for_dataset(DatasetSpec.model_validate(record.spec), lake_root)
    state = store.get_certification(dataset_urn)
    current = state.certified_version if state else None
    short = _short_retention_allowed(store, dataset_urn, retention_hours)
    now = utcnow()
    outcomes: list[TableOutcome] = []
    for layer in LAYERS:
        path = state.path if layer == "certified" and state else str(getattr(paths, layer))
        if not DeltaTable.is_deltatable(path):
            outcomes.append(TableOutcome(layer, path, skipped="no table yet"))
            continue
        keep: set[int] = set()
        if layer == "certified":
            keep = protected_versions(current, commit_history(path), retention_hours, now)
        result = maintain_table(
            path,
            retention_hours=retention_hours,
            enforce_retention=not short,
            keep_versions=keep,
            metadata={
                f"{META_PREFIX}dataset": dataset_urn,
                f"{META_PREFIX}table_layer": layer,
                f"{META_PREFIX}actor": actor,
            },
            dry_run=dry_run,
        )
        outcomes.append(TableOutcome(layer, path, result=result))
        if not dry_run:
            store.append_transition(
                Transition(
                    subject=f"{dataset_urn}#{layer}",
                    from_status=f"v{result.before.version}",
                    to_status=f"v{result.after.version}",
                    actor=actor,
                    reason=(
                        f"maintenance: compacted {result.files_compacted} files into "
                        f"{result.files_written}, vacuumed {result.files_vacuumed} "
                        f"(retention {retention_hours} h"
                        + (f", kept {', '.join(f'v{v}' for v in sorted(keep))}" if keep else "")
                        + ")"
                    ),
                )
            )
    outcomes += _quarantine_tables(store, dataset_urn, paths.quarantine_root)
    return MaintenanceReport(dataset_urn, retention_hours, dry_run, current, tuple(outcomes))
