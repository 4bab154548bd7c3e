"""One write of an observed job: the policy bundle's stage gates, then the commits.

Nothing here re-implements enforcement. The frame goes through the pipeline's own
``ChunkProcessor`` as a single chunk (conform → G3_SCHEMA, contract and DQ rules, PII, the
gold schema check against the certified table), gates are decided by ``gating.decide_gates``
(``outcomes.decide``), and tables are committed with ``publish.publish`` (gold: the layer,
the quarantine and the certified table) or ``lake.commit_layer`` (bronze and silver: the
layer and the quarantine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from signalfactory.core.errors import Terminal
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import GateResult, QuarantineRecord, RunRecord, Stage
from signalfactory.enforcement.outcomes import Decision
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.enforcement.schema import logical_schema
from signalfactory.pipeline.chunkflow import STAGE_COLUMN, ChunkProcessor, Staging
from signalfactory.pipeline.gating import decide_gates, totals
from signalfactory.pipeline.hooks import HookSet
from signalfactory.pipeline.paths import DatasetPaths
from signalfactory.pipeline.publish import (
    Published,
    move_to_quarantine,
    publish,
    quarantine_name,
    reason_counts,
    rewrite_reasons,
    text_break_renames,
)
from signalfactory.pipeline.uniqueness import UniqueTracker
from signalfactory.production.formats import ROW_COLUMN, Chunk
from signalfactory.production.lake import CommitResult, StagedLayer, commit_layer, table_schema

#: The layers a producer may write, in medallion order.
LAYERS = ("bronze", "silver", "gold")
_RANK = {Stage.BRONZE: 0, Stage.SILVER: 1, Stage.GOLD: 2}


@dataclass(frozen=True)
class Target:
    """What every write of one observed run works on, fixed when the run starts."""

    store: MetadataStore
    hooks: HookSet
    run: RunRecord
    dataset: DatasetSpec
    policy: PolicyBundle
    paths: DatasetPaths
    partition: dict[str, str]
    producer: str
    pii_key: bytes
    staging_root: Path


@dataclass(frozen=True)
class Evaluated:
    """The decisions of one write (for the stages it judges) and its staged rows."""

    decisions: list[Decision]
    counts: dict[str, int]
    staging: Staging


def certified_schema(path: str) -> dict[str, str] | None:
    """The certified table's logical schema (as the runner computes it), or None."""
    schema = table_schema(path)
    if schema is None:
        return None
    return logical_schema(pl.DataFrame(schema.empty_table()).schema)


def evaluate(
    target: Target, frame: pl.DataFrame, layer: str, judged_from: int, index: int
) -> Evaluated:
    """Run ``frame`` through the stages up to ``layer``, exactly as a pipeline chunk.

    Stages before ``judged_from`` were judged by an earlier write of the run: their gates are
    evaluated again on this frame but kept only when they do not pass (a new finding about
    the rows being written).
    """
    rank = LAYERS.index(layer)
    staging = Staging.under(target.staging_root / f"write-{index}")
    processor = ChunkProcessor(
        policy=target.policy,
        partition=target.partition,
        silver_steps=(),
        gold_steps=(),
        base_dir=target.staging_root,
        staging=staging,
        certified_schema=certified_schema(target.paths.certified),
        pii_key=target.pii_key,
        in_process=True,
    )
    # A frame of text only arrives like a CSV source: declared types are cast from text.
    typed = any(dtype != pl.String for dtype in frame.schema.values())
    frame = frame.with_columns(pl.int_range(0, pl.len(), dtype=pl.Int64).alias(ROW_COLUMN))
    prepared = processor.prepare(Chunk(index=0, df=frame, typed=typed))
    if rank == 0:
        outcome = prepared.outcome
    else:
        flags = {
            column: UniqueTracker(column).check_keys(values, present)
            for column, (values, present) in prepared.keys.items()
        }
        outcome = processor.finish((prepared, flags), silver_only=rank == 1)
    counts = totals([outcome])
    decisions = decide_gates(
        [outcome],
        counts,
        dataset=target.dataset,
        policy=target.policy,
        run_id=target.run.run_id,
        producer=target.producer,
    )
    kept = [
        d
        for d in decisions
        if _RANK[d.evidence.stage] <= rank
        and (_RANK[d.evidence.stage] >= judged_from or d.evidence.result is not GateResult.PASS)
    ]
    return Evaluated(kept, counts, staging)


def _metadata(target: Target) -> dict[str, str]:
    return {
        "signalfactory.run_id": target.run.run_id,
        "signalfactory.pipeline": target.run.pipeline,
        "signalfactory.partition": json.dumps(target.partition),
    }


