"""``signalfactory incidents`` and ``signalfactory deploy record`` (O6, O8)."""

from __future__ import annotations

import typer

deploy_app = typer.Typer(
    help="Deployment events: candidate causes for what follows.", no_args_is_help=True
)


def register_incidents(app: typer.Typer) -> None:
    """Add ``incidents`` to ``app``."""
    app.add_typer(deploy_app, name="deploy")
