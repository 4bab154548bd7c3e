"""Stage + process: every chunk of a run through its engine (B4, B5, B7, B8, B9, B14).

``ChunkStreamer.stream`` plans the source (``chunk_refs.plan_chunks``: descriptors workers
read themselves, or the driver's ``read_chunks`` for formats that cannot be cut), skips the
chunks already checkpointed, maps the ``ChunkProcessor`` over the rest on the engine with
retries, runs the ordered duplicate check between its two phases, fits detect steps on the
whole input first, checkpoints each finished chunk, records dead letters and keeps progress
and the time/memory watchdog up to date. The runner calls it and publishes what it returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import structlog

from signalfactory.core.errors import InputDataError, Terminal
from signalfactory.core.faults import crash_point
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import (
    Checkpoint,
    DeadLetter,
    RunRecord,
    Transition,
    new_id,
)
from signalfactory.enforcement.pii import PII_PATTERNS
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.enforcement.schema import logical_schema, reader_types
from signalfactory.pipeline.chunkflow import (
    ChunkOutcome,
    ChunkProcessor,
    Staging,
    discard_unfinished,
)
from signalfactory.pipeline.limits import Watchdog
from signalfactory.pipeline.paths import DatasetPaths
from signalfactory.pipeline.progress import Listener, ProgressTracker
from signalfactory.pipeline.retrying import DeadLettered, ReadFailed, Retried, RetryPolicy
from signalfactory.pipeline.source_plan import SourcePlan
from signalfactory.pipeline.uniqueness import KeyStore, UniqueTracker
from signalfactory.production.chunk_refs import ChunkRef, CsvChunkRef
from signalfactory.production.detect import fit_detectors
from signalfactory.production.engines import EngineCache, create_engine
from signalfactory.production.formats import Chunk, read_chunks
from signalfactory.production.lake import table_schema
from signalfactory.production.spec import PipelineSpec
from signalfactory.production.steps import compile_steps

log = structlog.get_logger("signalfactory.run")
ACTOR = "signalfactory.runner"


@dataclass(frozen=True)
class RunContext:
    """Everything one run works on, fixed at plan time."""

    run: RunRecord
    spec: PipelineSpec
    dataset: DatasetSpec
    policy: PolicyBundle
    paths: DatasetPaths
    partition: dict[str, str]
    files: list[Path]
    producer: str
    pii_key: bytes
    staging_dir: Path
    #: The chunk plan, begun while the runner digested the input (None: plan in the loop).
    plan: SourcePlan | None = None


def scrub(message: str) -> str:
    """Errors may quote data (polars echoes values a cast failed on): hide PII-shaped text."""
    for name, regex in PII_PATTERNS.items():
        message = re.sub(regex, f"<{name}>", message)
    return message


def certified_schema(schema: pa.Schema | None) -> dict[str, str] | None:
    if schema is None:
        return None
    return logical_schema(pl.DataFrame(schema.empty_table()).schema)


class ChunkStreamer:
    """The chunk loop of one runner: its store, engine cache and progress listener."""

    def __init__(
        self,
        store: MetadataStore,
        engines: EngineCache | None = None,
        progress_listener: Listener | None = None,
    ) -> None:
        self.store = store
        self.engines = engines
        self.progress_listener = progress_listener

    def dead_letter(self, ctx: RunContext, dead: DeadLettered) -> None:
        """Record a chunk that kept failing, with its audit-trail transition."""
        letter = DeadLetter(
            dead_letter_id=new_id("dlq"),
            run_id=ctx.run.run_id,
            dataset_urn=ctx.dataset.urn,
            chunk_index=dead.index,
            correlation_id=f"{ctx.run.run_id}:chunk-{dead.index}",
            error_type=dead.error_type,
            error=scrub(dead.error),
            attempts=dead.attempts,
            payload_sample={"rows": dead.rows, "sample": dead.sample},
        )
        self.store.add_dead_letter(letter)
        self.store.append_transition(
            Transition(
                subject=letter.dead_letter_id,
                from_status=None,
                to_status="OPEN",
                actor=ACTOR,
                reason=f"chunk {dead.index} of run {ctx.run.run_id} failed {dead.attempts} "
                f"time(s): {dead.error_type}",
            )
        )
        log.warning(
            "chunk_dead_lettered",
            run_id=ctx.run.run_id,
            chunk=dead.index,
            error_type=dead.error_type,
            attempts=dead.attempts,
        )

    def stream(
        self, ctx: RunContext, staging: Staging, watchdog: Watchdog
    ) -> tuple[list[ChunkOutcome], list[DeadLettered]]:
        """Process every chunk not yet checkpointed; return all chunks' outcomes in order."""
        spec = ctx.spec
        done = {
            c.chunk_index: ChunkOutcome.from_json(c.payload)
            for c in self.store.list_checkpoints(ctx.run.run_id)
        }
        discard_unfinished(ctx.staging_dir, set(done))
        if self.engines is not None:
            engine = self.engines.get(spec.engine, spec.max_workers, spec.engine_address)
        else:
            engine = create_engine(spec.engine, spec.max_workers, spec.engine_address)
        processor = ChunkProcessor(
            policy=ctx.policy,
            partition=ctx.partition,
            silver_steps=spec.steps.silver,
            gold_steps=spec.steps.gold,
            base_dir=spec.base_dir,
            staging=staging,
            certified_schema=certified_schema(table_schema(ctx.paths.certified)),
            pii_key=ctx.pii_key,
            in_process=engine.in_process,
            share_bronze=True,
        )
        keys = KeyStore(ctx.staging_dir / "keys")
        trackers = {c: UniqueTracker(c) for c in processor.unique_columns}
        for index in sorted(done):
            for column, tracker in trackers.items():
                tracker.seed(keys.load(column, index))

        def flagged(prepared: Iterator[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
            # The ordered step between the two phases: engine.map yields in chunk order.
            for item in prepared:
                if isinstance(item, DeadLettered | ReadFailed):
                    yield item, {}
                    continue
                flags = {}
                for column, (values, present) in item.keys.items():
                    flags[column] = trackers[column].check_keys(values, present)
                    keys.save(column, item.outcome.index, values[present])
                yield item, flags

        progress = ProgressTracker(
            self.store,
            ctx.run.run_id,
            ctx.files,
            spec.source.format,
            spec.chunk_size,
            listener=self.progress_listener,
            key=spec.source.key,
        )
        progress.start(len(done), sum(o.rows_read for o in done.values()))

        dead: list[DeadLettered] = []

        def checkpoint(outcome: ChunkOutcome | DeadLettered | ReadFailed) -> ChunkOutcome | None:
            if isinstance(outcome, ReadFailed):
                raise InputDataError(outcome.message)
            if isinstance(outcome, DeadLettered):
                dead.append(outcome)
                self.dead_letter(ctx, outcome)
                progress.chunk_done(outcome.rows)
                return None
            self.store.add_checkpoint(Checkpoint(ctx.run.run_id, outcome.index, outcome.to_json()))
            crash_point("after_checkpoint", chunk=outcome.index)
            progress.chunk_done(outcome.rows_read)
            watchdog.check()
            return outcome

        source_args = (ctx.files, spec.source.format, spec.chunk_size)
        source_kwargs: dict[str, Any] = {
            "allow_pickle": spec.source.allow_pickle,
            "key": spec.source.key,
        }
        try:
            # Workers read their own chunks where the format allows (Parquet, CSV): the driver
            # sends a few-byte descriptor instead of reading the rows and shipping them to
            # another process, and holds no read-ahead chunks (in-process engines use less
            # memory this way too).
            refs = (ctx.plan or SourcePlan()).refs(ctx.files, spec, reader_types(ctx.policy))
            source: Iterator[Chunk | ChunkRef | CsvChunkRef] = (
                refs if refs is not None else read_chunks(*source_args, **source_kwargs)
            )
            chunks = (c for c in source if c.index not in done)
            policy = RetryPolicy(
                spec.retries.attempts, spec.retries.backoff_s, spec.retries.max_backoff_s
            )
            gold_detect = any(s.detect is not None for s in spec.steps.gold)
            if any(s.detect is not None for s in spec.steps.silver):
                # Pre-pass: silver detectors are fitted on every conformed chunk (staged bronze).
                def bronze() -> Iterator[pl.DataFrame]:
                    for chunk in read_chunks(
                        ctx.files,
                        spec.source.format,
                        spec.chunk_size,
                        allow_pickle=spec.source.allow_pickle,
                        key=spec.source.key,
                    ):
                        frame = processor.bronze_frame(chunk)
                        if frame is not None:
                            yield frame

                silver_steps = compile_steps(spec.steps.silver, spec.base_dir)
                processor.bind("silver", fit_detectors(silver_steps, bronze))
            finish = processor.finish_silver if gold_detect else processor.finish
            if processor.needs_ordering:
                prepared = engine.map(Retried(processor.prepare, policy), chunks)
                results = engine.map(Retried(finish, policy), flagged(prepared))
            elif gold_detect:
                prepared = engine.map(Retried(processor.prepare, policy), chunks)
                results = engine.map(Retried(finish, policy), ((p, {}) for p in prepared))
            else:
                results = engine.map(Retried(processor, policy), chunks)
            if gold_detect:
                # Gold detectors are fitted on the whole staged silver layer, then gold runs.
                silver_done = list(results)
                gold_steps = compile_steps(spec.steps.gold, spec.base_dir)
                processor.bind(
                    "gold",
                    fit_detectors(
                        gold_steps, lambda: (pl.read_parquet(f) for f in staging.silver.files())
                    ),
                )
                results = engine.map(Retried(processor.finish_gold, policy), silver_done)
            fresh = [o for o in (checkpoint(r) for r in results) if o is not None]
        finally:
            if self.engines is None:
                engine.close()
            progress.close()
        if len(dead) > spec.dead_letter.max_chunks:
            first = min(dead, key=lambda d: d.index)
            # Over the dead-letter budget: the run fails; re-running the key retries only the
            # dead-lettered chunks (the others are checkpointed).
            raise Terminal(first.error)
        progress.phase("publishing")
        return sorted([*done.values(), *fresh], key=lambda o: o.index), dead
