"""``signalfactory profile DATASET_URN``: profile a dataset into ``baseline.json`` (E2, FR-8).

Profiles the dataset's certified table (or ``--from-path``: a Delta table folder, a Parquet,
CSV or NDJSON file, e.g. raw files at bootstrap), stores the baseline as the next version in
the metadata store and writes ``baseline.json`` (default
``<home>/baselines/<dataset name>/baseline.json``). ``register_profile(app)`` adds the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from signalfactory.enforcement.profile import ENUM_MAX_DISTINCT, Baseline, ColumnProfile

_SHOWN_VALUES = 6


def _describe(col: ColumnProfile) -> str:
    if col.numeric is not None:
        n = col.numeric
        return f"min {n.min:g} · p50 {n.p50:g} · max {n.max:g} · mean {n.mean:g} ± {n.std:g}"
    if col.enum_values is not None:
        shown = ", ".join(col.enum_values[:_SHOWN_VALUES])
        more = len(col.enum_values) - _SHOWN_VALUES
        return f"values: {shown}" + (f" (+{more})" if more > 0 else "")
    return ""


def _summary(baseline: Baseline, out: Path, version: int) -> None:
    from signalfactory.consumption.cli import console

    console.print(
        f"[bold]{baseline.dataset_urn}[/] profiled from {baseline.source}: "
        f"{baseline.row_count} rows in {len(baseline.partitions) or 'no'} partition(s), "
        f"schema {baseline.schema_fingerprint}; baseline v{version} written to {out}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title="Columns", title_justify="left")
    for column in ("column", "type", "null rate", "distinct", "profile"):
        table.add_column(column, no_wrap=column != "profile")
    for name, col in baseline.columns.items():
        table.add_row(
            name, col.type, f"{col.null_rate:.2%}", str(col.distinct_count), _describe(col)
        )
    console.print(table)


def profile_command(
    dataset_urn: Annotated[str, typer.Argument(help="the dataset's URN, e.g. ds://curated/x")],
    from_path: Annotated[
        Path | None,
        typer.Option(
            "--from-path", help="profile this Delta table folder or Parquet/CSV/NDJSON file"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="where to write baseline.json"),
    ] = None,
    enum_max: Annotated[
        int,
        typer.Option("--enum-max", help="most distinct values a text column has to be an enum"),
    ] = ENUM_MAX_DISTINCT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Profile a dataset into baseline.json: row counts, null rates, distributions, enums."""
    from signalfactory.consumption.cli import _dump, _factory, _guard
    from signalfactory.core.errors import ConfigError, NotFoundError
    from signalfactory.enforcement.profile import profile_table
    from signalfactory.processing.baseline_hook import baseline_file, store_baseline

    with _factory() as sf:

        def source() -> str:
            if sf.store.get_dataset(dataset_urn) is None:
                raise NotFoundError(
                    f"dataset {dataset_urn} is not registered in {sf.store.display_url}; "
                    "register it first with `signalfactory register dataset.yaml --policy "
                    "policy_bundle.yaml`"
                )
            if from_path is not None:
                return str(from_path)
            state = sf.store.get_certification(dataset_urn)
            if state is None or not Path(state.path).exists():
                where = state.path if state is not None else "(none)"
                raise NotFoundError(
                    f"dataset {dataset_urn} has no certified table yet (at {where}); run its "
                    "pipeline first (`signalfactory run pipeline.yaml`), or profile files "
                    "with --from-path PATH"
                )
            return state.path

        path = _guard(source)
        baseline = _guard(
            lambda: profile_table(path, dataset_urn=dataset_urn, enum_max_distinct=enum_max)
        )
        target = out or baseline_file(sf.settings.home / "baselines", dataset_urn)

        def write() -> None:
            try:
                baseline.write(target)
            except OSError as exc:
                raise ConfigError(
                    f"cannot write the baseline to {target}: {exc.strerror or exc}; pass a "
                    "writable file with --out FILE"
                ) from None

        _guard(write)
        stored = _guard(lambda: store_baseline(sf.store, baseline, dataset_urn))
        if as_json:
            _dump({"path": str(target), "version": stored.version, "baseline": stored.document})
            return
        _summary(baseline, target, stored.version)


def register_profile(app: typer.Typer) -> None:
    """Add ``signalfactory profile`` to ``app``."""
    app.command("profile")(profile_command)