def _commit_quarantine(
    target: Target, staging: Staging, decisions: list[Decision], generation: int
) -> tuple[str | None, str | None, CommitResult | None]:
    """The quarantine commit of a bronze or silver write (the part of ``publish`` it needs)."""
    if not staging.quarantine.files():
        return None, None, None
    table = quarantine_name(target.dataset, target.partition, target.run.run_id)
    path = target.paths.quarantine_table(table)
    result = commit_layer(
        path,
        staging.quarantine,
        {},
        {**_metadata(target), "signalfactory.layer": "quarantine"},
        merge_schema=True,
        app_id=f"signalfactory:{target.run.run_id}:quarantine:g{generation}",
    )
    if result is None:
        return table, path, None
    recorded = any(
        q.run_id == target.run.run_id for q in target.store.list_quarantine(target.dataset.urn)
    )
    if not recorded:
        holding = [d for d in decisions if d.holds]
        failing = [d for d in decisions if d.evidence.result is not GateResult.PASS]
        stage = (holding or failing or decisions)[0].evidence.stage
        target.store.add_quarantine(
            QuarantineRecord(
                dataset_urn=target.dataset.urn,
                run_id=target.run.run_id,
                stage=stage,
                table_name=table,
                path=path,
                rows=result.rows,
                batch_level=bool(holding),
                reasons=reason_counts(staging.quarantine),
                partition=dict(target.partition),
            )
        )
    return table, path, result


def _carry_quarantine(target: Target, staging: Staging) -> None:
    """Keep what earlier writes of the run quarantined: the run's quarantine table is
    committed as a whole (overwrite), so its rows so far are staged again with the new ones."""
    path = target.paths.quarantine_table(
        quarantine_name(target.dataset, target.partition, target.run.run_id)
    )
    if DeltaTable.is_deltatable(path):
        earlier = pl.DataFrame(DeltaTable(path).to_pyarrow_table())
        staging.quarantine.write(0, earlier, suffix="-carried")


def commit(
    target: Target, layer: str, ev: Evaluated, prior_holds: list[Decision], generation: int
) -> Published:
    """Commit one write. A hold (now or by an earlier write of the run) commits no layer:
    the rows join the quarantine with ``BATCH_HELD:<signature>``, as in a pipeline run."""
    decisions = [*prior_holds, *ev.decisions]
    held = any(d.holds for d in decisions)  # a hold moves the layer's rows to quarantine
    if generation > 1 and (held or ev.staging.quarantine.files()):
        _carry_quarantine(target, ev.staging)
    if layer == "gold":
        c = ev.counts
        if (
            c["rows_read"] + c["rows_added"]
            != c["rows_gold"] + c["rows_quarantined"] + c["rows_dropped"]
        ):  # never publish what does not add up (B11), as the runner
            raise Terminal(
                f"reconciliation failed before publishing: {c['rows_read']:,} rows read != "
                f"{c['rows_gold']:,} to certify + {c['rows_quarantined']:,} quarantined; "
                "nothing was published."
            )
        # publish() commits every staged layer: stage only gold (bronze/silver stay empty).
        empty = StagedLayer(ev.staging.bronze.folder.parent / "unused")
        return publish(
            target.store,
            run=target.run,
            dataset=target.dataset,
            policy=target.policy,
            paths=target.paths,
            partition=target.partition,
            staging=Staging(empty, empty, ev.staging.gold, ev.staging.quarantine),
            decisions=decisions,
            rows_quarantined=ev.counts["rows_quarantined"],
            generation=generation,
        )
    holding = [d for d in decisions if d.holds]
    staged: StagedLayer = getattr(ev.staging, layer)
    rows_quarantined = ev.counts["rows_quarantined"]
    commits = {}
    if holding:
        reason = "BATCH_HELD:" + (holding[0].evidence.failure_signature or "")
        rows_quarantined += move_to_quarantine(staged, ev.staging.quarantine, reason)
        for moved in ev.staging.quarantine.folder.glob("*-held.parquet"):  # labelled "gold"
            frame = pl.read_parquet(moved).with_columns(pl.lit(layer).alias(STAGE_COLUMN))
            frame.write_parquet(moved)
    else:
        result = commit_layer(
            getattr(target.paths, layer),
            staged,
            target.partition,
            {**_metadata(target), "signalfactory.layer": layer},
            merge_schema=target.policy.schema_.mode != "strict",
            app_id=f"signalfactory:{target.run.run_id}:{layer}:g{generation}",
        )
        if result:
            commits[layer] = result
    renames = text_break_renames(decisions)
    if renames:
        rewrite_reasons(ev.staging.quarantine, renames)
    table, path, quarantined = _commit_quarantine(target, ev.staging, decisions, generation)
    if quarantined:
        commits["quarantine"] = quarantined
    return Published(commits, table, path, rows_quarantined, 0)
