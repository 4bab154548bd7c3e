"""``signalfactory lineage ingest|upstream|downstream|columns``: the lineage graph (O7).

Exit codes: ``ingest`` 0 when every line was a valid RunEvent, 1 when some lines were rejected
(the good ones are kept), 2 when the file cannot be read; ``upstream``/``downstream``/
``columns`` 2 for an unknown node (the message names close matches).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.table import Table

lineage_app = typer.Typer(
    help="OpenLineage ingest and lineage traversal (upstream/downstream, column lineage).",
    no_args_is_help=True,
)

NodeArg = Annotated[
    str, typer.Argument(help="one of our dataset URNs (ds://…) or dataset:NAMESPACE:NAME")
]
DepthOpt = Annotated[
    int | None, typer.Option("--depth", min=1, help="hops at most (default: unlimited)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


@lineage_app.command("ingest")
def lineage_ingest(
    file: Annotated[Path, typer.Argument(help="NDJSON file: one OpenLineage RunEvent a line")],
    as_json: JsonOpt = False,
) -> None:
    """Ingest OpenLineage RunEvents (Airflow, Spark, dbt) into the lineage graph."""
    from signalfactory.consumption.cli import EXIT_FAILED, _dump, _factory, _guard, console
    from signalfactory.core.errors import ConfigError
    from signalfactory.knowledge.lineage import ingest_openlineage

    def opened() -> TextIO:
        try:
            # Streamed line by line; undecodable bytes make that line invalid JSON (reported).
            return file.open(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(
                f"cannot read OpenLineage file {str(file)!r}: {exc.strerror or exc}. Give a "
                "readable UTF-8 NDJSON file with one RunEvent per line"
            ) from None

    handle = _guard(opened)
    with handle, _factory() as sf:
        namespace = sf.settings.openlineage_namespace
        report = _guard(
            lambda: ingest_openlineage(sf.store, handle, str(file), our_namespace=namespace)
        )
    if as_json:
        _dump(report.to_dict())
    else:
        console.print(
            f"{report.events} events from {file} ({report.new_events} new, "
            f"{report.duplicates} already ingested), {report.lifecycle_events} lifecycle "
            f"events, {report.events_per_s:,.0f} events/s",
            highlight=False,
        )
        if report.rejected:
            console.print(f"[bold red]{report.rejected} lines rejected:[/]", highlight=False)
            for error in report.errors[:20]:
                console.print(f"  {error}", highlight=False, soft_wrap=True)
            if len(report.errors) > 20:
                console.print(f"  … and {report.rejected - 20} more (--json lists them)")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _walk(node: str, depth: int | None, as_json: bool, up: bool) -> None:
    from signalfactory.consumption.cli import _dump, _factory, _guard, console
    from signalfactory.knowledge.lineage import downstream, resolve_node, upstream

    with _factory() as sf:
        namespace = sf.settings.openlineage_namespace
        start = _guard(lambda: resolve_node(sf.store, node, namespace))
        walk = upstream if up else downstream
        hops = _guard(lambda: walk(sf.store, start, depth, namespace))
    direction = "upstream" if up else "downstream"
    if as_json:
        _dump(
            {
                "node": start,
                "direction": direction,
                "depth": depth,
                "hops": [h.to_dict() for h in hops],
            }
        )
        return
    if not hops:
        console.print(f"no {direction} datasets recorded for {start}", highlight=False)
        return
    table = Table(title=f"{direction.capitalize()} of {start}", title_justify="left")
    for column in ("depth", "dataset", "job", "via"):
        table.add_column(column, overflow="fold")
    for h in hops:
        table.add_row(str(h.depth), h.node_id, ", ".join(h.jobs), ", ".join(h.via))
    console.print(table)


@lineage_app.command("upstream")
def lineage_upstream(node: NodeArg, depth: DepthOpt = None, as_json: JsonOpt = False) -> None:
    """Datasets NODE is derived from, nearest first, with the job between."""
    _walk(node, depth, as_json, up=True)


@lineage_app.command("downstream")
def lineage_downstream(node: NodeArg, depth: DepthOpt = None, as_json: JsonOpt = False) -> None:
    """Datasets derived from NODE (its blast radius), nearest first."""
    _walk(node, depth, as_json, up=False)


@lineage_app.command("columns")
def lineage_columns(node: NodeArg, as_json: JsonOpt = False) -> None:
    """Column lineage of NODE: its fields and the input fields they come from (and feed)."""
    from signalfactory.consumption.cli import _dump, _factory, _guard, console
    from signalfactory.knowledge.lineage import column_lineage, resolve_node

    with _factory() as sf:
        namespace = sf.settings.openlineage_namespace
        start = _guard(lambda: resolve_node(sf.store, node, namespace))
        edges = _guard(lambda: column_lineage(sf.store, start, namespace))
    if as_json:
        _dump({"node": start, "columns": [e.to_dict() for e in edges]})
        return
    if not edges:
        console.print(f"no column lineage recorded for {start}", highlight=False)
        return
    table = Table(title=f"Column lineage of {start}", title_justify="left")
    for column in ("dataset", "field", "input dataset", "input field", "transformation"):
        table.add_column(column, overflow="fold")
    for e in edges:
        table.add_row(e.dataset_id, e.field, e.input_dataset_id, e.input_field, e.transformation)
    console.print(table)
