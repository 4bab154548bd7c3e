"""The small Python API: everything the CLI does, from code.

```python
from signalfactory import SignalFactory, Pipeline

sf = SignalFactory(home="/tmp/sf")
sf.register("dataset.yaml", "policy_bundle.yaml")
outcome = sf.run("pipeline.yaml", partition={"dt": "2026-02-15"})
print(outcome.run.certification_status, sf.certified("ds://curated/orders_enriched").path)
```
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signalfactory.core.errors import ConfigError, NotFoundError
from signalfactory.core.records import (
    CertificationState,
    DatasetRecord,
    DeadLetter,
    DeadLetterStatus,
    Transition,
    utcnow,
)
from signalfactory.enforcement.pii import load_pii_key
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.pipeline.bootstrap import register, register_files
from signalfactory.pipeline.hooks import LogAlerter, RunHook, StoreRecorder
from signalfactory.pipeline.lineage_recorder import LineageRecorder
from signalfactory.pipeline.progress import Listener
from signalfactory.pipeline.queue import RunQueue, RunRequest
from signalfactory.pipeline.runner import PipelineRunner, RunOutcome
from signalfactory.processing.alerting import sinks_from_settings
from signalfactory.processing.baseline_hook import BaselineRoller
from signalfactory.processing.bus import BusPublisher
from signalfactory.processing.service import EvaluationReport, evaluate_once
from signalfactory.production.engines import EngineCache
from signalfactory.production.formats import check_chunk_size
from signalfactory.production.manifest import expand_partitions
from signalfactory.production.spec import PipelineSpec, load_pipeline
from signalfactory.settings import Settings

if TYPE_CHECKING:
    from signalfactory.consumption.rca import Explanation
    from signalfactory.pipeline.openlineage_hook import OpenLineageEmitter


class SignalFactory:
    """One home (store + lake) and the operations on it."""

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        database_url: str | None = None,
        settings: Settings | None = None,
        progress_listener: Listener | None = None,
    ) -> None:
        """``progress_listener`` gets every live :class:`RunProgress` of the runs started here
        (chunks, rows, %, rows/s, ETA, RSS, CPU); it may be called from a helper thread."""
        overrides: dict[str, Any] = {}
        if home is not None:
            overrides["home"] = Path(home)
        if database_url is not None:
            overrides["database_url"] = database_url
        base = settings or Settings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self._store: SqlStore | None = None
        self.engines = EngineCache()
        self.alerter = LogAlerter()
        self.progress_listener = progress_listener
        self._bus_publisher: BusPublisher | None = None
        self._openlineage: OpenLineageEmitter | None = None

    @property
    def store(self) -> SqlStore:
        if self._store is None:
            self.settings.home.mkdir(parents=True, exist_ok=True)
            self._store = open_store(self.settings.store_url)
        return self._store

    def close(self) -> None:
        self.engines.close()
        if self._bus_publisher is not None:
            self._bus_publisher.close()
            self._bus_publisher = None
        if self._openlineage is not None:
            self._openlineage.close()
            self._openlineage = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> SignalFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bootstrap -----------------------------------------------------------------------
    def register(
        self, dataset: str | Path | DatasetSpec, policy: str | Path | PolicyBundle
    ) -> tuple[DatasetRecord, CertificationState]:
        if isinstance(dataset, DatasetSpec) and isinstance(policy, PolicyBundle):
            return register(self.store, dataset, policy, self.settings.lake_root)
        if isinstance(dataset, DatasetSpec) or isinstance(policy, PolicyBundle):
            raise ConfigError("pass both dataset and policy as objects, or both as file paths")
        return register_files(self.store, Path(dataset), Path(policy), self.settings.lake_root)

    # -- run-the-engine ------------------------------------------------------------------
    def _pii_key(self) -> bytes:
        settings = self.settings
        fallback = settings.home / "pii.key"
        if settings.pii_key is None and settings.pii_key_file is None and fallback.is_file():
            settings = settings.model_copy(update={"pii_key_file": fallback})
        return load_pii_key(settings)

    def hooks(self) -> list[RunHook]:
        """The run lifecycle hooks: the store, the baseline roller, alerts (in that order)."""
        if self._bus_publisher is None:
            # One per SignalFactory: a NATS bus runs a thread. A bus that is down never fails
            # here or in a run; events spool under home/spool and are delivered later.
            self._bus_publisher = BusPublisher.open(
                self.settings.bus_url, store=self.store, spool_dir=self.settings.spool_dir
            )
        namespace = self.settings.openlineage_namespace
        hooks: list[RunHook] = [
            StoreRecorder(self.store),
            self._bus_publisher,
            LineageRecorder(self.store, namespace),  # our runs in the lineage graph, always
            BaselineRoller(self.store, self.settings.home / "baselines"),
            self.alerter,
        ]
        if self.settings.openlineage_url:
            if self._openlineage is None:
                # Imported only when emission is on: openlineage-python costs ~0.2 s to load.
                from signalfactory.pipeline.openlineage_hook import OpenLineageEmitter

                self._openlineage = OpenLineageEmitter(
                    self.settings.openlineage_url, self.store, namespace
                )
            hooks.insert(3, self._openlineage)
        return hooks

    def runner(self) -> PipelineRunner:
        return PipelineRunner(
            self.store,
            self.settings.lake_root,
            self.settings.home / "staging",
            pii_key=self._pii_key,
            hooks=self.hooks(),
            engines=self.engines,
            progress_listener=self.progress_listener,
        )

    def run(
        self,
        pipeline: str | Path | PipelineSpec,
        partition: Mapping[str, str] | None = None,
        *,
        engine: str | None = None,
        chunk_size: int | None = None,
        engine_address: str | None = None,
    ) -> RunOutcome:
        if isinstance(pipeline, PipelineSpec):
            spec = pipeline.model_copy(
                update={
                    k: v
                    for k, v in {
                        "engine": engine,
                        "chunk_size": chunk_size,
                        "engine_address": engine_address,
                    }.items()
                    if v is not None
                }
            )
            check_chunk_size(spec.chunk_size, f"pipeline {spec.pipeline}")
        else:
            spec = load_pipeline(
                Path(pipeline),
                {"engine": engine, "chunk_size": chunk_size, "engine_address": engine_address},
            )
        return self.runner().run(spec, partition or {})

    def backfill(
        self, pipeline: str | Path | PipelineSpec, date_range: str | Path, **overrides: Any
    ) -> list[RunOutcome]:
        """Run every partition a date-range manifest lists, oldest first.

        ``{"partition_key": "dt", "start": "2026-02-01", "end": "2026-02-07"}``; partitions
        already processed with the same input are returned as they are (idempotent).
        """
        return [
            self.run(pipeline, partition, **overrides)
            for partition in expand_partitions(Path(date_range))
        ]

    def resume(self, run_id: str) -> RunOutcome:
        """Resume a crashed or failed run: re-run its pipeline file for its partition."""
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFoundError(
                f"run {run_id} does not exist in {self.store.display_url}; list runs with "
                "`signalfactory runs`."
            )
        started = self.store.list_events(run_id=run_id, event_type="JobRunStarted")
        source = next((e.payload.get("pipeline_file") for e in reversed(started)), None)
        if not source:
            raise ConfigError(
                f"run {run_id} was started from Python, not from a pipeline file; resume it by "
                "calling SignalFactory.run with the same pipeline and partition."
            )
        spec = load_pipeline(Path(str(source)))
        return self.runner().run(spec, dict(run.partition), resume_of=run_id)

    # -- dead letters --------------------------------------------------------------------
    def _dead_letter(self, dead_letter_id: str) -> DeadLetter:
        letter = self.store.get_dead_letter(dead_letter_id)
        if letter is None:
            raise NotFoundError(
                f"dead letter {dead_letter_id} does not exist; list them with "
                "`signalfactory dlq list`."
            )
        return letter

    def _set_dead_letter(self, letter: DeadLetter, status: DeadLetterStatus, actor: str) -> None:
        if letter.status is not DeadLetterStatus.OPEN:
            raise ConfigError(
                f"dead letter {letter.dead_letter_id} is {letter.status}, not OPEN; only open "
                "dead letters can be replayed or discarded."
            )
        self.store.set_dead_letter_status(letter.dead_letter_id, status)
        self.store.append_transition(
            Transition(
                subject=letter.dead_letter_id,
                from_status=str(letter.status),
                to_status=str(status),
                actor=actor,
                reason=f"chunk {letter.chunk_index} of run {letter.run_id}",
            )
        )

    def replay_dead_letter(self, dead_letter_id: str, actor: str = "api") -> RunOutcome:
        """Run the dead-lettered chunk again within its run, then re-publish the partition."""
        letter = self._dead_letter(dead_letter_id)
        run = self.store.get_run(letter.run_id)
        started = self.store.list_events(run_id=letter.run_id, event_type="JobRunStarted")
        source = next((e.payload.get("pipeline_file") for e in reversed(started)), None)
        if run is None or not source:
            raise ConfigError(
                f"dead letter {dead_letter_id}: its run {letter.run_id} was started from Python; "
                "replay it by calling SignalFactory.run again with the same pipeline."
            )
        self._set_dead_letter(letter, DeadLetterStatus.REPLAYED, actor)
        spec = load_pipeline(Path(str(source)))
        return self.runner().run(spec, dict(run.partition), replay=run.run_id)

    def discard_dead_letter(self, dead_letter_id: str, actor: str = "api") -> DeadLetter:
        letter = self._dead_letter(dead_letter_id)
        self._set_dead_letter(letter, DeadLetterStatus.DISCARDED, actor)
        return self._dead_letter(dead_letter_id)

    # -- queued runs ---------------------------------------------------------------------
    def queue(self, *, max_concurrent: int = 1, name: str = "default") -> RunQueue[RunOutcome]:
        """Runs submitted by several callers, highest priority first, ``max_concurrent`` at once.

        ```python
        with sf.queue(max_concurrent=2) as q:
            done = q.submit(RunRequest("pipeline.yaml", {"dt": "2026-02-15"}), priority="high")
        ```
        """
        return RunQueue(self._run_request, max_concurrent=max_concurrent, name=name)

    def _run_request(self, request: RunRequest) -> RunOutcome:
        return self.run(
            request.pipeline,
            request.partition,
            engine=request.engine,
            chunk_size=request.chunk_size,
        )

    # -- signals, incidents, lineage -----------------------------------------------------
    def evaluate_signals(self, at: datetime | None = None) -> EvaluationReport:
        """Evaluate every dataset's policies as of ``at`` (default now): store the signals,
        open or resolve incidents and alert the configured sinks."""
        instant = utcnow() if at is None else at
        return evaluate_once(self.store, instant, sinks_from_settings(self.settings))

    def explain(self, incident_id: str) -> Explanation:
        """Why an incident happened: the chain from incident to root cause (PRD FR-6)."""
        from signalfactory.consumption.rca import explain

        return explain(self.store, incident_id)

    # -- queries -------------------------------------------------------------------------
    def certified(self, dataset_urn: str) -> CertificationState:
        state = self.store.get_certification(dataset_urn)
        if state is None:
            known = ", ".join(d.urn for d in self.store.list_datasets()) or "none yet"
            raise NotFoundError(
                f"dataset {dataset_urn} is not registered (registered: {known}). Register it "
                "with `signalfactory register dataset.yaml --policy policy_bundle.yaml`."
            )
        return state


Pipeline = PipelineSpec

__all__ = ["Pipeline", "SignalFactory"]
