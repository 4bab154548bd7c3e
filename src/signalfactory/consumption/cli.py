"""The ``signalfactory`` command line (Typer + Rich).

Exit codes: 0 success (certified, or gates only warned); 3 run completed but certification
was held (data quarantined); 1 run failed; 2 invalid input, configuration or usage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import structlog
import typer
from rich.console import Console

from signalfactory.api import SignalFactory
from signalfactory.core.errors import ConfigError, NotFoundError, SignalFactoryError
from signalfactory.core.records import CertificationStatus, RunProgress, RunRecord, RunStatus
from signalfactory.pipeline.runner import RunOutcome

app = typer.Typer(
    name="signalfactory",
    help="Run data pipelines and prove, at every stage, that the data they publish is good.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
quarantine_app = typer.Typer(help="Quarantined data.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")

# Piped output (CI logs, `make demo | tee`) gets room for failure signatures.
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_HELD = 0, 1, 2, 3


def _configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            numeric if isinstance(numeric, int) else logging.WARNING
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
    )


def _factory(progress_listener: Callable[[RunProgress], None] | None = None) -> SignalFactory:
    sf = SignalFactory(progress_listener=progress_listener)
    _configure_logging(sf.settings.log_level)
    return sf


def _guard(fn: Callable[[], T]) -> T:
    """Turn our errors into a one-paragraph message and the documented exit code."""
    try:
        return fn()
    except SignalFactoryError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _dump(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def run_exit_code(outcome: RunOutcome) -> int:
    if outcome.run.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        return EXIT_FAILED
    if outcome.run.certification_status is CertificationStatus.HELD_AT_PREVIOUS:
        return EXIT_HELD
    return EXIT_OK


@app.command()
def register(
    dataset_yaml: Annotated[
        Path, typer.Argument(help="dataset.yaml (URN, owner, tier, storage, SLOs)")
    ],
    policy: Annotated[Path, typer.Option("--policy", help="policy_bundle.yaml")],
    as_json: JsonOpt = False,
) -> None:
    """Register a dataset and approve its policy bundle (bootstrap)."""
    with _factory() as sf:
        record, state = _guard(lambda: sf.register(dataset_yaml, policy))
        if as_json:
            _dump({"dataset": record.to_dict(), "certification": state.to_dict()})
        else:
            console.print(
                f"registered [bold]{record.urn}[/] (owner {record.owner_team}, "
                f"tier {record.tier}); certified table: {state.path}"
            )


def _parse_partitions(values: list[str]) -> dict[str, str]:
    partition: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key or not val:
            raise ConfigError(
                f"--partition {value!r} must look like KEY=VALUE, e.g. --partition dt=2026-02-15"
            )
        partition[key.strip()] = val.strip()
    return partition


@app.command()
def run(
    pipeline_yaml: Annotated[Path, typer.Argument(help="pipeline file")],
    partition: Annotated[list[str] | None, typer.Option("--partition", help="KEY=VALUE")] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="sequential | threads | processes | dask | ray")
    ] = None,
    engine_address: Annotated[
        str | None,
        typer.Option("--engine-address", help="an existing Dask scheduler or Ray cluster"),
    ] = None,
    chunk_size: Annotated[int | None, typer.Option("--chunk-size", help="rows per chunk")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline for one partition: bronze → silver → gold, gates, certification."""
    view = None
    if not as_json and console.is_terminal:  # live chunks, rows, %, rows/s, ETA, RSS, CPU
        from signalfactory.consumption.progress_view import RunProgressView

        view = RunProgressView(console)
    with _factory(view.update if view is not None else None) as sf:
        parts = _guard(lambda: _parse_partitions(partition or []))
        with view if view is not None else contextlib.nullcontext():
            outcome = _guard(
                lambda: sf.run(
                    pipeline_yaml,
                    parts,
                    engine=engine,
                    chunk_size=chunk_size,
                    engine_address=engine_address,
                )
            )
        if as_json:
            _dump(outcome.to_dict())
        else:
            from signalfactory.consumption.report import render_run

            render_run(console, outcome.run, outcome.evidence, outcome.alerts, outcome.reused)
        code = run_exit_code(outcome)
        if code == EXIT_FAILED and not as_json:
            err.print(f"[bold red]error:[/] {outcome.run.error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code)


@app.command()
def backfill(
    pipeline_yaml: Annotated[Path, typer.Argument(help="pipeline file")],
    date_range: Annotated[
        Path, typer.Option("--range", help="date-range manifest: partition_key, start, end")
    ],
    engine: Annotated[str | None, typer.Option("--engine")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every partition of a date-range manifest, oldest first (idempotent per partition)."""
    with _factory() as sf:
        outcomes = _guard(lambda: sf.backfill(pipeline_yaml, date_range, engine=engine))
        if as_json:
            _dump([o.to_dict() for o in outcomes])
        else:
            from signalfactory.consumption.report import runs_table

            console.print(runs_table([o.run for o in outcomes]))
        codes = {run_exit_code(o) for o in outcomes}
        raise typer.Exit(next((c for c in (EXIT_FAILED, EXIT_HELD) if c in codes), EXIT_OK))


@app.command()
def resume(run_id: str, as_json: JsonOpt = False) -> None:
    """Resume a crashed or failed run from its last checkpoint (same result, no duplicates)."""
    with _factory() as sf:
        outcome = _guard(lambda: sf.resume(run_id))
        if as_json:
            _dump(outcome.to_dict())
        else:
            from signalfactory.consumption.report import render_run

            render_run(console, outcome.run, outcome.evidence, outcome.alerts, outcome.reused)
        raise typer.Exit(run_exit_code(outcome))


WATCH_EVERY_S = 0.5
_ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING)


def _status_doc(sf: SignalFactory, record: RunRecord) -> dict[str, Any]:
    """``status --json``: the run, its evidence and its live progress (``None`` if none)."""
    progress = sf.store.get_progress(record.run_id)
    return {
        **record.to_dict(),
        "evidence": [e.to_dict() for e in sf.store.list_evidence(run_id=record.run_id)],
        "progress": progress.to_dict() if progress is not None else None,
    }


def _shown_progress(record: RunRecord, progress: RunProgress) -> RunProgress:
    """The progress of an ended run says how it ended, whatever phase was stored last."""
    if record.status in _ACTIVE or progress.phase == "done":
        return progress
    from dataclasses import replace

    ended = "done" if record.status is RunStatus.SUCCEEDED else str(record.status).lower()
    return replace(progress, phase=ended)


def _watch(sf: SignalFactory, record: RunRecord, as_json: bool) -> RunRecord:
    """Refresh every 0.5 s until the run ends: a live table, or one JSON line per refresh."""
    from rich.console import Group
    from rich.live import Live

    from signalfactory.consumption.progress_view import age_s, progress_table

    def renderable(current: RunRecord) -> Group:
        progress = sf.store.get_progress(current.run_id)
        head = f"run [cyan]{current.run_id}[/] [bold]{current.status}[/]"
        if progress is None:
            return Group(head, "[dim]no progress recorded yet[/]")
        if age_s(progress) > 10 and current.status in _ACTIVE:
            head += f"  [yellow]no update for {age_s(progress):.0f} s: is the run alive?[/]"
        return Group(head, progress_table(_shown_progress(current, progress)))

    live = None if as_json else Live(renderable(record), console=console, transient=True)
    try:
        with live if live is not None else contextlib.nullcontext():
            while True:
                if as_json:
                    sys.stdout.write(json.dumps(_status_doc(sf, record), default=str) + "\n")
                    sys.stdout.flush()
                elif live is not None:
                    live.update(renderable(record))
                if record.status not in _ACTIVE:
                    return record
                time.sleep(WATCH_EVERY_S)
                record = sf.store.get_run(record.run_id) or record
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def status(
    run_id: str,
    as_json: JsonOpt = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Refresh every 0.5 s until the run ends (with --json: one JSON line each time).",
        ),
    ] = False,
) -> None:
    """Show one run: status, rows, stages, evidence and live progress."""
    with _factory() as sf:
        record = sf.store.get_run(run_id)
        if record is None:
            _guard(
                lambda: (_ for _ in ()).throw(
                    NotFoundError(
                        f"run {run_id} does not exist in {sf.settings.store_url.split('@')[-1]}. "
                        "List runs with `signalfactory runs`."
                    )
                )
            )
            return
        if watch:
            record = _watch(sf, record, as_json)
            if as_json:
                return  # the last line printed was the ended run
        if as_json:
            _dump(_status_doc(sf, record))
        else:
            from signalfactory.consumption.progress_view import summary_line
            from signalfactory.consumption.report import render_run

            render_run(console, record, sf.store.list_evidence(run_id=run_id))
            progress = sf.store.get_progress(run_id)
            if progress is not None:
                active = record.status in _ACTIVE
                line = summary_line(_shown_progress(record, progress), show_age=active)
                console.print(f"  progress: {line}", highlight=False)


@app.command()
def runs(
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset URN")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    with _factory() as sf:
        found = sf.store.list_runs(dataset_urn=dataset, limit=limit)
        if as_json:
            _dump([r.to_dict() for r in found])
        else:
            from signalfactory.consumption.report import runs_table

            console.print(runs_table(found))


@app.command()
def evidence(
    run: Annotated[str | None, typer.Option("--run", help="run id")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset URN")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List evidence records (immutable PASS/FAIL/WARN per gate)."""
    with _factory() as sf:
        found = sf.store.list_evidence(run_id=run, dataset_urn=dataset)
        if as_json:
            _dump([e.to_dict() for e in found])
        else:
            from signalfactory.consumption.report import evidence_table

            console.print(evidence_table(found, title="Evidence"))


@app.command()
def events(
    run: Annotated[str | None, typer.Option("--run", help="run id")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset URN")] = None,
    event_type: Annotated[
        str | None,
        typer.Option(
            "--type", help="JobRunStarted | JobRunCompleted | JobRunFailed | DatasetWriteCommitted"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List lifecycle events: JobRunStarted/Completed/Failed, DatasetWriteCommitted."""
    with _factory() as sf:
        found = sf.store.list_events(run_id=run, dataset_urn=dataset, event_type=event_type)
        if as_json:
            _dump([e.to_dict() for e in found])
            return
        from rich.table import Table

        table = Table(title="Lifecycle events", title_justify="left")
        for column in ("time", "event", "run", "details"):
            table.add_column(column)
        for e in found:
            details = ", ".join(
                f"{k}={v}"
                for k, v in e.payload.items()
                if k
                in (
                    "layer",
                    "commit_version",
                    "rows_written",
                    "files_added",
                    "rows_read",
                    "duration",
                    "failure_reason",
                    "partition_key",
                    "producer_urn",
                )
            )
            table.add_row(e.to_dict()["timestamp"], str(e.event_type), e.run_id, details)
        console.print(table)


@app.command()
def certified(dataset_urn: str, as_json: JsonOpt = False) -> None:
    """Where the certified table of a dataset stands (a path any Delta reader opens)."""
    with _factory() as sf:
        state = _guard(lambda: sf.certified(dataset_urn))
        if as_json:
            _dump(state.to_dict())
        else:
            from signalfactory.consumption.report import certification_table

            console.print(certification_table([state]))


@quarantine_app.command("list")
def quarantine_list(
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset URN")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List quarantine tables with row counts and reasons."""
    with _factory() as sf:
        found = sf.store.list_quarantine(dataset_urn=dataset)
        if as_json:
            _dump([q.to_dict() for q in found])
            return
        from rich.table import Table

        table = Table(title="Quarantine", title_justify="left")
        for column in ("table", "run", "stage", "rows", "batch", "top reasons", "path"):
            table.add_column(column)
        for q in found:
            top = sorted(q.reasons.items(), key=lambda kv: -kv[1])[:3]
            table.add_row(
                q.table_name,
                q.run_id,
                str(q.stage),
                f"{q.rows:,}",
                "yes" if q.batch_level else "no",
                "; ".join(f"{k} ×{v}" for k, v in top),
                q.path,
            )
        console.print(table)


@app.command()
def demo(
    directory: Annotated[Path | None, typer.Option("--dir", help="where to write the demo")] = None,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="steel-thread: two weeks with signals, incidents and explanations; "
            "gates: three days through the gates in detail",
        ),
    ] = "steel-thread",
) -> None:
    """Generate orders data and run the steel thread (or the gates scenario) end to end."""
    from signalfactory.consumption.demo import run_gates_demo
    from signalfactory.consumption.demo_thread import run_steel_thread

    scenarios = {"steel-thread": run_steel_thread, "gates": run_gates_demo}
    if scenario not in scenarios:
        err.print(
            f"[bold red]error:[/] --scenario {scenario!r} is unknown; use one of "
            f"{', '.join(scenarios)}",
            highlight=False,
        )
        raise typer.Exit(EXIT_USAGE)
    _configure_logging("ERROR")
    code = _guard(lambda: scenarios[scenario](directory, console))
    raise typer.Exit(code)


from signalfactory.consumption.cli_ops import register_ops  # noqa: E402

register_ops(app)  # certified rollback, maintain, report


from signalfactory.consumption.cli_dlq import dlq_app  # noqa: E402

app.add_typer(dlq_app, name="dlq")

from signalfactory.consumption.cli_incidents import register_incidents  # noqa: E402
from signalfactory.consumption.cli_lineage import lineage_app  # noqa: E402
from signalfactory.consumption.cli_profile import register_profile  # noqa: E402
from signalfactory.consumption.cli_signals import register_signals  # noqa: E402

app.add_typer(lineage_app, name="lineage")
register_incidents(app)  # incidents, deploy record
register_signals(app)  # signals evaluate|list, watch, explain
register_profile(app)  # profile


def main() -> None:
    app()
