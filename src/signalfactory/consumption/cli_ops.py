"""Operator commands: ``certified rollback`` (B12), ``maintain`` and ``report`` (B15).

``register_ops(app)`` is called once by ``cli.py``. It turns ``certified`` into a group whose
default is the existing ``certified`` command, unchanged (``signalfactory certified URN
[--json]`` still works), with ``rollback`` beside it, and adds ``maintain`` and ``report``.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup
from typer.models import CommandInfo

from signalfactory.production.maintenance import DEFAULT_RETENTION_HOURS

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ActorOpt = Annotated[
    str | None,
    typer.Option("--actor", help="Who is acting, for the audit trail (default: cli:<user>)."),
]
DEFAULT_SUBCOMMAND = "show"


class DefaultCommandGroup(TyperGroup):
    """A group that runs ``show`` when the first argument is not one of its subcommands."""

    # ctx is the Context of the click copy Typer vendors (private), hence Any.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = [DEFAULT_SUBCOMMAND, *args]
        return super().parse_args(ctx, args)


def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def rollback_command(
    dataset_urn: Annotated[str, typer.Argument(help="dataset URN")],
    to: Annotated[str, typer.Option("--to", help="certified version to restore: 3 or v3")],
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Roll the certified table back to an earlier certified version (itself a new version)."""
    from signalfactory.consumption.cli import _dump, _factory, _guard, console
    from signalfactory.pipeline.certified_ops import rollback_to

    with _factory() as sf:
        result = _guard(lambda: rollback_to(sf.store, dataset_urn, to, _actor(actor)))
        if as_json:
            _dump(result.to_dict())
            return
        previous = f"v{result.from_version}" if result.from_version is not None else "none"
        console.print(
            f"rolled back the certified table of [bold]{dataset_urn}[/]: {previous} → "
            f"[green]v{result.new_version}[/] (the content of v{result.to_version}, "
            f"{result.rows:,} rows)"
        )
        if result.from_version is not None:
            console.print(
                f"  undo with: signalfactory certified rollback {dataset_urn} "
                f"--to v{result.from_version}",
                highlight=False,
                soft_wrap=True,
            )


def _maintenance_table(report: dict[str, Any]) -> Table:
    title = f"Maintenance of {report['dataset_urn']} (retention {report['retention_hours']} h)"
    table = Table(title=title + (" — dry run" if report["dry_run"] else ""), title_justify="left")
    table.add_column("table", overflow="fold")
    for column in ("version", "active files", "files on disk", "compacted", "vacuumed"):
        table.add_column(column)
    table.add_column("note", overflow="fold")
    for t in report["tables"]:
        before, after = t.get("before"), t.get("after")
        if before is None or after is None:
            table.add_row(t["layer"], "-", "-", "-", "-", "-", t["skipped"] or "")
            continue
        kept = ", ".join(f"v{v}" for v in t.get("kept_versions", []))
        note = t["skipped"] or (f"kept {kept}" if kept else "")
        table.add_row(
            t["layer"],
            f"v{before['version']} → v{after['version']}",
            f"{before['active_files']} → {after['active_files']}",
            f"{before['disk_files']} → {after['disk_files']}",
            str(t.get("files_compacted", "-")),
            str(t.get("files_vacuumed", "-")),
            note,
        )
    return table


def maintain_command(
    dataset_urn: Annotated[str, typer.Argument(help="dataset URN")],
    retention_hours: Annotated[
        int,
        typer.Option(
            "--retention-hours",
            min=0,
            help="vacuum files unreferenced for longer than this; under 168 only with no run "
            "in flight",
        ),
    ] = DEFAULT_RETENTION_HOURS,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would change; change nothing")
    ] = False,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compact and vacuum the dataset's tables, keeping certified versions and evidence.

    Runs on bronze, silver, gold and certified. Vacuum keeps the files of the current certified
    version, of the version it replaced and of every certified version of the retention window;
    quarantine tables the store references are never touched.
    """
    from signalfactory.consumption.cli import _dump, _factory, _guard, console
    from signalfactory.pipeline.certified_ops import maintain

    with _factory() as sf:
        report = _guard(
            lambda: maintain(
                sf.store,
                dataset_urn,
                sf.settings.lake_root,
                retention_hours=retention_hours,
                dry_run=dry_run,
                actor=_actor(actor),
            )
        ).to_dict()
        if as_json:
            _dump(report)
        else:
            console.print(_maintenance_table(report))


def report_command(
    run_id: Annotated[str, typer.Argument(help="run id (see `signalfactory runs`)")],
    as_json: JsonOpt = False,
) -> None:
    """Execution report of one run: stage timings, rows, bytes, throughput, gates, commits."""
    from signalfactory.consumption.cli import _dump, _factory, _guard, console
    from signalfactory.consumption.run_report import build_report, render_report

    with _factory() as sf:
        report = _guard(lambda: build_report(sf.store, run_id, sf.settings.lake_root))
        if as_json:
            _dump(report)
        else:
            render_report(console, report)


def _take_command(app: typer.Typer, name: str) -> CommandInfo | None:
    """Remove the command ``name`` from ``app`` and return it."""
    for info in app.registered_commands:
        callback_name = getattr(info.callback, "__name__", None)
        if info.name == name or (info.name is None and callback_name == name):
            app.registered_commands.remove(info)
            return info
    return None


def register_ops(app: typer.Typer) -> None:
    """Add ``certified rollback``, ``maintain`` and ``report`` to the ``signalfactory`` app."""
    original = _take_command(app, "certified")
    if original is None or original.callback is None:
        app.command("rollback")(rollback_command)  # no `certified` to extend: stand alone
    else:
        group = typer.Typer(
            cls=DefaultCommandGroup,
            help="Where the certified table of a dataset stands "
            "(`signalfactory certified DATASET_URN [--json]`), and rolling it back to an "
            "earlier certified version (`signalfactory certified rollback DATASET_URN --to "
            "VERSION`).",
            add_completion=False,
        )
        group.command(DEFAULT_SUBCOMMAND, help=original.help)(original.callback)
        group.command("rollback")(rollback_command)
        app.add_typer(group, name="certified")
    app.command("maintain")(maintain_command)
    app.command("report")(report_command)
