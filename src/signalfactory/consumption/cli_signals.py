"""``signalfactory signals evaluate``, ``watch``, ``profile`` and ``explain`` (E2, O2-O5, O8)."""

from __future__ import annotations

import typer

signals_app = typer.Typer(
    help="Health signals: freshness, volume, drift, compliance.", no_args_is_help=True
)


def register_signals(app: typer.Typer) -> None:
    """Add ``signals``, ``watch``, ``profile`` and ``explain`` to ``app``."""
    app.add_typer(signals_app, name="signals")
