"""``signalfactory lineage ingest|upstream|downstream``: the lineage graph (O7)."""

from __future__ import annotations

import typer

lineage_app = typer.Typer(
    help="OpenLineage ingest and lineage traversal (upstream/downstream, column lineage).",
    no_args_is_help=True,
)
