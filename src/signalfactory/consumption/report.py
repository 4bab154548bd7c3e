"""Readable reports of runs, evidence and certification (Rich)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from signalfactory.core.records import CertificationState, Evidence, RunRecord

_RESULT_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red"}


def evidence_table(evidence: Sequence[Evidence], title: str = "Gates") -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in ("stage", "gate", "result", "failure signature", "rows failed", "disposition"):
        table.add_column(column)
    for ev in evidence:
        style = _RESULT_STYLE.get(str(ev.result), "")
        failed = ev.metrics.get("rows_failed")
        sigs = list(ev.failure_signatures) or (
            [ev.failure_signature] if ev.failure_signature else []
        )
        shown = "; ".join(sigs[:3]) + (f" (+{len(sigs) - 3} more)" if len(sigs) > 3 else "")
        table.add_row(
            str(ev.stage),
            ev.gate,
            f"[{style}]{ev.result}[/]",
            shown or "-",
            str(failed) if failed else "-",
            str(ev.context.get("disposition", "")),
        )
    return table


def render_run(
    console: Console,
    run: RunRecord,
    evidence: Sequence[Evidence],
    alerts: Sequence[dict[str, Any]] = (),
    reused: bool = False,
) -> None:
    partition = ", ".join(f"{k}={v}" for k, v in run.partition.items()) or "(unpartitioned)"
    status_style = "green" if run.status == "SUCCEEDED" else "bold red"
    cert_style = "green" if run.certification_status == "CERTIFIED" else "bold yellow"
    console.print(
        f"[bold]{run.pipeline}[/] {partition}  run [cyan]{run.run_id}[/]  "
        f"[{status_style}]{run.status}[/]  certification [{cert_style}]"
        f"{run.certification_status}[/]"
        + (
            f"  certified version v{run.certified_version}"
            if run.certified_version is not None
            else ""
        )
        + ("  [dim](same input already processed: nothing written)[/]" if reused else "")
    )
    if run.error:
        console.print(f"  [bold red]error:[/] {run.error}")
        return
    console.print(
        f"  rows read {run.rows_read:,} · certified {run.rows_written:,} · quarantined "
        f"{run.rows_quarantined:,} · dropped by steps {run.rows_dropped:,}"
        + ("" if run.reconciliation.get("balanced", True) else "  [bold red]UNBALANCED[/]")
    )
    if run.quarantine_table:
        console.print(f"  quarantine table: [magenta]{run.quarantine_table}[/]")
    if evidence:
        console.print(evidence_table(evidence))
    for alert in alerts:
        console.print(
            f"  [yellow]alert →[/] team {alert['owner_team']}: {alert['gate']} "
            f"{alert['failure_signature']} — {alert['remediation']}"
        )


def certification_table(states: Sequence[CertificationState]) -> Table:
    table = Table(title="Certified tables", title_justify="left")
    for column in ("dataset", "status", "version", "last certified", "path"):
        table.add_column(column)
    for s in states:
        table.add_row(
            s.dataset_urn,
            str(s.certification_status),
            f"v{s.certified_version}" if s.certified_version is not None else "-",
            s.to_dict()["last_certified_at"] or "-",
            s.path,
        )
    return table


def runs_table(runs: Sequence[RunRecord]) -> Table:
    table = Table(title="Runs", title_justify="left")
    # The run id is what `signalfactory status` takes: never truncate it, whatever the width.
    id_width = max((len(r.run_id) for r in runs), default=6)
    for column in (
        "run id",
        "pipeline",
        "partition",
        "status",
        "certification",
        "read",
        "certified",
        "quarantined",
        "started",
    ):
        is_id = column == "run id"
        table.add_column(column, no_wrap=is_id, min_width=id_width if is_id else None)
    for r in runs:
        table.add_row(
            r.run_id,
            r.pipeline,
            ",".join(f"{k}={v}" for k, v in r.partition.items()),
            str(r.status),
            str(r.certification_status),
            f"{r.rows_read:,}",
            f"{r.rows_written:,}",
            f"{r.rows_quarantined:,}",
            r.to_dict()["started_at"],
        )
    return table
