"""The run orchestrator: the one module that connects the planes.

plan → stage → process → write → verify → finalize (batch-job-spec §5), each timed. Chunks
stream through bronze, silver and gold on the engine (``chunkflow``); gates are decided once
per run (``gating``); layers, quarantine and the certified table are committed once
(``publish``); evidence, events and alerts leave through the run hooks.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from signalfactory.core.errors import (
    ConfigError,
    LimitExceeded,
    SignalFactoryError,
    Terminal,
)
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import (
    CertificationState,
    CertificationStatus,
    DeadLetterStatus,
    Evidence,
    GateResult,
    LifecycleEvent,
    LifecycleEventType,
    RunRecord,
    RunStatus,
    Stage,
    StageTiming,
    Transition,
    new_id,
    utcnow,
)
from signalfactory.enforcement.catalog import CERTIFICATION
from signalfactory.enforcement.outcomes import Decision
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.enforcement.schema import reader_types
from signalfactory.pipeline.alerts import build_alerts
from signalfactory.pipeline.chunkflow import (
    Staging,
)
from signalfactory.pipeline.gating import decide_gates, totals
from signalfactory.pipeline.hooks import HookSet, RunHook
from signalfactory.pipeline.leases import Heartbeat, claim, owner_id, wait_for
from signalfactory.pipeline.limits import Watchdog, check_before_start
from signalfactory.pipeline.paths import DatasetPaths
from signalfactory.pipeline.progress import Listener, finish_progress
from signalfactory.pipeline.publish import Published, publish, record_certification
from signalfactory.pipeline.run_key import idempotency_key
from signalfactory.pipeline.source_plan import SourcePlan
from signalfactory.pipeline.streaming import ACTOR, ChunkStreamer, RunContext, scrub
from signalfactory.production.engines import EngineCache, check_engine
from signalfactory.production.exports import run_exports
from signalfactory.production.spec import PipelineSpec

log = structlog.get_logger("signalfactory.run")
_EVIDENCE_FIELDS = (
    "stage",
    "gate",
    "result",
    "failure_signature",
    "failure_signatures",
    "metrics",
    "disposition",
)


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
            {k: v for k, v in e.to_dict().items() if k in _EVIDENCE_FIELDS} for e in self.evidence
        ]
        data["alerts"] = self.alerts
        data["reused"] = self.reused
        return data


class PipelineRunner:
    def __init__(
        self,
        store: MetadataStore,
        lake_root: Path,
        staging_root: Path,
        *,
        pii_key: Callable[[], bytes],
        hooks: Sequence[RunHook] = (),
        engines: EngineCache | None = None,
        progress_listener: Listener | None = None,
    ) -> None:
        self.engines = engines
        self.progress_listener = progress_listener
        self.store = store
        self.lake_root = lake_root
        self.staging_root = staging_root
        self.pii_key = pii_key
        self.hooks = HookSet(hooks)
        self.streamer = ChunkStreamer(store, engines, progress_listener)

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

    def _event(self, kind: LifecycleEventType, run: RunRecord, **payload: Any) -> None:
        self.hooks.event(LifecycleEvent(kind, run.run_id, run.dataset_urn, payload))

    def _pii_key_for(self, policy: PolicyBundle) -> bytes:
        if any(rule.action == "tokenize" for rule in policy.pii.detection):
            return self.pii_key()
        # mask and redact need no secret; a throwaway key keeps one code path.
        return secrets.token_bytes(64)

    def _fail(self, run: RunRecord, exc: BaseException, created: bool) -> RunRecord:
        timed_out = isinstance(exc, LimitExceeded) and exc.kind == "time"
        raw = exc.message if isinstance(exc, SignalFactoryError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, SignalFactoryError):
            # Third-party errors may quote whole rows on later lines: keep the diagnosis.
            raw = raw.strip().splitlines()[0][:500] if raw.strip() else type(exc).__name__
        message = scrub(raw)
        status = RunStatus.TIMED_OUT if timed_out else RunStatus.FAILED
        failed = replace(run, status=status, finished_at=utcnow(), error=message)
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
        self._transition(failed, RunStatus.RUNNING, f"run {status.lower()}: {message[:300]}")
        self._event(
            LifecycleEventType.JOB_RUN_FAILED,
            failed,
            failure_reason=message,
            retry_count=0,
            stack_trace=type(exc).__name__,
            partition=dict(run.partition),
            pipeline=run.pipeline,
        )
        return failed

    # -- plan ----------------------------------------------------------------------------
    def run(
        self,
        spec: PipelineSpec,
        partition_given: Mapping[str, str],
        *,
        replay: str | None = None,
        resume_of: str | None = None,
    ) -> RunOutcome:
        """Run one partition. Configuration errors raise before any run is recorded.

        ``replay`` names a finished run to pick up again (dead-letter replay): its
        checkpointed chunks are kept and only the dead-lettered ones run again.
        """
        plan = SourcePlan()
        try:
            return self._run(spec, partition_given, plan, replay=replay, resume_of=resume_of)
        finally:
            plan.cancel()  # a scan the run did not use (its key had already succeeded) stops

    def _run(
        self,
        spec: PipelineSpec,
        partition_given: Mapping[str, str],
        plan: SourcePlan,
        *,
        replay: str | None,
        resume_of: str | None,
    ) -> RunOutcome:
        record = self.store.get_dataset(spec.dataset)
        if record is None:
            raise ConfigError(
                f"pipeline {spec.pipeline}: dataset {spec.dataset} is not registered. Run "
                "`signalfactory register dataset.yaml --policy policy_bundle.yaml` first."
            )
        dataset = DatasetSpec.model_validate(record.spec)
        policy = PolicyBundle.model_validate(record.policy)
        partition = spec.resolve_partition(dict(partition_given))
        check_engine(spec.engine)  # unknown engine: exit 2
        pii_key = self._pii_key_for(policy)  # tokenize without a key: exit 2
        paths = DatasetPaths.for_dataset(dataset, self.lake_root)
        plan_started = utcnow()
        run = RunRecord(
            run_id=new_id("run"),
            pipeline=spec.pipeline,
            dataset_urn=spec.dataset,
            partition=partition,
            status=RunStatus.RUNNING,
            idempotency_key="",
            engine=spec.engine,
            chunk_size=spec.chunk_size,
            started_at=plan_started,
        )
        try:
            inputs = spec.resolve_inputs(partition)  # verifies manifest digests first
            files = inputs.files
            plan.begin(files, spec, reader_types(policy))  # beside the digests of the key
            policy_digest = hashlib.sha256(
                json.dumps(record.policy, sort_keys=True, default=str).encode()
            ).hexdigest()
            key = idempotency_key(files, spec, partition, policy_digest, inputs.digest)
            workers = spec.max_workers or (1 if spec.engine == "sequential" else 2)
            check_before_start(spec, files, workers)  # impossible limits: exit 2
        except ConfigError:
            raise  # a malformed manifest is a configuration error: exit 2, no run recorded
        except SignalFactoryError as exc:
            return RunOutcome(self._fail(run, exc, created=False))
        if resume_of is not None:
            original = self.store.get_run(resume_of)
            if original is not None and original.idempotency_key not in ("", key):
                raise ConfigError(
                    f"run {resume_of} cannot be resumed: its input, pipeline or policy changed "
                    "since it started (the idempotency key differs). Run the pipeline again to "
                    "process the new input as a new run."
                )
        while True:
            previous = self.store.find_runs_by_key(key)
            for done in previous:
                if done.status is RunStatus.SUCCEEDED and done.run_id != replay:
                    evidence = self.store.list_evidence(run_id=done.run_id)
                    return RunOutcome(done, evidence=evidence, reused=True)
            # A crashed or failed run of the same key is resumed from its checkpoints.
            resumable = next(
                (
                    r
                    for r in previous
                    if r.run_id == replay
                    or r.status in (RunStatus.RUNNING, RunStatus.FAILED, RunStatus.TIMED_OUT)
                ),
                None,
            )
            run_id = resumable.run_id if resumable else run.run_id
            owner = owner_id()
            lease = claim(self.store, key, run_id, owner)
            if lease.owner == owner:
                # The key may have succeeded between our read and the claim: read again.
                finished = next(
                    (
                        r
                        for r in self.store.find_runs_by_key(key)
                        if r.status is RunStatus.SUCCEEDED and r.run_id != replay
                    ),
                    None,
                )
                if finished is not None:
                    self.store.release_lease(key, run_id)
                    evidence = self.store.list_evidence(run_id=finished.run_id)
                    return RunOutcome(finished, evidence=evidence, reused=True)
                break
            winner = wait_for(self.store, key, lease.run_id)
            if winner is not None:
                evidence = self.store.list_evidence(run_id=winner.run_id)
                return RunOutcome(winner, evidence=evidence, reused=True)
        producer = (
            dataset.producer_urn
            or spec.producer_urn
            or f"urn:signalfactory:pipeline:{spec.pipeline}"
        )
        if resumable is not None:
            spec = spec.model_copy(update={"chunk_size": resumable.chunk_size})
            run = replace(resumable, status=RunStatus.RUNNING, error=None, finished_at=None)
            self.store.update_run(run)
            self._transition(run, resumable.status, "resumed from its checkpoints")
        else:
            run = replace(run, idempotency_key=key)
            self.store.create_run(run)
            self._transition(run, None, f"run started by {spec.source_file or 'api'}")
        self._event(
            LifecycleEventType.JOB_RUN_STARTED,
            run,
            producer_urn=producer,
            scheduled_time=None,
            code_ref=spec.code_ref,
            partition=partition,
            pipeline=run.pipeline,
            pipeline_file=spec.source_file,
            resumed=resumable is not None,
            # Lineage: upstream datasets declared by the pipeline, then the source as one
            # dataset (its path template, not each file of each partition).
            inputs=[*spec.upstream, f"file://{(spec.base_dir / spec.source.template).resolve()}"],
        )
        ctx = RunContext(
            run,
            spec,
            dataset,
            policy,
            paths,
            partition,
            files,
            producer,
            pii_key,
            self.staging_root / run.run_id,
            plan,
        )
        with Heartbeat(self.store, key, run.run_id):
            try:
                outcome = self._execute(ctx, plan_started)
            except Exception as exc:  # any failure ends the run FAILED, recorded
                log.error("run_failed", run_id=run.run_id, error_type=type(exc).__name__)
                # Staging and checkpoints stay: re-running the key resumes from them.
                return RunOutcome(self._fail(run, exc, created=True))
        certified = outcome.run.certification_status is CertificationStatus.CERTIFIED
        if certified and self.hooks.take_partition_profiles:
            profile = Staging.under(ctx.staging_dir).partition_profile(
                ctx.paths.certified, ctx.dataset.urn, ctx.partition
            )
            if profile is not None:
                self.hooks.partition_profile(outcome.run, profile)
        if not outcome.run.reconciliation.get("dead_letters"):
            # Kept while dead letters are open: a replay re-publishes from it.
            shutil.rmtree(ctx.staging_dir, ignore_errors=True)
        self.hooks.run_end(outcome.run)
        return outcome

    # -- stage + process -----------------------------------------------------------------
    def _execute(self, ctx: RunContext, plan_started: datetime) -> RunOutcome:
        run = ctx.run
        staging = Staging.under(ctx.staging_dir)
        timings = [StageTiming("plan", plan_started, utcnow(), rows_in=len(ctx.files))]
        stream_started = utcnow()
        watchdog = Watchdog(ctx.spec)
        outcomes, dead = self.streamer.stream(ctx, staging, watchdog)
        stream_finished = utcnow()
        counts = totals(outcomes)
        timings += [
            StageTiming(
                "stage",
                stream_started,
                stream_finished,
                rows_in=counts["rows_read"],
                rows_out=counts["rows_bronze"],
            ),
            StageTiming(
                "process",
                stream_started,
                stream_finished,
                rows_in=counts["rows_bronze"],
                rows_out=counts["rows_gold"],
            ),
        ]
        decisions = decide_gates(
            outcomes,
            counts,
            dataset=ctx.dataset,
            policy=ctx.policy,
            run_id=run.run_id,
            producer=ctx.producer,
        )

        accounted = counts["rows_gold"] + counts["rows_quarantined"] + counts["rows_dropped"]
        if counts["rows_read"] + counts["rows_added"] != accounted:
            # Never publish what does not add up (B11): a bug, not bad data.
            raise Terminal(
                f"reconciliation failed before publishing: {counts['rows_read']:,} rows read "
                f"+ {counts['rows_added']:,} added by steps != {counts['rows_gold']:,} to "
                f"certify + {counts['rows_quarantined']:,} quarantined + "
                f"{counts['rows_dropped']:,} dropped; nothing was published."
            )
        write_started = utcnow()
        previous = self.store.get_certification(ctx.dataset.urn)
        published = publish(
            self.store,
            run=run,
            dataset=ctx.dataset,
            policy=ctx.policy,
            paths=ctx.paths,
            partition=ctx.partition,
            staging=staging,
            decisions=decisions,
            rows_quarantined=counts["rows_quarantined"],
            generation=1
            + sum(
                d.status is DeadLetterStatus.REPLAYED
                for d in self.store.list_dead_letters(run_id=run.run_id)
            ),
        )
        timings.append(
            StageTiming(
                "write",
                write_started,
                utcnow(),
                rows_in=counts["rows_gold"],
                rows_out=published.rows_certified,
            )
        )

        verify_started = utcnow()
        reconciliation: dict[str, Any] = {
            "rows_read": counts["rows_read"],
            "rows_certified": published.rows_certified,
            "rows_quarantined": published.rows_quarantined,
            "rows_dropped_by_steps": counts["rows_dropped"],
            "rows_added_by_steps": counts["rows_added"],
            "rows_dead_lettered": sum(d.rows for d in dead),
            "dead_letters": len(dead),
            "retries": counts["retries"],
            "peak_rss_mb": round(watchdog.peak_mb, 1),
        }
        reconciliation["rows_read"] += reconciliation["rows_dead_lettered"]
        reconciliation["balanced"] = reconciliation["rows_read"] + counts["rows_added"] == (
            published.rows_certified
            + published.rows_quarantined
            + counts["rows_dropped"]
            + reconciliation["rows_dead_lettered"]
        )
        timings.append(StageTiming("verify", verify_started, utcnow()))
        outcome = self._finalize(
            ctx, decisions, published, previous, counts, timings, reconciliation
        )
        finish_progress(self.store, run.run_id, listener=self.progress_listener)
        return outcome

    # -- finalize ------------------------------------------------------------------------
    def _finalize(
        self,
        ctx: RunContext,
        decisions: Sequence[Decision],
        published: Published,
        previous: CertificationState | None,
        counts: Mapping[str, int],
        timings: list[StageTiming],
        reconciliation: Mapping[str, Any],
    ) -> RunOutcome:
        started = utcnow()
        run, dataset = ctx.run, ctx.dataset
        holding = [d for d in decisions if d.holds]
        held = bool(holding)
        status = CertificationStatus.HELD_AT_PREVIOUS if held else CertificationStatus.CERTIFIED
        previous_version = previous.certified_version if previous else None
        certified = published.commits.get("certified")
        version = certified.version if certified else previous_version
        held_context = {
            "quarantine_table": published.quarantine_table,
            "quarantine_path": published.quarantine_path,
            "certified_view_status": str(status),
            "previous_certified_version": (
                f"v{previous_version}" if previous_version is not None else None
            ),
        }
        evidence = [
            replace(d.evidence, context={**d.evidence.context, **held_context})
            if d.holds or (d.evidence.result is not GateResult.PASS and published.quarantine_table)
            else d.evidence
            for d in decisions
        ]
        evidence.append(
            Evidence(
                dataset_urn=dataset.urn,
                run_id=run.run_id,
                stage=Stage.GOLD,
                gate=CERTIFICATION,
                result=GateResult.FAIL if held else GateResult.PASS,
                failure_signature=holding[0].evidence.failure_signature if holding else None,
                failure_signatures=tuple(d.evidence.failure_signature or "" for d in holding),
                metrics={"rows_certified": published.rows_certified, "certified_version": version},
                timestamp=started,
                context={**held_context, "disposition": str(status), "certified_version": version},
            )
        )
        for ev in evidence:
            self.hooks.evidence(ev)
        self._certify(ctx, previous, status, version, started if certified else None, held)
        for layer, commit in published.commits.items():
            if layer == "quarantine":
                continue  # the dataset was not written: freshness must not count it
            self._event(
                LifecycleEventType.DATASET_WRITE_COMMITTED,
                run,
                layer=layer,
                table_path=commit.path,
                commit_version=commit.version,
                rows_written=commit.rows,
                bytes_written=commit.bytes_written,
                files_added=commit.files_added,
                partition_key=",".join(f"{k}={v}" for k, v in ctx.partition.items()),
            )
        exports = (
            run_exports(
                ctx.spec.exports,
                certified_path=ctx.paths.certified,
                gold_path=ctx.paths.gold,
                quarantine_path=published.quarantine_path,
                partition=ctx.partition,
                base_dir=ctx.spec.base_dir,
            )
            if ctx.spec.exports and not held
            else []
        )
        if exports:
            reconciliation = {**reconciliation, "exports": exports}
        alerts = build_alerts(dataset, ctx.policy, evidence, held_context, held)
        for alert in alerts:
            self.hooks.alert(alert)
        timings.append(StageTiming("finalize", started, utcnow()))
        finished = replace(
            run,
            status=RunStatus.SUCCEEDED,
            finished_at=utcnow(),
            certification_status=status,
            certified_version=version,
            rows_read=int(reconciliation["rows_read"]),
            rows_written=published.rows_certified,
            rows_quarantined=published.rows_quarantined,
            rows_dropped=counts["rows_dropped"],
            quarantine_table=published.quarantine_table,
            stages=tuple(timings),
            reconciliation=reconciliation,
        )
        self.store.update_run(finished)
        self._transition(
            finished,
            RunStatus.RUNNING,
            f"completed: {status}, {published.rows_certified} rows certified, "
            f"{published.rows_quarantined} quarantined",
        )
        self._event(
            LifecycleEventType.JOB_RUN_COMPLETED,
            finished,
            duration=((finished.finished_at or started) - finished.started_at).total_seconds(),
            rows_read=counts["rows_read"],
            rows_written=published.rows_certified,
            partition=dict(ctx.partition),
            pipeline=run.pipeline,
            resource_summary={
                "engine": ctx.spec.engine,
                "chunks": counts["chunks"],
                "chunk_size": ctx.spec.chunk_size,
            },
        )
        return RunOutcome(finished, evidence=evidence, alerts=alerts)

    def _certify(
        self,
        ctx: RunContext,
        previous: CertificationState | None,
        status: CertificationStatus,
        version: int | None,
        certified_at: datetime | None,
        held: bool,
    ) -> None:
        """Record where the certified view stands, and the move in the audit trail."""
        record_certification(
            self.store,
            ctx.run,
            ctx.paths.certified,
            previous,
            status,
            version,
            certified_at,
            held=held,
            actor=ACTOR,
        )
