"""The execution report of one run (B15): timings, rows, bytes, throughput, gates, commits.

Everything comes from the store (run record, evidence, lifecycle events, quarantine records)
and from the Delta tables' own history: the commits of the run are the ones whose commit
metadata carries ``signalfactory.run_id``; their bytes are the sizes of the files they added.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deltalake.exceptions import DeltaError
from rich.console import Console
from rich.table import Table

from signalfactory.core.errors import NotFoundError
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import LifecycleEventType, RunRecord, iso
from signalfactory.enforcement.policy import DatasetSpec
from signalfactory.pipeline.paths import DatasetPaths
from signalfactory.production.maintenance import META_PREFIX, added_by_commit, commit_history

#: Figures the runtime adds to ``reconciliation`` or ``resource_summary`` when it has them.
RESOURCE_KEYS = ("peak_rss_mb", "retries", "dead_letters")
MB = 1_000_000


def _tables(store: MetadataStore, run: RunRecord, lake_root: Path) -> dict[str, str]:
    """layer → table path for every table the run may have committed to."""
    tables: dict[str, str] = {}
    record = store.get_dataset(run.dataset_urn)
    if record is not None:
        paths = DatasetPaths.for_dataset(DatasetSpec.model_validate(record.spec), lake_root)
        tables = {layer: str(getattr(paths, layer)) for layer in ("bronze", "silver", "gold")}
        tables["certified"] = paths.certified
    state = store.get_certification(run.dataset_urn)
    if state is not None:
        tables["certified"] = state.path
    for q in store.list_quarantine(run.dataset_urn):
        if q.run_id == run.run_id:
            tables["quarantine"] = q.path
    return tables


def _commits(tables: Mapping[str, str], run_id: str) -> list[dict[str, Any]]:
    found = []
    for layer, path in tables.items():
        for commit in commit_history(path):
            if commit.metadata.get(f"{META_PREFIX}run_id") != run_id:
                continue
            try:
                files, size = added_by_commit(path, commit.version)
            except (DeltaError, OSError):  # log entries cleaned up since: sizes unknown
                files, size = None, None
            rows = commit.metrics.get("num_added_rows")
            found.append(
                {
                    "layer": layer,
                    "path": path,
                    "version": commit.version,
                    "operation": commit.operation,
                    "timestamp": iso(commit.timestamp),
                    "rows": int(rows) if rows is not None else None,
                    "files_added": files,
                    "bytes_added": size,
                }
            )
    return found


def _resources(run: RunRecord, completed: Mapping[str, Any] | None) -> dict[str, Any]:
    summary = dict((completed or {}).get("resource_summary") or {})
    resources: dict[str, Any] = {k: v for k, v in summary.items() if k not in RESOURCE_KEYS}
    for key in RESOURCE_KEYS:
        resources[key] = run.reconciliation.get(key, summary.get(key))
    return resources


def _rate(amount: float, seconds: float | None) -> float | None:
    if not seconds or seconds <= 0:
        return None
    return round(amount / seconds, 3)


def build_report(store: MetadataStore, run_id: str, lake_root: Path) -> dict[str, Any]:
    """The report of run ``run_id`` as a JSON-ready dict."""
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist. List runs with `signalfactory runs`.")
    commits = _commits(_tables(store, run, lake_root), run_id)
    by_layer: dict[str, int] = {}
    for c in commits:
        by_layer[c["layer"]] = by_layer.get(c["layer"], 0) + (c["bytes_added"] or 0)
    total = sum(by_layer.values())
    duration = (
        (run.finished_at - run.started_at).total_seconds() if run.finished_at is not None else None
    )
    events = store.list_events(run_id=run_id)
    completed = next(
        (e.payload for e in events if e.event_type is LifecycleEventType.JOB_RUN_COMPLETED), None
    )
    data = run.to_dict()
    return {
        **{
            k: data[k]
            for k in (
                "run_id",
                "pipeline",
                "dataset_urn",
                "partition",
                "status",
                "certification_status",
                "certified_version",
                "engine",
                "chunk_size",
                "started_at",
                "finished_at",
                "quarantine_table",
                "error",
            )
        },
        "duration_s": round(duration, 6) if duration is not None else None,
        "stages": data["stages"],
        "rows": {
            "read": run.rows_read,
            "certified": run.rows_written,
            "quarantined": run.rows_quarantined,
            "dropped": run.rows_dropped,
        },
        "bytes": {"total": total, "by_layer": by_layer},
        "throughput": {
            "rows_per_s": _rate(run.rows_read, duration),
            "mb_per_s": _rate(total / MB, duration),
        },
        "commits": commits,
        "evidence": [
            {
                "stage": str(e.stage),
                "gate": e.gate,
                "result": str(e.result),
                "disposition": e.context.get("disposition"),
                "failure_signature": e.failure_signature,
                "rows_failed": e.metrics.get("rows_failed"),
            }
            for e in store.list_evidence(run_id=run_id)
        ],
        "events": [
            e.to_dict()
            for e in events
            if e.event_type is LifecycleEventType.DATASET_WRITE_COMMITTED
        ],
        "reconciliation": dict(data["reconciliation"]),
        "resources": _resources(run, completed),
    }


# -- human output ----------------------------------------------------------------------------


def _na(value: Any, fmt: str = "{}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def render_report(console: Console, report: Mapping[str, Any]) -> None:
    partition = ", ".join(f"{k}={v}" for k, v in report["partition"].items()) or "(unpartitioned)"
    console.print(
        f"[bold]{report['pipeline']}[/] {partition}  run [cyan]{report['run_id']}[/]  "
        f"{report['status']}  certification {report['certification_status']}  "
        f"engine {report['engine']}, chunks of {report['chunk_size']:,} rows"
    )
    if report["error"]:
        console.print(f"  [bold red]error:[/] {report['error']}")
    stages = _table("Stages", ("stage", "seconds", "rows in", "rows out"))
    for s in report["stages"]:
        stages.add_row(
            s["name"], f"{s['duration_s']:.3f}", f"{s['rows_in']:,}", f"{s['rows_out']:,}"
        )
    console.print(stages)
    rows, throughput = report["rows"], report["throughput"]
    console.print(
        f"  rows read {rows['read']:,} · certified {rows['certified']:,} · quarantined "
        f"{rows['quarantined']:,} · dropped {rows['dropped']:,}"
    )
    console.print(
        f"  duration {_na(report['duration_s'], '{:.3f}')} s · bytes written "
        f"{report['bytes']['total']:,} · {_na(throughput['rows_per_s'], '{:,.0f}')} rows/s · "
        f"{_na(throughput['mb_per_s'], '{:.2f}')} MB/s"
    )
    commits = _table("Commits", ("layer", "version", "rows", "files", "bytes", "path"))
    for c in report["commits"]:
        commits.add_row(
            c["layer"],
            f"v{c['version']}",
            _na(c["rows"], "{:,}"),
            _na(c["files_added"]),
            _na(c["bytes_added"], "{:,}"),
            c["path"],
        )
    if report["commits"]:
        console.print(commits)
    gates = _table("Gates", ("stage", "gate", "result", "disposition", "rows failed", "signature"))
    for e in report["evidence"]:
        gates.add_row(
            e["stage"],
            e["gate"],
            e["result"],
            _na(e["disposition"]),
            _na(e["rows_failed"], "{:,}"),
            e["failure_signature"] or "-",
        )
    if report["evidence"]:
        console.print(gates)
    for e in report["events"]:
        console.print(
            f"  DatasetWriteCommitted {e.get('layer')} v{e.get('commit_version')}: "
            f"{_na(e.get('rows_written'), '{:,}')} rows, {_na(e.get('files_added'))} files"
        )
    recon = report["reconciliation"]
    if recon:
        console.print(
            "  reconciliation: "
            + ", ".join(f"{k}={v}" for k, v in recon.items() if k not in RESOURCE_KEYS)
        )
    res = report["resources"]
    console.print(
        f"  peak RSS {_na(res.get('peak_rss_mb'), '{} MB')} · retries {_na(res.get('retries'))}"
        f" · dead letters {_na(res.get('dead_letters'))}"
    )
