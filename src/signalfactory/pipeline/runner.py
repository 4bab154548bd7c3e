"""The run orchestrator: the one module that connects the planes.

plan → stage → process → write → verify → finalize (batch-job-spec §5), each timed. Chunks
stream through bronze, silver and gold on the engine; layers are committed once per run; the
certified table advances in one atomic Delta commit only when no gate holds certification.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import structlog

from signalfactory.core.errors import ConfigError, SignalFactoryError
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import (
    CertificationState,
    CertificationStatus,
    Evidence,
    GateResult,
    LifecycleEvent,
    LifecycleEventType,
    QuarantineRecord,
    RunRecord,
    RunStatus,
    Stage,
    StageTiming,
    Transition,
    new_id,
    utcnow,
)
from signalfactory.enforcement.catalog import (
    CERTIFICATION,
    DQ,
    G1_RESOLUTION,
    G2_IDENTITY,
    G3_SCHEMA,
    STAGE_GATES,
    EnforcementLevel,
)
from signalfactory.enforcement.checks import REASONS
from signalfactory.enforcement.outcomes import Decision, GateTally, decide, merge
from signalfactory.enforcement.pii import PII_PATTERNS, PiiRemediator
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.enforcement.schema import logical_schema
from signalfactory.pipeline.chunkflow import STAGE_COLUMN, ChunkOutcome, ChunkProcessor, Staging
from signalfactory.pipeline.hooks import HookSet, RunHook
from signalfactory.pipeline.paths import DatasetPaths
from signalfactory.production.engines import create_engine
from signalfactory.production.formats import read_chunks
from signalfactory.production.lake import CommitResult, StagedLayer, commit_layer, table_schema
from signalfactory.production.spec import PipelineSpec
from signalfactory.production.steps import compile_steps

log = structlog.get_logger("signalfactory.run")
ACTOR = "signalfactory.runner"


@dataclass
class RunOutcome:
    """A finished run and what a report needs beyond the ledger row."""

    run: RunRecord
    evidence: list[Evidence] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = self.run.to_dict()
        data["evidence"] = [
            {
                k: e.to_dict()[k]
                for k in (
                    "stage",
                    "gate",
                    "result",
                    "failure_signature",
                    "failure_signatures",
                    "metrics",
                    "disposition",
                )
                if k in e.to_dict()
            }
            for e in self.evidence
        ]
        data["alerts"] = self.alerts
        data["reused"] = self.reused
        return data


def idempotency_key(
    files: Sequence[Path], spec: PipelineSpec, partition: Mapping[str, str], policy_digest: str
) -> str:
    """SHA-256 of the input digests + pipeline params + policy + salt (B3)."""
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
        digest.update(f"{path.name}:{path.stat().st_size}:{content}\n".encode())
    params = spec.model_dump(
        mode="json", exclude={"base_dir", "source_file", "engine", "max_workers", "chunk_size"}
    )
    digest.update(json.dumps([params, dict(partition), policy_digest], sort_keys=True).encode())
    return digest.hexdigest()


def _quarantine_name(dataset: DatasetSpec, partition: Mapping[str, str], run_id: str) -> str:
    part = "_".join(v.replace("-", "") for v in partition.values()) or "all"
    return f"quarantine.{dataset.name}_{part}_{run_id}"


class PipelineRunner:
    def __init__(
        self,
        store: MetadataStore,
        lake_root: Path,
        staging_root: Path,
        *,
        pii_key: Callable[[], bytes],
        hooks: Sequence[RunHook] = (),
    ) -> None:
        self.store = store
        self.lake_root = lake_root
        self.staging_root = staging_root
        self.pii_key = pii_key
        self.hooks = HookSet(hooks)

    # -- ledger --------------------------------------------------------------------------
    def _transition(self, run: RunRecord, old: RunStatus | None, reason: str) -> None:
        self.store.append_transition(
            Transition(
                subject=run.run_id,
                from_status=str(old) if old else None,
                to_status=str(run.status),
                actor=ACTOR,
                reason=reason,
            )
        )

    def _remediator(self, policy: PolicyBundle) -> PiiRemediator:
        if any(rule.action == "tokenize" for rule in policy.pii.detection):
            return PiiRemediator(self.pii_key())
        # mask and redact need no secret; a throwaway key keeps one code path.
        return PiiRemediator(secrets.token_bytes(64))

    def _event(self, kind: LifecycleEventType, run: RunRecord, **payload: Any) -> None:
        self.hooks.event(LifecycleEvent(kind, run.run_id, run.dataset_urn, payload))

    def _fail(self, run: RunRecord, exc: BaseException, created: bool) -> RunRecord:
        message = (
            exc.message if isinstance(exc, SignalFactoryError) else f"{type(exc).__name__}: {exc}"
        )
        # Errors may quote data (polars echoes the values a cast failed on): no PII in the
        # ledger or the JobRunFailed event.
        for name, regex in PII_PATTERNS.items():
            message = re.sub(regex, f"<{name}>", message)
        failed = replace(run, status=RunStatus.FAILED, finished_at=utcnow(), error=message)
        if created:
            self.store.update_run(failed)
        else:
            self.store.create_run(failed)
            self._event(
                LifecycleEventType.JOB_RUN_STARTED,
                failed,
                producer_urn=f"urn:signalfactory:pipeline:{run.pipeline}",
                scheduled_time=None,
                code_ref=None,
            )
        self._transition(failed, RunStatus.RUNNING, f"run failed: {message[:300]}")
        self._event(
            LifecycleEventType.JOB_RUN_FAILED,
            failed,
            failure_reason=message,
            retry_count=0,
            stack_trace=type(exc).__name__,
        )
        return failed

    # -- the run -------------------------------------------------------------------------
    def run(self, spec: PipelineSpec, partition_given: Mapping[str, str]) -> RunOutcome:
        record = self.store.get_dataset(spec.dataset)
        if record is None:
            raise ConfigError(
                f"pipeline {spec.pipeline}: dataset {spec.dataset} is not registered. Run "
                "`signalfactory register dataset.yaml --policy policy_bundle.yaml` first."
            )
        dataset = DatasetSpec.model_validate(record.spec)
        policy = PolicyBundle.model_validate(record.policy)
        partition = spec.resolve_partition(dict(partition_given))
        # An unknown engine is a configuration error: refuse before any run is recorded.
        create_engine(spec.engine, spec.max_workers).close()
        # So is a tokenize rule without a key: refuse before any run is recorded.
        remediator = self._remediator(policy)
        paths = DatasetPaths.for_dataset(dataset, self.lake_root)
        run = RunRecord(
            run_id=new_id("run"),
            pipeline=spec.pipeline,
            dataset_urn=spec.dataset,
            partition=partition,
            status=RunStatus.RUNNING,
            idempotency_key="",
            engine=spec.engine,
            chunk_size=spec.chunk_size,
            started_at=utcnow(),
        )
        plan_started = utcnow()
        try:
            files = spec.resolve_files(partition)
            policy_digest = hashlib.sha256(
                json.dumps(record.policy, sort_keys=True, default=str).encode()
            ).hexdigest()
            key = idempotency_key(files, spec, partition, policy_digest)
        except SignalFactoryError as exc:
            failed = self._fail(run, exc, created=False)
            return RunOutcome(failed)
        for previous in self.store.find_runs_by_key(key):
            if previous.status is RunStatus.SUCCEEDED:
                evidence = self.store.list_evidence(run_id=previous.run_id)
                return RunOutcome(previous, evidence=evidence, reused=True)
        run = replace(run, idempotency_key=key)
        self.store.create_run(run)
        self._transition(run, None, f"run started by {spec.source_file or 'api'}")
        producer = (
            dataset.producer_urn
            or spec.producer_urn
            or (f"urn:signalfactory:pipeline:{spec.pipeline}")
        )
        self._event(
            LifecycleEventType.JOB_RUN_STARTED,
            run,
            producer_urn=producer,
            scheduled_time=None,
            code_ref=spec.code_ref,
            partition=partition,
        )
        staging = self.staging_root / run.run_id
        try:
            outcome = self._execute(
                run,
                spec,
                dataset,
                policy,
                paths,
                partition,
                files,
                producer,
                plan_started,
                staging,
                remediator,
            )
        except Exception as exc:
            log.error("run_failed", run_id=run.run_id, error_type=type(exc).__name__)
            failed = self._fail(run, exc, created=True)
            return RunOutcome(failed)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.hooks.run_end(outcome.run)
        return outcome

    def _execute(
        self,
        run: RunRecord,
        spec: PipelineSpec,
        dataset: DatasetSpec,
        policy: PolicyBundle,
        paths: DatasetPaths,
        partition: dict[str, str],
        files: list[Path],
        producer: str,
        plan_started: datetime,
        staging_dir: Path,
        remediator: PiiRemediator,
    ) -> RunOutcome:
        engine = create_engine(spec.engine, spec.max_workers)
        silver_steps = compile_steps(spec.steps.silver, spec.base_dir)
        gold_steps = compile_steps(spec.steps.gold, spec.base_dir)
        cert_schema = table_schema(paths.certified)
        staging = Staging(
            *(StagedLayer(staging_dir / n) for n in ("bronze", "silver", "gold", "quarantine"))
        )
        processor = ChunkProcessor(
            policy=policy,
            partition=partition,
            silver_steps=silver_steps,
            gold_steps=gold_steps,
            staging=staging,
            remediator=remediator,
            certified_schema=_certified_schema(cert_schema),
        )
        timings = [StageTiming("plan", plan_started, utcnow(), rows_in=len(files))]
        stream_started = utcnow()
        outcomes: list[ChunkOutcome] = []
        try:
            for chunk_outcome in engine.map(
                processor, read_chunks(files, spec.source.format, spec.chunk_size)
            ):
                outcomes.append(chunk_outcome)
        finally:
            engine.close()
        stream_finished = utcnow()
        totals = _totals(outcomes)
        timings.append(
            StageTiming(
                "stage",
                stream_started,
                stream_finished,
                rows_in=totals["rows_read"],
                rows_out=totals["rows_bronze"],
            )
        )
        timings.append(
            StageTiming(
                "process",
                stream_started,
                stream_finished,
                rows_in=totals["rows_bronze"],
                rows_out=totals["rows_gold"],
            )
        )

        # -- decide every gate -------------------------------------------------------------
        tallies = [t for o in outcomes for t in o.tallies]
        tallies += _run_level_tallies(dataset, policy, producer, totals)
        merged = merge(tallies)
        decisions = []
        for stage, gates in STAGE_GATES.items():
            for gate in gates:
                if gate == CERTIFICATION:
                    continue
                tally = merged.get((stage, gate)) or GateTally(
                    stage=stage, gate=gate, rows_checked=totals["rows_read"]
                )
                # A type change against the certified table always holds: consumers must
                # never see a column change type under them, whatever the level.
                level = (
                    EnforcementLevel.G3
                    if stage is Stage.GOLD and gate == G3_SCHEMA
                    else policy.gate_level(gate, dataset.level)
                )
                decisions.append(
                    decide(
                        tally,
                        dataset_urn=dataset.urn,
                        run_id=run.run_id,
                        level=level,
                        max_invalid_rows_pct=policy.routing.max_invalid_rows_pct,
                        context=_gate_context(stage, gate, dataset, producer),
                        reached=stage is Stage.BRONZE or not totals["broken"],
                    )
                )
        holding = [d for d in decisions if d.holds]
        held = bool(holding)

        # -- write -------------------------------------------------------------------------
        write_started = utcnow()
        metadata = {
            "signalfactory.run_id": run.run_id,
            "signalfactory.pipeline": spec.pipeline,
            "signalfactory.partition": json.dumps(partition),
        }
        commits: dict[str, CommitResult] = {}
        previous = self.store.get_certification(dataset.urn)
        previous_version = previous.certified_version if previous else None
        quarantine_table = None
        quarantined = totals["rows_quarantined"]
        if held:
            reason = "BATCH_HELD:" + (holding[0].evidence.failure_signature or "")
            quarantined += _move_to_quarantine(staging.gold, staging.quarantine, reason)
        else:
            for layer, staged in (
                ("bronze", staging.bronze),
                ("silver", staging.silver),
                ("gold", staging.gold),
            ):
                result = commit_layer(
                    getattr(paths, layer),
                    staged,
                    partition,
                    {**metadata, "signalfactory.layer": layer},
                    merge_schema=policy.schema_.mode != "strict",
                )
                if result:
                    commits[layer] = result
        if staging.quarantine.files():
            quarantine_table = _quarantine_name(dataset, partition, run.run_id)
            q_path = paths.quarantine_table(quarantine_table)
            result = commit_layer(
                q_path,
                staging.quarantine,
                {},
                {**metadata, "signalfactory.layer": "quarantine"},
                merge_schema=True,
            )
            if result:
                commits["quarantine"] = result
                self.store.add_quarantine(
                    QuarantineRecord(
                        dataset_urn=dataset.urn,
                        run_id=run.run_id,
                        stage=holding[0].evidence.stage if holding else _first_stage(decisions),
                        table_name=quarantine_table,
                        path=q_path,
                        rows=result.rows,
                        batch_level=held,
                        reasons=_reason_counts(staging.quarantine),
                        partition=partition,
                    )
                )
        certified_rows = 0
        if not held:
            result = commit_layer(
                paths.certified,
                staging.gold,
                partition,
                {**metadata, "signalfactory.layer": "certified"},
                merge_schema=policy.schema_.mode != "strict",
            )
            if result:
                commits["certified"] = result
                certified_rows = result.rows
        timings.append(
            StageTiming(
                "write",
                write_started,
                utcnow(),
                rows_in=totals["rows_gold"],
                rows_out=certified_rows,
            )
        )

        # -- verify ------------------------------------------------------------------------
        verify_started = utcnow()
        reconciliation = {
            "rows_read": totals["rows_read"],
            "rows_certified": certified_rows,
            "rows_quarantined": quarantined,
            "rows_dropped_by_steps": totals["rows_dropped"],
            "rows_added_by_steps": totals["rows_added"],
        }
        reconciliation["balanced"] = (
            totals["rows_read"] + totals["rows_added"]
            == certified_rows + quarantined + totals["rows_dropped"]
        )
        timings.append(StageTiming("verify", verify_started, utcnow()))

        # -- finalize ----------------------------------------------------------------------
        finalize_started = utcnow()
        now = utcnow()
        status = CertificationStatus.HELD_AT_PREVIOUS if held else CertificationStatus.CERTIFIED
        cert_version = commits["certified"].version if "certified" in commits else previous_version
        held_context = {
            "quarantine_table": quarantine_table,
            "quarantine_path": paths.quarantine_table(quarantine_table)
            if quarantine_table
            else None,
            "certified_view_status": str(status),
            "previous_certified_version": f"v{previous_version}"
            if previous_version is not None
            else None,
        }
        evidence = []
        for d in decisions:
            ev = d.evidence
            if d.holds or (ev.result is not GateResult.PASS and quarantine_table):
                ev = replace(ev, context={**ev.context, **held_context})
            evidence.append(ev)
        evidence.append(
            Evidence(
                dataset_urn=dataset.urn,
                run_id=run.run_id,
                stage=Stage.GOLD,
                gate=CERTIFICATION,
                result=GateResult.FAIL if held else GateResult.PASS,
                failure_signature=holding[0].evidence.failure_signature if holding else None,
                failure_signatures=tuple(d.evidence.failure_signature or "" for d in holding),
                metrics={"rows_certified": certified_rows, "certified_version": cert_version},
                timestamp=now,
                context={
                    **held_context,
                    "disposition": str(status),
                    "certified_version": cert_version,
                },
            )
        )
        for ev in evidence:
            self.hooks.evidence(ev)
        if "certified" in commits or previous is None:
            self.store.put_certification(
                CertificationState(
                    dataset_urn=dataset.urn,
                    certification_status=status,
                    certified_version=cert_version,
                    last_certified_at=now if "certified" in commits else None,
                    last_run_id=run.run_id,
                    path=paths.certified,
                )
            )
        else:
            self.store.put_certification(
                replace(previous, certification_status=status, last_run_id=run.run_id)
            )
        self.store.append_transition(
            Transition(
                subject=dataset.urn,
                from_status=str(previous.certification_status) if previous else None,
                to_status=str(status),
                actor=ACTOR,
                reason=f"run {run.run_id}: certified version {cert_version}"
                + (f" held at v{previous_version}" if held else ""),
            )
        )
        for layer, commit in commits.items():
            self._event(
                LifecycleEventType.DATASET_WRITE_COMMITTED,
                run,
                layer=layer,
                table_path=commit.path,
                commit_version=commit.version,
                rows_written=commit.rows,
                files_added=commit.files_added,
                partition_key=",".join(f"{k}={v}" for k, v in partition.items()),
            )
        alerts = _alerts(dataset, policy, evidence, held_context, held)
        for alert in alerts:
            self.hooks.alert(alert)
        timings.append(StageTiming("finalize", finalize_started, utcnow()))
        finished = replace(
            run,
            status=RunStatus.SUCCEEDED,
            finished_at=utcnow(),
            certification_status=status,
            certified_version=cert_version,
            rows_read=totals["rows_read"],
            rows_written=certified_rows,
            rows_quarantined=quarantined,
            rows_dropped=totals["rows_dropped"],
            quarantine_table=quarantine_table,
            stages=tuple(timings),
            reconciliation=reconciliation,
        )
        self.store.update_run(finished)
        self._transition(
            finished,
            RunStatus.RUNNING,
            f"completed: {status}, {certified_rows} rows certified, {quarantined} quarantined",
        )
        duration = (finished.finished_at or now) - finished.started_at
        self._event(
            LifecycleEventType.JOB_RUN_COMPLETED,
            finished,
            duration=duration.total_seconds(),
            rows_read=totals["rows_read"],
            rows_written=certified_rows,
            resource_summary={
                "engine": spec.engine,
                "chunks": len(outcomes),
                "chunk_size": spec.chunk_size,
            },
        )
        return RunOutcome(finished, evidence=evidence, alerts=alerts)


def _certified_schema(schema: pa.Schema | None) -> dict[str, str] | None:
    if schema is None:
        return None
    frame = pl.DataFrame(schema.empty_table())
    return logical_schema(frame.schema)


def _totals(outcomes: Sequence[ChunkOutcome]) -> dict[str, int]:
    keys = (
        "rows_read",
        "rows_quarantined",
        "rows_dropped",
        "rows_added",
        "rows_gold",
        "rows_silver",
        "rows_bronze",
    )
    totals = {k: sum(getattr(o, k) for o in outcomes) for k in keys}
    totals["broken"] = sum(1 for o in outcomes if o.broken)
    return totals


def _run_level_tallies(
    dataset: DatasetSpec, policy: PolicyBundle, producer: str, totals: Mapping[str, int]
) -> list[GateTally]:
    resolution = GateTally(stage=Stage.BRONZE, gate=G1_RESOLUTION, rows_checked=totals["rows_read"])
    identity = GateTally(stage=Stage.BRONZE, gate=G2_IDENTITY, rows_checked=totals["rows_read"])
    identity.metrics["confidence"] = 1.0 if dataset.producer_urn else 0.9
    tallies = [resolution, identity]
    for check in policy.dq:
        if check.check == "min_rows" and check.value is not None and not totals["broken"]:
            tally = GateTally(stage=Stage.SILVER, gate=DQ)
            if totals["rows_silver"] < check.value:
                sig = f"MIN_ROWS:{totals['rows_silver']}<{check.value}"
                if check.severity == "error":
                    tally.batch_signatures[sig] += 1
                else:
                    tally.warn_signatures[sig] += 1
            tallies.append(tally)
    return tallies


def _gate_context(stage: Stage, gate: str, dataset: DatasetSpec, producer: str) -> dict[str, Any]:
    if gate == G1_RESOLUTION:
        return {"dataset_urn": dataset.urn}
    if gate == G2_IDENTITY:
        return {"producer_urn": producer}
    return {}


def _first_stage(decisions: Sequence[Decision]) -> Stage:
    for d in decisions:
        if d.evidence.result is not GateResult.PASS and d.evidence.metrics.get("rows_failed"):
            return d.evidence.stage
    return Stage.BRONZE


def _reason_counts(staged: StagedLayer) -> dict[str, int]:
    """Count quarantined rows per reason (a row failing two rules counts for both)."""
    reasons = pl.from_arrow(pads.dataset(staged.files()).to_table(columns=[REASONS]))
    assert isinstance(reasons, pl.DataFrame)
    counts = (
        reasons.select(pl.col(REASONS).str.split("; ").explode())
        .group_by(REASONS)
        .len()
        .sort("len", descending=True)
    )
    return {str(k): int(v) for k, v in counts.iter_rows()}


def _move_to_quarantine(gold: StagedLayer, quarantine: StagedLayer, reason: str) -> int:
    """A held batch: the rows that would have been certified go to quarantine too."""
    moved = 0
    for i, file in enumerate(gold.files()):
        for j, batch in enumerate(pads.dataset(file).to_batches(batch_size=256_000)):
            frame = pl.from_arrow(pa.Table.from_batches([batch]))
            assert isinstance(frame, pl.DataFrame)
            frame = frame.with_columns(
                [pl.col(c).cast(pl.String) for c in frame.columns if c != "_sf_row"]
            ).with_columns(pl.lit(reason).alias(REASONS), pl.lit("gold").alias(STAGE_COLUMN))
            quarantine.write(10_000_000 + i * 1000 + j, frame, suffix="-held")
            moved += frame.height
    return moved


def _alerts(
    dataset: DatasetSpec,
    policy: PolicyBundle,
    evidence: Sequence[Evidence],
    held_context: Mapping[str, Any],
    held: bool,
) -> list[dict[str, Any]]:
    alerts = []
    for ev in evidence:
        if ev.result is not GateResult.FAIL or ev.gate == CERTIFICATION:
            continue
        # The gate's configured level decides (policy enforcement.level and .gates win over
        # the tier): G0 records only.
        if not policy.gate_level(ev.gate, dataset.level).alerts():
            continue
        alerts.append(
            {
                "owner_team": dataset.owner_team,
                "dataset_urn": dataset.urn,
                "run_id": ev.run_id,
                "stage": str(ev.stage),
                "gate": ev.gate,
                "failure_signature": ev.failure_signature,
                "certified_view_status": held_context["certified_view_status"],
                "quarantine_table": held_context["quarantine_table"],
                "remediation": _remediation(ev.failure_signature or ""),
                "severity": "CRITICAL" if held else "WARNING",
            }
        )
    return alerts


def _remediation(signature: str) -> str:
    kind = signature.split(":", 1)[0]
    return {
        "SCHEMA_BREAK": "The producer changed a column type; fix the producer or approve a "
        "schema change in the policy bundle, then re-run the partition.",
        "MISSING_FIELD": "A required column is missing; restore it upstream and re-run.",
        "UNEXPECTED_FIELD": "A new column arrived under a strict schema; declare it in "
        "schema.constraints or switch to mode: compatible.",
        "INVALID_ROWS_ABOVE_THRESHOLD": "Too many rows failed their rules; inspect the "
        "quarantine table's _sf_reasons column and fix the source.",
        "PII_DETECTED": "Add a pii.detection rule (tokenize, mask or redact) for this pattern.",
        "MIN_ROWS": "Fewer rows than expected arrived; check the upstream partition.",
    }.get(kind, "Inspect the quarantine table and the evidence, fix the cause, re-run.")
