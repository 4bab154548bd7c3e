"""``LineageRecorder``: our runs in the lineage graph, from their lifecycle events (always on).

The job is ``job:NAMESPACE:<pipeline>``; the inputs come from ``JobRunStarted.payload["inputs"]``
(lineage node ids ``dataset:NS:NAME``, our ``ds://`` URNs, ``file://`` paths of the files read);
the output is the run's dataset (``dataset:NAMESPACE:<URN>``); the state comes from
JobRunStarted/Completed/Failed. It builds the same :class:`LineageEvent` the OpenLineage emitter
describes, so re-ingesting the emitted NDJSON gives the same graph. Recording never raises
into the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from signalfactory.core.records import (
    Evidence,
    GateResult,
    LifecycleEvent,
    LifecycleEventType,
    RunRecord,
)
from signalfactory.enforcement.catalog import CERTIFICATION
from signalfactory.knowledge.lineage_ingest import event_key
from signalfactory.knowledge.lineage_records import (
    DEFAULT_NAMESPACE,
    DatasetRef,
    LineageEvent,
    split_node_id,
)
from signalfactory.knowledge.store import SqlStore

__all__ = [
    "PRODUCER",
    "STATE_OF",
    "LineageRecorder",
    "dataset_ref",
    "graph_event",
    "nominal_start_of",
    "partition_key_of",
]

PRODUCER = "https://github.com/signalfactory/signalfactory"
STATE_OF = {
    LifecycleEventType.JOB_RUN_STARTED: "START",
    LifecycleEventType.JOB_RUN_COMPLETED: "COMPLETE",
    LifecycleEventType.JOB_RUN_FAILED: "FAIL",
}


def dataset_ref(value: str, namespace: str = DEFAULT_NAMESPACE) -> DatasetRef:
    """A lineage input: ``dataset:NS:NAME``, ``file:///path``, or one of our URNs."""
    if value.startswith("dataset:"):
        _, ns, name = split_node_id(value)
        return DatasetRef(ns, name)
    if value.startswith("file://"):
        return DatasetRef("file", value.removeprefix("file://"))
    return DatasetRef(namespace, value)


def nominal_start_of(partition: Any) -> datetime | None:
    if isinstance(partition, Mapping) and "dt" in partition:
        try:
            return datetime.fromisoformat(f"{partition['dt']}T00:00:00+00:00")
        except ValueError:
            return None
    return None


def partition_key_of(partition: Any) -> str | None:
    if isinstance(partition, Mapping) and partition:
        return ",".join(f"{k}={v}" for k, v in partition.items())
    return None


def graph_event(
    event: LifecycleEvent, namespace: str, pipeline: str, start: LifecycleEvent | None = None
) -> LineageEvent | None:
    """The graph event of one of our lifecycle events (None for DatasetWriteCommitted).

    ``start`` is the run's JobRunStarted: its inputs and partition apply to the whole run.
    """
    state = STATE_OF.get(event.event_type)
    if state is None:
        return None
    p = event.payload
    sp = (start or event).payload
    time_text = event.timestamp.isoformat()
    inputs = tuple(dataset_ref(str(i), namespace) for i in sp.get("inputs") or ())
    partition = p.get("partition") or sp.get("partition")
    return LineageEvent(
        event_key=event_key(event.run_id, state, time_text),
        run_id=event.run_id,
        event_type=state,
        event_time=event.timestamp,
        job_namespace=namespace,
        job_name=str(p.get("pipeline") or pipeline),
        producer=PRODUCER,
        inputs=inputs,
        outputs=(DatasetRef(namespace, event.dataset_urn),),
        parent_run_id=p.get("dag_run_id") or sp.get("dag_run_id"),
        nominal_start=nominal_start_of(partition),
        partition_key=partition_key_of(partition),
        error_message=str(p["failure_reason"])[:2000] if p.get("failure_reason") else None,
        source="signalfactory",
    )


class LineageRecorder:
    """Records our runs in the lineage graph (works with OpenLineage emission off)."""

    def __init__(self, store: SqlStore, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.store = store
        self.namespace = namespace
        self._started: dict[str, LifecycleEvent] = {}
        self.log = structlog.get_logger("signalfactory.lineage")

    def on_event(self, event: LifecycleEvent) -> None:
        kind = event.event_type
        if kind is LifecycleEventType.JOB_RUN_STARTED:
            self._started[event.run_id] = event
        start = self._started.get(event.run_id)
        if kind in (LifecycleEventType.JOB_RUN_COMPLETED, LifecycleEventType.JOB_RUN_FAILED):
            self._started.pop(event.run_id, None)
        pipeline = event.payload.get("pipeline") or (start.payload.get("pipeline") if start else "")
        found = graph_event(event, self.namespace, str(pipeline or "unknown"), start)
        if found is None:
            return
        try:
            self.store.record_lineage([found])
        except Exception as exc:
            self.log.warning("lineage_record_failed", run_id=event.run_id, error=type(exc).__name__)

    def on_evidence(self, evidence: Evidence) -> None:
        """Failure signatures of failed or warned gates become graph nodes linked to the run,
        so `lineage_runs_with_signature` finds every run that hit the same failure."""
        if evidence.result is GateResult.PASS or evidence.gate == CERTIFICATION:
            return
        signatures = {s for s in (evidence.failure_signature, *evidence.failure_signatures) if s}
        dataset = dataset_ref(evidence.dataset_urn, self.namespace).node_id
        try:
            for signature in sorted(signatures):
                self.store.link_failure_signature(
                    evidence.run_id, signature, dataset_id=dataset, at=evidence.timestamp
                )
        except Exception as exc:
            self.log.warning(
                "lineage_signature_failed", run_id=evidence.run_id, error=type(exc).__name__
            )

    def on_alert(self, alert: Mapping[str, Any]) -> None:
        return None

    def on_run_end(self, run: RunRecord) -> None:
        return None
