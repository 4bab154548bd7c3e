"""``signalfactory dlq list|show|replay|discard``: the dead-letter table (B8)."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.table import Table

from signalfactory.core.records import DeadLetterStatus

dlq_app = typer.Typer(
    help="Chunks that kept failing: inspect, replay or discard them.", no_args_is_help=True
)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:
        return "cli"


@dlq_app.command("list")
def dlq_list(
    run: Annotated[str | None, typer.Option("--run", help="run id")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset URN")] = None,
    status: Annotated[str | None, typer.Option("--status", help="OPEN|REPLAYED|DISCARDED")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List dead letters."""
    from signalfactory.consumption.cli import _dump, _factory, _guard, console
    from signalfactory.core.errors import ConfigError

    def parsed() -> DeadLetterStatus | None:
        if status is None:
            return None
        try:
            return DeadLetterStatus(status.upper())
        except ValueError:
            raise ConfigError(
                f"--status {status!r} is not one of OPEN, REPLAYED, DISCARDED"
            ) from None

    wanted = _guard(parsed)
    with _factory() as sf:
        found = sf.store.list_dead_letters(run_id=run, dataset_urn=dataset, status=wanted)
        if as_json:
            _dump([d.to_dict() for d in found])
            return
        table = Table(title="Dead letters", title_justify="left")
        for column in ("id", "run", "chunk", "status", "attempts", "error", "created"):
            table.add_column(column, no_wrap=column == "id")
        for d in found:
            table.add_row(
                d.dead_letter_id,
                d.run_id,
                str(d.chunk_index),
                str(d.status),
                str(d.attempts),
                f"{d.error_type}: {d.error}"[:80],
                d.to_dict()["created_at"],
            )
        console.print(table)


@dlq_app.command("show")
def dlq_show(dead_letter_id: str) -> None:
    """Show one dead letter with its payload sample (PII redacted) as JSON."""
    from signalfactory.consumption.cli import _dump, _factory, _guard

    with _factory() as sf:
        letter = _guard(lambda: sf._dead_letter(dead_letter_id))
        _dump(letter.to_dict())


@dlq_app.command("replay")
def dlq_replay(
    dead_letter_id: str, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Run the dead-lettered chunk again and re-publish its partition."""
    from signalfactory.consumption.cli import _dump, _factory, _guard, console, run_exit_code

    with _factory() as sf:
        outcome = _guard(lambda: sf.replay_dead_letter(dead_letter_id, actor=_actor()))
        if as_json:
            _dump(outcome.to_dict())
        else:
            from signalfactory.consumption.report import render_run

            render_run(console, outcome.run, outcome.evidence, outcome.alerts)
        raise typer.Exit(run_exit_code(outcome))


@dlq_app.command("discard")
def dlq_discard(dead_letter_id: str) -> None:
    """Mark a dead letter as discarded (recorded in the audit trail)."""
    from signalfactory.consumption.cli import _factory, _guard, console

    with _factory() as sf:
        letter = _guard(lambda: sf.discard_dead_letter(dead_letter_id, actor=_actor()))
        console.print(f"dead letter {letter.dead_letter_id} is now {letter.status}")
