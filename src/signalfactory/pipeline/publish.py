"""The "write" step: commit the layers, the quarantine table and the certified table.

Nothing here runs unless every chunk finished. A held batch writes no layer: the rows that
would have been certified join the quarantine with ``BATCH_HELD:<signature>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads

from signalfactory.core.faults import crash_point
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import (
    CertificationState,
    CertificationStatus,
    GateResult,
    QuarantineRecord,
    RunRecord,
    Stage,
    Transition,
)
from signalfactory.enforcement.catalog import G3_SCHEMA
from signalfactory.enforcement.checks import REASONS
from signalfactory.enforcement.outcomes import Decision
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.pipeline.chunkflow import STAGE_COLUMN, Staging
from signalfactory.pipeline.paths import DatasetPaths
from signalfactory.production.formats import ROW_COLUMN
from signalfactory.production.lake import (
    CommitResult,
    StagedLayer,
    clear_partition,
    commit_layer,
    replace_parquet,
)


@dataclass(frozen=True, slots=True)
class Published:
    commits: Mapping[str, CommitResult]
    quarantine_table: str | None
    quarantine_path: str | None
    rows_quarantined: int
    rows_certified: int


def quarantine_name(dataset: DatasetSpec, partition: Mapping[str, str], run_id: str) -> str:
    """``quarantine.orders_20260215_run_abc123`` as in the PRD's FR-10 example."""
    part = "_".join(v.replace("-", "") for v in partition.values()) or "all"
    return f"quarantine.{dataset.name}_{part}_{run_id}"


def reason_counts(staged: StagedLayer) -> dict[str, int]:
    """Quarantined rows per reason (a row failing two rules counts for both)."""
    reasons = pl.DataFrame(pads.dataset(staged.files()).to_table(columns=[REASONS]))
    counts = (
        reasons.select(pl.col(REASONS).str.split("; ").explode())
        .group_by(REASONS)
        .len()
        .sort("len", descending=True)
    )
    return {str(k): int(v) for k, v in counts.iter_rows()}


def move_to_quarantine(gold: StagedLayer, quarantine: StagedLayer, reason: str) -> int:
    """A held batch: the rows that would have been certified go to quarantine too."""
    moved = 0
    for i, file in enumerate(gold.files()):
        for j, batch in enumerate(pads.dataset(file).to_batches(batch_size=256_000)):
            frame = pl.DataFrame(pa.Table.from_batches([batch]))
            frame = frame.with_columns(
                [pl.col(c).cast(pl.String) for c in frame.columns if c != ROW_COLUMN]
            ).with_columns(pl.lit(reason).alias(REASONS), pl.lit("gold").alias(STAGE_COLUMN))
            quarantine.write(10_000_000 + i * 1000 + j, frame, suffix="-held")
            moved += frame.height
    return moved


def text_break_renames(decisions: Sequence[Decision]) -> dict[str, str]:
    """``TYPE_MISMATCH:col:T`` → ``SCHEMA_BREAK:col:T→STRING`` for columns that arrived as text.

    The run decided that no value of the column cast, so its rows carry the batch's failure
    signature in quarantine too, exactly as the evidence does.
    """
    renames = {}
    for d in decisions:
        if d.evidence.stage is not Stage.BRONZE or d.evidence.gate != G3_SCHEMA:
            continue
        for sig in d.evidence.failure_signatures:
            if sig.startswith("SCHEMA_BREAK:") and sig.endswith("→STRING"):
                _, column, change = sig.split(":", 2)
                renames[f"TYPE_MISMATCH:{column}:{change.removesuffix('→STRING')}"] = sig
    return renames


def rewrite_reasons(staged: StagedLayer, renames: Mapping[str, str]) -> None:
    for file in staged.files():
        frame = pl.read_parquet(file)
        reasons = pl.col(REASONS)
        for old, new in renames.items():
            reasons = reasons.str.replace_all(old, new, literal=True)
        replace_parquet(frame.with_columns(reasons), Path(file), min_max=staged.min_max)


def _first_failing_stage(decisions: Sequence[Decision]) -> Stage:
    for d in decisions:
        if d.evidence.result is not GateResult.PASS and d.evidence.metrics.get("rows_failed"):
            return d.evidence.stage
    return Stage.BRONZE


