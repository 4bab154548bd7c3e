"""``Observation``: one observed run of a job we do not run (see ``signalfactory.sdk``).

Entering records the run (pipeline ``sdk:<job>``, so ``status``/``runs``/``evidence`` show it)
and emits ``JobRunStarted``; each ``write`` evaluates, routes and commits (``stages``,
``certify``); leaving emits ``JobRunCompleted`` or ``JobRunFailed``. Every failure of Signal
Factory itself is caught here and turned into the degraded path (``degraded``).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import polars as pl
import structlog

from signalfactory.api import SignalFactory
from signalfactory.core.errors import ConfigError, NotFoundError
from signalfactory.core.records import (
    DatasetRecord,
    LifecycleEvent,
    LifecycleEventType,
    RunRecord,
    RunStatus,
    Transition,
    new_id,
    utcnow,
)
from signalfactory.enforcement.outcomes import Decision
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.pipeline.paths import DatasetPaths
from signalfactory.sdk import payloads
from signalfactory.sdk.certify import ACTOR, finalize_write
from signalfactory.sdk.degraded import Degradation, DiskSpool, EventSpool, MemorySpool
from signalfactory.sdk.frames import supported, to_polars
from signalfactory.sdk.results import ObservationResult, WriteResult, WriteStatus
from signalfactory.sdk.stages import LAYERS, Target, commit, evaluate
from signalfactory.settings import Settings

log = structlog.get_logger("signalfactory.sdk")


class Observation:
    """One observed run; use it as a context manager (see ``observe``)."""

    def __init__(
        self,
        dataset: str,
        run_id: str | None = None,
        *,
        partition: dict[str, str] | None = None,
        home: str | Path | None = None,
        settings: Settings | None = None,
        code_ref: str | None = None,
        dag_run_id: str | None = None,
        producer_urn: str | None = None,
        job: str | None = None,
        strict: bool = False,
        spool: EventSpool | None = None,
    ) -> None:
        self.dataset_urn = dataset
        self.partition = {str(k): str(v) for k, v in (partition or {}).items()}
        self.job = job or payloads.job_name(dataset)
        self.pipeline = f"sdk:{self.job}"
        self.code_ref = code_ref
        self.dag_run_id = dag_run_id
        self.producer_urn = producer_urn
        self.strict = strict
        self._requested_run_id = run_id
        self.run_id = run_id or new_id("run")
        self.attempt = 0
        self.result = ObservationResult(dataset, self.run_id, self.pipeline)
        self._memory = MemorySpool()
        self.degradation = Degradation(dataset, self.run_id, spool or self._memory)
        self.settings: Settings | None = None
        try:
            base = settings or Settings()
            self.settings = base.model_copy(update={"home": Path(home)}) if home else base
        except Exception as exc:  # malformed SIGNALFACTORY_* environment: degrade, not raise
            self._degrade("settings", exc)
        if spool is None and self.settings is not None:
            self.degradation.spool = DiskSpool(self._memory, self.settings.spool_dir)
        self._sf: SignalFactory | None = None
        self._target: Target | None = None
        self._state = "new"  # new → started → finished
        self._inert = False
        self._started_sent = False
        self._started_event: LifecycleEvent | None = None
        self._holds: list[Decision] = []
        self._judged = 0
        self._writes = 0
        self._rows_read: int | None = None
        self._started_at = utcnow()

    # -- what the producer sees --------------------------------------------------------
    @property
    def unsent_events(self) -> list[LifecycleEvent]:
        """Events of a degraded run kept in memory (when no spool was given)."""
        return list(self._memory.events)

    def __enter__(self) -> Observation:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exc)  # returns None: the producer's exception propagates unchanged

    def write(self, data: Any, layer: str = "gold") -> WriteResult | None:
        """Evaluate and commit ``data`` (polars, pyarrow or pandas) as ``layer``.

        Returns None when observe() is switched off or the dataset is not registered;
        otherwise a ``WriteResult`` (``DEGRADED`` when Signal Factory could not do its work).
        """
        if self._state == "new":
            self._start()
        if self.result.disabled or self._inert:
            return None
        if self._state == "finished":
            return self._reject(layer, "the observation has ended; write inside the with block")
        if layer not in LAYERS:
            return self._reject(layer, f"unknown layer {layer!r}; use bronze, silver or gold")
        if not supported(data):
            return self._reject(layer, f"unsupported input type {type(data).__name__}")
        rows = int(getattr(data, "num_rows", 0) or len(data))
        if self.degradation.active or self._target is None:
            return self.result.add(WriteResult(layer, WriteStatus.DEGRADED, rows_in=rows))
        try:
            result = self._write(to_polars(data), layer)
        except Exception as exc:
            self._degrade("write", exc)
            result = WriteResult(layer, WriteStatus.DEGRADED, rows_in=rows)
        finally:
            shutil.rmtree(self._target.staging_root / f"write-{self._writes}", ignore_errors=True)
        return self.result.add(result)

    # -- start -------------------------------------------------------------------------
    def _start(self) -> None:
        self._state = "started"
        self._started_at = utcnow()
        if self.settings is not None and self.settings.observe_disabled:
            self.result.disabled = True
            return
        if self.settings is None:  # degraded already (malformed settings)
            self._spool_lifecycle(LifecycleEventType.JOB_RUN_STARTED, self._started_payload())
            self._started_sent = True
            return
        try:
            self._sf = SignalFactory(settings=self.settings)
            record = self._sf.store.get_dataset(self.dataset_urn)
        except Exception as exc:
            self._degrade("store", exc)
            return
        if record is None:
            self._close()
            self._inert = True
            self.result.reason = "dataset not registered"
            if self.strict:
                raise NotFoundError(
                    f"observe: dataset {self.dataset_urn} is not registered in this Signal "
                    "Factory home; register it with `signalfactory register dataset.yaml "
                    "--policy policy_bundle.yaml` (or check SIGNALFACTORY_HOME)."
                )
            log.error(
                "observe_unknown_dataset",
                dataset_urn=self.dataset_urn,
                effect="nothing is observed for this run; register the dataset",
            )
            return
        try:
            self._begin(self._sf, record)
        except Exception as exc:
            self._degrade("start", exc)

    def _free_run_id(self, sf: SignalFactory) -> str:
        wanted = self._requested_run_id
        if wanted is None or sf.store.get_run(wanted) is None:
            return self.run_id
        for attempt in range(1, 1000):
            candidate = f"{wanted}__retry{attempt}"
            if sf.store.get_run(candidate) is None:
                self.attempt = attempt
                return candidate
        return new_id("run")

    def _begin(self, sf: SignalFactory, record: DatasetRecord) -> None:
        settings = sf.settings
        dataset = DatasetSpec.model_validate(record.spec)
        policy = PolicyBundle.model_validate(record.policy)
        paths = DatasetPaths.for_dataset(dataset, settings.lake_root)
        runner = sf.runner()  # the same hooks as a pipeline run (store, alerts, bus, …)
        tokenizes = any(rule.action == "tokenize" for rule in policy.pii.detection)
        pii_key = runner.pii_key() if tokenizes else secrets.token_bytes(64)
        self.run_id = self._free_run_id(sf)
        self.result.run_id = self.degradation.run_id = self.run_id
        producer = self.producer_urn or dataset.producer_urn or f"urn:signalfactory:sdk:{self.job}"
        self.producer_urn = producer
        run = RunRecord(
            run_id=self.run_id,
            pipeline=self.pipeline,
            dataset_urn=dataset.urn,
            partition=self.partition,
            status=RunStatus.RUNNING,
            idempotency_key=f"sdk:{self.run_id}",
            engine="sdk",
            chunk_size=0,
            started_at=self._started_at,
        )
        sf.store.create_run(run)
        self._target = Target(
            store=sf.store,
            hooks=runner.hooks,
            run=run,
            dataset=dataset,
            policy=policy,
            paths=paths,
            partition=self.partition,
            producer=producer,
            pii_key=pii_key,
            staging_root=settings.home / "staging" / payloads.safe_name(self.run_id),
        )
        self._transition(None, RunStatus.RUNNING, f"observed run of {self.job} started (SDK)")
        # Kept: if a hook fails, this very event (same id, for de-duplication) is spooled.
        self._started_event = self._lifecycle(
            LifecycleEventType.JOB_RUN_STARTED, self._started_payload()
        )
        runner.hooks.event(self._started_event)
        self._started_sent = True

    def _started_payload(self) -> dict[str, Any]:
        return payloads.started(
            producer_urn=self.producer_urn or f"urn:signalfactory:sdk:{self.job}",
            code_ref=self.code_ref,
            partition=self.partition,
            pipeline=self.pipeline,
            job_name=self.job,
            dag_run_id=self.dag_run_id,
            attempt=self.attempt,
        )

    # -- writes ------------------------------------------------------------------------
    def _write(self, frame: pl.DataFrame, layer: str) -> WriteResult:
        target = self._target
        assert target is not None
        self._writes += 1
        rank = LAYERS.index(layer)
        previous = target.store.get_certification(target.dataset.urn) if layer == "gold" else None
        ev = evaluate(target, frame, layer, self._judged, self._writes)
        published = commit(target, layer, ev, self._holds, self._writes)
        done = finalize_write(target, layer, ev.decisions, self._holds, published, previous)
        self._holds += [d for d in ev.decisions if d.holds]
        self._judged = max(self._judged, rank + 1)
        if self._rows_read is None:
            self._rows_read = ev.counts["rows_read"]
        layer_commit = published.commits.get(layer)
        return WriteResult(
            layer=layer,
            status=WriteStatus.HELD if self._holds else WriteStatus.COMMITTED,
            rows_in=frame.height,
            rows_written=layer_commit.rows if layer_commit else 0,
            rows_quarantined=published.rows_quarantined,
            quarantine_table=published.quarantine_table,
            commit_versions={name: c.version for name, c in published.commits.items()},
            certification_status=done.certification_status,
            certified_version=done.certified_version,
            evidence=tuple(done.evidence),
        )

    def _reject(self, layer: str, why: str) -> WriteResult:
        if self.strict:
            raise ConfigError(f"observe({self.dataset_urn}): {why}")
        log.error("observe_write_rejected", dataset_urn=self.dataset_urn, reason=why)
        return self.result.add(WriteResult(layer, WriteStatus.REJECTED, reason=why))

    # -- finish ------------------------------------------------------------------------
    def finish(self, exc: BaseException | None = None) -> None:
        """End the run (``__exit__`` calls this): completed, or failed with ``exc``."""
        if self._state != "started":
            return
        self._state = "finished"
        if self.result.disabled or self._inert:
            return
        try:
            if self.degradation.active or self._target is None:
                self._finish_degraded(exc)
            else:
                self._end(exc)
        except Exception as inner:
            self._degrade("finish", inner)
            self._finish_degraded(exc)
        finally:
            if self._target is not None:
                shutil.rmtree(self._target.staging_root, ignore_errors=True)
            self._close()

    def _end_payload(self, exc: BaseException | None, rows_written: int) -> LifecycleEvent:
        if exc is not None:
            return self._lifecycle(
                LifecycleEventType.JOB_RUN_FAILED,
                payloads.failed(
                    exc=exc,
                    retry_count=self.attempt,
                    partition=self.partition,
                    pipeline=self.pipeline,
                ),
            )
        return self._lifecycle(
            LifecycleEventType.JOB_RUN_COMPLETED,
            payloads.completed(
                started_at=self._started_at,
                rows_read=self._rows_read or 0,
                rows_written=rows_written,
                partition=self.partition,
                pipeline=self.pipeline,
                writes=len(self.result.writes),
            ),
        )

    def _end(self, exc: BaseException | None) -> None:
        """Close the ledger row, then JobRunCompleted or JobRunFailed through the hooks."""
        target = self._target
        assert target is not None
        run = payloads.finished_run(
            target.run, self.result, rows_read=self._rows_read or 0, exc=exc, degraded=None
        )
        target.store.update_run(run)
        if exc is None:
            reason = (
                f"completed: {run.certification_status}, {run.rows_written} rows certified, "
                f"{run.rows_quarantined} quarantined"
            )
        else:
            reason = f"run failed: {(run.error or '')[:300]}"
        self._transition(RunStatus.RUNNING, run.status, reason)
        target.hooks.event(self._end_payload(exc, run.rows_written))
        target.hooks.run_end(run)
        self.result.status = run.status

    def _finish_degraded(self, exc: BaseException | None) -> None:
        """Spool the end of the run; best effort to close its ledger row, silently."""
        self.result.status = RunStatus.FAILED if exc is not None else RunStatus.SUCCEEDED
        if not self._started_sent:
            self._spool_lifecycle(LifecycleEventType.JOB_RUN_STARTED, self._started_payload())
            self._started_sent = True
        if self._target is not None:
            run = payloads.finished_run(
                self._target.run,
                self.result,
                rows_read=self._rows_read or 0,
                exc=exc,
                degraded=self.degradation.reason,
            )
            with contextlib.suppress(Exception):  # already warned: the store may be gone
                self._target.store.update_run(run)
        self.degradation.spool_event(self._end_payload(exc, 0))

    # -- helpers -----------------------------------------------------------------------
    def _degrade(self, where: str, exc: BaseException) -> None:
        self.degradation.trip(where, exc)
        self.result.degraded = True
        self.result.reason = self.degradation.reason
        if self._state == "started" and not self._started_sent:
            if self._started_event is not None:
                self.degradation.spool_event(self._started_event)
            else:
                self._spool_lifecycle(LifecycleEventType.JOB_RUN_STARTED, self._started_payload())
            self._started_sent = True

    def _lifecycle(self, kind: LifecycleEventType, payload: dict[str, Any]) -> LifecycleEvent:
        return LifecycleEvent(kind, self.run_id, self.dataset_urn, payload)

    def _spool_lifecycle(self, kind: LifecycleEventType, payload: dict[str, Any]) -> None:
        self.degradation.spool_event(self._lifecycle(kind, payload))

    def _transition(self, old: RunStatus | None, new: RunStatus, reason: str) -> None:
        assert self._target is not None
        self._target.store.append_transition(
            Transition(
                subject=self.run_id,
                from_status=str(old) if old else None,
                to_status=str(new),
                actor=ACTOR,
                reason=reason,
            )
        )

    def _close(self) -> None:
        if self._sf is not None:
            try:
                self._sf.close()
            except Exception as exc:  # closing a dead store must not break the producer
                log.debug("observe_close_failed", error_type=type(exc).__name__)
            self._sf = None
