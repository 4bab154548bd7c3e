"""``signalfactory demo``: the PRD's steel thread, two weeks in well under a minute.

Fourteen daily partitions of ``orders_daily`` run at their real (simulated) times: the upstream
Airflow DAG ``daily_ingest`` writes ``raw.orders_eu`` and ``raw.orders_us`` at 00:30 ET and its
OpenLineage events are ingested; our pipeline runs at 01:05 ET; every policy is evaluated at
02:35 ET, the first moment after the freshness deadline (02:00 ET) and its 30-minute grace.
Three bad days are seeded (see :mod:`signalfactory.consumption.steel_thread`); each incident is
shown with its root-cause explanation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from signalfactory.api import SignalFactory
from signalfactory.consumption.rca import Explanation, explain
from signalfactory.consumption.report import certification_table
from signalfactory.consumption.steel_thread import (
    DEPLOY_REF,
    ENUM_DAY,
    URN,
    Day,
    build_history,
)
from signalfactory.core.observability import Deployment, IncidentStatus
from signalfactory.core.records import use_clock
from signalfactory.enforcement.pii import ephemeral_demo_key
from signalfactory.knowledge.lineage import ingest_openlineage

_STORY = {
    "2026-02-10": "upstream task ingest_orders_us failed: only the EU half arrived",
    "2026-02-12": f"deploy {DEPLOY_REF}; a new order_type FLASH_SALE appears",
    "2026-02-14": "upstream on time, but orders_daily is never triggered",
}


def _print_explanation(console: Console, exp: Explanation) -> None:
    console.print(f"[bold]{exp.conclusion}[/]", highlight=False, soft_wrap=True)
    for i, step in enumerate(exp.chain, 1):
        mark = "[bold red]→[/]" if step is exp.root_cause else " "
        console.print(f"  {mark} {i}. [cyan]{step.kind:<17}[/] {step.text}", highlight=False)
    console.print()


def _run_day(sf: SignalFactory, directory: Path, day: Day) -> tuple[str, str, str, str]:
    """Ingest the upstream DAG's lineage, run our pipeline (unless missed), return the row."""
    lines = (directory / "openlineage" / f"daily_ingest_{day.dt}.ndjson").read_text("utf-8")
    ingest_openlineage(sf.store, lines.splitlines(), source="airflow")
    if day.day == ENUM_DAY:
        sf.store.add_deployment(
            Deployment(
                DEPLOY_REF,
                "orders_daily",
                recorded_at=day.ingest_at,
                actor="ci",
                note="checkout service: new FLASH_SALE order type",
            )
        )
    if not day.run_pipeline:
        return "—", "—", "—", "[bold red]never triggered[/]"
    with use_clock(day.run_at):
        outcome = sf.run(directory / "pipeline.yaml", {"dt": day.dt})
    run = outcome.run
    status = str(run.certification_status)
    style = "green" if status == "CERTIFIED" else "bold red"
    return (
        f"{run.rows_read:,}",
        f"{run.rows_written:,}",
        f"{run.rows_quarantined:,}",
        f"[{style}]{status}[/]",
    )


def run_steel_thread(directory: Path | None, console: Console) -> int:
    directory = (directory or Path.cwd() / "signalfactory-demo").resolve()
    home = directory / ".signalfactory"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    ephemeral_demo_key(home)
    days = build_history(directory)
    console.print(
        Panel.fit(
            "[bold]Signal Factory demo[/] — the steel thread: two weeks of orders_daily\n"
            "upstream Airflow DAG daily_ingest → raw.orders_eu + raw.orders_us → "
            f"{URN}\nfiles in {directory}\nstore + lake in {home} (SQLite + local Delta tables)"
        )
    )
    table = Table(title="Daily runs (evaluated at 02:35 ET, after deadline 02:00 ET + 30m grace)")
    for col in (
        "dt",
        "upstream EU/US rows",
        "read",
        "certified",
        "quarantined",
        "certification",
        "incidents at 02:35 ET",
    ):
        table.add_column(col, overflow="fold")
    opened: list[str] = []
    with SignalFactory(home=home) as sf:
        sf.register(directory / "dataset.yaml", directory / "policy_bundle.yaml")
        for day in days:
            read, certified, quarantined, status = _run_day(sf, directory, day)
            report = sf.evaluate_signals(day.evaluate_at)
            notes = []
            for change in report.changes:
                inc = change.incident
                if change.event == "OPENED":
                    opened.append(inc.incident_id)
                    notes.append(f"[bold red]opened[/] {inc.signature}")
                elif change.event == "RESOLVED":
                    notes.append(f"[green]resolved[/] {inc.signature}")
            upstream = f"{day.rows['eu']:,} / " + (
                f"{day.rows['us']:,}" if day.rows["us"] else "[bold red]FAILED[/]"
            )
            table.add_row(
                day.dt,
                upstream,
                read,
                certified,
                quarantined,
                status,
                "; ".join(notes) or "[green]healthy[/]",
            )
        console.print(table)
        console.print()
        for dt, story in _STORY.items():
            console.rule(f"{dt}: {story}", align="left", style="dim")
            for incident_id in opened:
                found = sf.store.get_incident(incident_id)
                if found is None or found.partition not in (f"dt={dt}", None):
                    continue
                if found.partition is None and dt not in found.summary:
                    continue
                _print_explanation(console, explain(sf.store, incident_id))
        still_open = [i for i in sf.store.list_incidents() if i.status is IncidentStatus.OPEN]
        state = sf.certified(URN)
        console.print(certification_table([state]))
        console.print(
            f"{len(opened)} incidents opened, {len(still_open)} still open. The certified "
            "table never held an uncertified row: the FLASH_SALE day is quarantined and the "
            "certified view stayed on the last good version."
        )
        first_open = still_open[0].incident_id if still_open else (opened[0] if opened else "")
    console.print(
        Panel.fit(
            "Try next:\n"
            f"  export SIGNALFACTORY_HOME={home}\n"
            "  .venv/bin/signalfactory incidents\n"
            f"  .venv/bin/signalfactory explain {first_open}\n"
            f"  .venv/bin/signalfactory lineage upstream {URN}\n"
            "  .venv/bin/signalfactory signals evaluate --at 2026-02-15T07:35:00Z\n"
            "  .venv/bin/signalfactory runs\n"
            f"  .venv/bin/signalfactory certified {URN} --json\n"
            "  .venv/bin/signalfactory demo --scenario gates   # the gates, three days in detail",
            title="next",
            title_align="left",
        )
    )
    return 0
