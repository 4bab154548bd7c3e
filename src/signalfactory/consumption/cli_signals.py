"""``signalfactory signals evaluate|list``, ``watch`` and ``explain`` (O2-O6, O8)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    from signalfactory.processing.service import EvaluationReport

signals_app = typer.Typer(
    help="Health signals: freshness, volume, schema drift, compliance (evaluate, list).",
    no_args_is_help=True,
)

AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at", help="Evaluate as of this ISO time (default now), e.g. 2026-02-16T08:00Z."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

_STYLE = {"CRITICAL": "bold red", "WARNING": "yellow", "INFO": "dim"}


def parse_at(value: str | None) -> datetime:
    """``--at`` as a tz-aware UTC instant (naive values are UTC); now when not given."""
    from signalfactory.consumption.cli_incidents import parse_instant

    if value is None:
        return datetime.now(UTC)
    return parse_instant(value, "--at", example="2026-02-16T07:30:00Z")


def _signals_table(signals: list[dict[str, object]]) -> Table:
    table = Table(title="signals", title_justify="left")
    for col in ("dataset", "kind", "state", "signature", "severity", "partition", "summary"):
        table.add_column(col, overflow="fold")
    for s in signals:
        sev = str(s["severity"])
        state = str(s["state"])
        table.add_row(
            str(s["dataset_urn"]),
            str(s["kind"]),
            f"[{_STYLE.get(sev, '')}]{state}[/]" if state == "BREACH" else f"[green]{state}[/]",
            str(s["signature"]),
            sev,
            str(s["partition"] or ""),
            str(s["summary"]),
        )
    return table


@signals_app.command("evaluate")
def evaluate(at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """Evaluate every dataset's policies once; open/resolve incidents and send alerts.

    Exit code 0 when every signal is healthy, 3 when any is in breach.
    """
    from signalfactory.consumption.cli import _dump, _factory, _guard, console

    instant = _guard(lambda: parse_at(at))
    with _factory() as sf:
        report = _guard(lambda: sf.evaluate_signals(instant))
    if as_json:
        _dump(report.to_dict())
    else:
        shown = [s.to_dict() for s in report.signals]
        console.print(_signals_table(shown) if shown else "no dataset has a policy to evaluate")
        for change in report.changes:
            console.print(f"incident {change.incident.incident_id}: {change.event}")
    raise typer.Exit(3 if report.breaches else 0)


@signals_app.command("list")
def list_signals(
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset URN")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Signals stored by earlier evaluations, newest first."""
    from signalfactory.consumption.cli import _dump, _factory, console

    with _factory() as sf:
        rows = [
            s.to_dict()
            for s in sf.store.list_signals(dataset_urn=dataset, limit=limit, newest_first=True)
        ]
    if as_json:
        _dump(rows)
    else:
        console.print(_signals_table(rows) if rows else "no signals stored yet")


def watch(
    interval: Annotated[float, typer.Option("--interval", min=1.0, help="seconds")] = 30.0,
    iterations: Annotated[
        int, typer.Option("--iterations", min=0, help="stop after N evaluations (0 = forever)")
    ] = 0,
    follow_bus: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="also evaluate a dataset as soon as its evidence arrives on the evidence bus "
            "(SIGNALFACTORY_BUS_URL), not only every --interval seconds",
        ),
    ] = False,
) -> None:
    """Keep evaluating every policy every --interval seconds (default 30) until stopped."""
    from signalfactory.consumption.cli import _factory, _guard, console
    from signalfactory.processing.alerting import sinks_from_settings
    from signalfactory.processing.bus import open_backend
    from signalfactory.processing.follow import follow

    done = 0

    def show(report: EvaluationReport) -> None:
        nonlocal done
        scope = "all datasets" if report.scope is None else ", ".join(report.scope)
        console.print(
            f"{report.at:%H:%M:%S} {scope}: {len(report.signals)} signals, "
            f"{len(report.breaches)} in breach, {len(report.changes)} incident changes, "
            f"{report.alerts_sent} alerts sent",
            highlight=False,
        )
        done += 1

    with _factory() as sf:
        if follow_bus:
            bus = _guard(lambda: open_backend(sf.settings.bus_url, store=sf.store))
            try:
                reports = follow(
                    sf.store,
                    bus,
                    sinks_from_settings(sf.settings),
                    interval_s=interval,
                    stop=lambda: bool(iterations) and done >= iterations,
                )
                for report in reports:
                    show(report)
            finally:
                bus.close()
            return
        while True:
            show(_guard(lambda: sf.evaluate_signals(datetime.now(UTC))))
            if iterations and done >= iterations:
                return
            time.sleep(interval)


def explain(incident_id: str, as_json: JsonOpt = False) -> None:
    """Why is this dataset wrong or late? The chain from incident to root cause."""
    from signalfactory.consumption.cli import _dump, _factory, _guard, console
    from signalfactory.consumption.rca import explain as rca_explain

    with _factory() as sf:
        explanation = _guard(lambda: rca_explain(sf.store, incident_id))
    if as_json:
        _dump(explanation.to_dict())
        return
    console.print(f"[bold]{explanation.conclusion}[/]\n", highlight=False)
    for i, step in enumerate(explanation.chain, 1):
        mark = "[bold red]→[/]" if step is explanation.root_cause else " "
        console.print(f"{mark} {i}. [cyan]{step.kind}[/] {step.text}", highlight=False)


def register_signals(app: typer.Typer) -> None:
    """Add ``signals``, ``watch`` and ``explain`` to ``app``."""
    app.add_typer(signals_app, name="signals")
    app.command("watch")(watch)
    app.command("explain")(explain)
