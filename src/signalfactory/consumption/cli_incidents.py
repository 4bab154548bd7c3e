"""``signalfactory incidents [show]`` and ``signalfactory deploy record|list`` (O6, O8).

``incidents`` is a command group whose callback lists incidents when no subcommand is given,
so ``signalfactory incidents --json`` and ``signalfactory incidents show ID`` both work.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from signalfactory.core.errors import ConfigError, NotFoundError
from signalfactory.core.observability import Deployment, Incident, IncidentStatus
from signalfactory.core.records import iso

incidents_app = typer.Typer(
    help="Incidents opened by signals: open ones by default, newest first.",
    invoke_without_command=True,
)
deploy_app = typer.Typer(
    help="Deployment events: candidate causes for what follows.", no_args_is_help=True
)

_STATUSES = {"open": IncidentStatus.OPEN, "resolved": IncidentStatus.RESOLVED, "all": None}
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:
        return "cli"


def _status(value: str) -> IncidentStatus | None:
    try:
        return _STATUSES[value.lower()]
    except KeyError:
        raise ConfigError(f"--status {value!r} is not one of open, resolved, all") from None


def parse_instant(value: str, flag: str, example: str = "2026-02-15T07:15:00Z") -> datetime:
    """An ISO-8601 instant from the command line; a value without offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{flag} {value!r} is not an ISO-8601 time; use e.g. {flag} {example}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@incidents_app.callback()
def incidents(
    ctx: typer.Context,
    status: Annotated[
        str, typer.Option("--status", help="open | resolved | all", show_default=True)
    ] = "open",
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset URN")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List incidents (open ones unless --status says otherwise), newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from signalfactory.consumption.cli import _dump, _factory, _guard, console

    wanted = _guard(lambda: _status(status))
    with _factory() as sf:
        found = sf.store.list_incidents(wanted, dataset)
        if as_json:
            _dump([i.to_dict() for i in found])
            return
        if not found:
            which = "" if wanted is None else f"{str(wanted).lower()} "
            console.print(f"no {which}incidents" + (f" for {dataset}" if dataset else ""))
            return
        console.print(_incident_table(found))
        console.print("root cause of one: signalfactory explain INCIDENT_ID", style="dim")


def _incident_table(found: list[Incident]) -> Table:
    table = Table(title="Incidents", title_justify="left")
    columns = ("id", "status", "severity", "dataset", "signature", "partition", "owner")
    for column in (*columns, "opened", "downstream"):
        table.add_column(column, no_wrap=column in ("id", "signature"))
    for i in found:
        table.add_row(
            i.incident_id,
            str(i.status),
            str(i.severity),
            i.dataset_urn,
            i.signature,
            i.partition or "-",
            i.owner_team or "-",
            iso(i.opened_at),
            str(len(i.blast_radius)),
        )
    return table


@incidents_app.command("show")
def incidents_show(incident_id: str, as_json: JsonOpt = False) -> None:
    """One incident with its blast radius and alert deliveries."""
    from signalfactory.consumption.cli import _dump, _factory, _guard, console

    with _factory() as sf:

        def lookup() -> Incident:
            found = sf.store.get_incident(incident_id)
            if found is None:
                raise NotFoundError(
                    f"no incident {incident_id!r} in the metadata store; "
                    "`signalfactory incidents --status all` lists them"
                )
            return found

        incident = _guard(lookup)
        deliveries = sf.store.list_deliveries(incident_id)
        if as_json:
            _dump({**incident.to_dict(), "deliveries": [d.to_dict() for d in deliveries]})
            return
        for label, value in (
            ("incident", incident.incident_id),
            ("status", str(incident.status)),
            ("severity", str(incident.severity)),
            ("dataset", incident.dataset_urn),
            ("owner", incident.owner_team or "-"),
            ("signature", incident.signature),
            ("partition", incident.partition or "-"),
            ("run", incident.run_id or "-"),
            ("opened", iso(incident.opened_at)),
            ("updated", iso(incident.updated_at)),
            ("resolved", iso(incident.resolved_at) or "-"),
            ("signals", str(len(incident.signal_ids))),
            ("summary", incident.summary),
            ("downstream", ", ".join(incident.blast_radius) or "-"),
        ):
            console.print(f"[bold]{label:>10}[/] {value}", highlight=False, soft_wrap=True)
        if deliveries:
            table = Table(title="Alert deliveries", title_justify="left")
            for column in ("sink", "event", "severity", "status", "attempts", "at", "error"):
                table.add_column(column)
            for d in deliveries:
                table.add_row(
                    d.sink,
                    str(d.event),
                    str(d.severity),
                    str(d.status),
                    str(d.attempts),
                    iso(d.at),
                    d.error or "",
                )
            console.print(table)
        console.print(f"root cause: signalfactory explain {incident.incident_id}", style="dim")


@deploy_app.command("record")
def deploy_record(
    ref: Annotated[str, typer.Option("--ref", help="the deployed code ref (commit SHA, tag)")],
    pipeline: Annotated[str, typer.Option("--pipeline", help="the pipeline it changed")],
    note: Annotated[str | None, typer.Option("--note", help="what changed")] = None,
    at: Annotated[str | None, typer.Option("--at", help="when (ISO-8601; default: now)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a deployment: drift and failures after it name it as a candidate cause."""
    from signalfactory.consumption.cli import _dump, _factory, _guard, console

    def build() -> Deployment:
        if not ref.strip() or not pipeline.strip():
            raise ConfigError("--ref and --pipeline must not be empty, e.g. --ref 3f2a9c1")
        if at is None:
            return Deployment(ref.strip(), pipeline.strip(), actor=_actor(), note=note)
        when = parse_instant(at, "--at")
        return Deployment(ref.strip(), pipeline.strip(), when, actor=_actor(), note=note)

    deployment = _guard(build)
    with _factory() as sf:
        _guard(lambda: sf.store.add_deployment(deployment))
    if as_json:
        _dump(deployment.to_dict())
    else:
        console.print(
            f"recorded deployment {deployment.deployment_id}: {deployment.deploy_ref} of "
            f"pipeline {deployment.pipeline} at {iso(deployment.recorded_at)}",
            highlight=False,
        )


@deploy_app.command("list")
def deploy_list(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="pipeline name")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO-8601, inclusive")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO-8601, inclusive")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List recorded deployments, oldest first."""
    from signalfactory.consumption.cli import _dump, _factory, _guard, console

    lo = None if since is None else _guard(lambda: parse_instant(since, "--since"))
    hi = None if until is None else _guard(lambda: parse_instant(until, "--until"))
    with _factory() as sf:
        found = sf.store.list_deployments(pipeline, since=lo, until=hi)
    if as_json:
        _dump([d.to_dict() for d in found])
        return
    if not found:
        console.print("no deployments recorded" + (f" for {pipeline}" if pipeline else ""))
        return
    table = Table(title="Deployments", title_justify="left")
    for column in ("recorded", "pipeline", "ref", "actor", "note", "id"):
        table.add_column(column, no_wrap=column in ("ref", "id"))
    for d in found:
        table.add_row(
            iso(d.recorded_at), d.pipeline, d.deploy_ref, d.actor, d.note or "", d.deployment_id
        )
    console.print(table)


def register_incidents(app: typer.Typer) -> None:
    """Add ``incidents`` (list, ``show``) and ``deploy`` (``record``, ``list``) to ``app``."""
    app.add_typer(incidents_app, name="incidents")
    app.add_typer(deploy_app, name="deploy")