def publish(
    store: MetadataStore,
    *,
    run: RunRecord,
    dataset: DatasetSpec,
    policy: PolicyBundle,
    paths: DatasetPaths,
    partition: Mapping[str, str],
    staging: Staging,
    decisions: Sequence[Decision],
    rows_quarantined: int,
    generation: int = 1,
) -> Published:
    """Commit everything a run writes; safe to call again after a crash (exactly-once).

    ``generation`` counts publications of the run: a dead-letter replay publishes it again.

    Every commit carries a Delta application transaction keyed by the run, so a retry after
    a crash between a commit and the store update finds the commit instead of redoing it.
    """
    holding = [d for d in decisions if d.holds]
    metadata = {
        "signalfactory.run_id": run.run_id,
        "signalfactory.pipeline": run.pipeline,
        "signalfactory.partition": json.dumps(dict(partition)),
    }
    merge_schema = policy.schema_.mode != "strict"
    commits: dict[str, CommitResult] = {}
    if holding:
        reason = "BATCH_HELD:" + (holding[0].evidence.failure_signature or "")
        rows_quarantined += move_to_quarantine(staging.gold, staging.quarantine, reason)
    else:
        for layer in ("bronze", "silver", "gold"):
            result = commit_layer(
                getattr(paths, layer),
                getattr(staging, layer),
                partition,
                {**metadata, "signalfactory.layer": layer},
                merge_schema=merge_schema,
                app_id=f"signalfactory:{run.run_id}:{layer}:g{generation}",
            )
            if result:
                commits[layer] = result
        crash_point("after_layer_commits")
    renames = text_break_renames(decisions)
    if renames:
        rewrite_reasons(staging.quarantine, renames)
    table = path = None
    if staging.quarantine.files():
        table = quarantine_name(dataset, partition, run.run_id)
        path = paths.quarantine_table(table)
        result = commit_layer(
            path,
            staging.quarantine,
            {},
            {**metadata, "signalfactory.layer": "quarantine"},
            merge_schema=True,
            app_id=f"signalfactory:{run.run_id}:quarantine:g{generation}",
        )
        recorded = any(q.run_id == run.run_id for q in store.list_quarantine(dataset.urn))
        if result:
            commits["quarantine"] = result
        if result and not recorded:
            store.add_quarantine(
                QuarantineRecord(
                    dataset_urn=dataset.urn,
                    run_id=run.run_id,
                    stage=holding[0].evidence.stage if holding else _first_failing_stage(decisions),
                    table_name=table,
                    path=path,
                    rows=result.rows,
                    batch_level=bool(holding),
                    reasons=reason_counts(staging.quarantine),
                    partition=dict(partition),
                )
            )
    certified_rows = 0
    if not holding:
        # The one atomic commit that advances the certified table.
        result = commit_layer(
            paths.certified,
            staging.gold,
            partition,
            {**metadata, "signalfactory.layer": "certified"},
            merge_schema=merge_schema,
            app_id=f"signalfactory:{run.run_id}:certified:g{generation}",
        )
        if result is None:
            result = clear_partition(
                paths.certified,
                partition,
                {**metadata, "signalfactory.layer": "certified"},
                app_id=f"signalfactory:{run.run_id}:certified:g{generation}",
            )
        crash_point("after_certified_commit")
        if result:
            commits["certified"] = result
            certified_rows = result.rows
    return Published(commits, table, path, rows_quarantined, certified_rows)


def record_certification(
    store: MetadataStore,
    run: RunRecord,
    certified_path: str,
    previous: CertificationState | None,
    status: CertificationStatus,
    version: int | None,
    certified_at: datetime | None,
    *,
    held: bool,
    actor: str,
) -> CertificationState:
    """Record where the certified view stands after ``run``, and the move in the audit trail.

    A held run keeps the previous state's version and time and only records its status.
    """
    if certified_at is not None or previous is None:
        state = CertificationState(
            dataset_urn=run.dataset_urn,
            certification_status=status,
            certified_version=version,
            last_certified_at=certified_at,
            last_run_id=run.run_id,
            path=certified_path,
        )
    else:
        state = replace(previous, certification_status=status, last_run_id=run.run_id)
    store.put_certification(state)
    previous_version = previous.certified_version if previous else None
    store.append_transition(
        Transition(
            subject=run.dataset_urn,
            from_status=str(previous.certification_status) if previous else None,
            to_status=str(status),
            actor=actor,
            reason=f"run {run.run_id}: certified version {version}"
            + (f" held at v{previous_version}" if held else ""),
        )
    )
    return state
