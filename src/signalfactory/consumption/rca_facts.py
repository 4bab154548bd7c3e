"""The store reads behind ``explain``: each function answers one question with records.

Kept apart from :mod:`signalfactory.consumption.rca` so the walk reads as the PRD's chain and
the queries can be tuned (and benchmarked) on their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from signalfactory.core.errors import NotFoundError
from signalfactory.core.observability import Incident, Signal, SignalKind, SignalState
from signalfactory.core.records import (
    GateResult,
    LifecycleEvent,
    LifecycleEventType,
    RunRecord,
    iso,
)
from signalfactory.knowledge import lineage
from signalfactory.knowledge.store import SqlStore


def when(ts: datetime | None) -> str:
    return "an unknown time" if ts is None else ts.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class Step:
    """One link of the chain: what kind of node, which one, what it says, and the records."""

    kind: str
    node: str
    text: str
    at: datetime | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "node": self.node,
            "text": self.text,
            "at": iso(self.at),
            "evidence": dict(self.evidence),
        }


def partition_text(partition: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in partition.items()) or "the whole table"


def partition_of(event: LifecycleEvent) -> str | None:
    """``dt=…`` of a lifecycle event, from ``partition_key`` or the ``partition`` mapping."""
    key = event.payload.get("partition_key")
    if key:
        return str(key)
    part = event.payload.get("partition")
    if isinstance(part, Mapping) and part:
        return partition_text({str(k): str(v) for k, v in part.items()})
    return None


#: How far back the walk reads a dataset's lifecycle events (runs of the incident's partition
#: and the names of the jobs writing it); a bounded, indexed read however long the history.
HISTORY = timedelta(days=21)


def _recent(
    store: SqlStore, urn: str, kind: LifecycleEventType, until: datetime
) -> list[LifecycleEvent]:
    """``kind`` events of ``urn`` in the :data:`HISTORY` before ``until``, oldest first."""
    return store.list_events_between(urn, since=until - HISTORY, until=until, event_types=[kind])


def failures(
    store: SqlStore, node: str, partition: str, *, until: datetime
) -> list[LifecycleEvent]:
    """JobRunFailed events of runs writing ``partition`` of ``node``, oldest first."""
    events = _recent(store, node, LifecycleEventType.JOB_RUN_FAILED, until)
    return [e for e in events if partition_of(e) in (partition, None)]


def rows_per_partition(events: list[LifecycleEvent]) -> list[int]:
    """Rows committed per partition, in commit order (one figure per partition)."""
    rows: dict[str, int] = {}
    for e in events:
        part = partition_of(e) or e.event_id
        rows[part] = rows.get(part, 0) + int(e.payload.get("rows_written") or 0)
    return list(rows.values())


def latest_breach(store: SqlStore, inc: Incident) -> Signal | None:
    """The newest breach signal of the incident (the one that opened or last updated it)."""
    ids = set(inc.signal_ids)
    found = [
        s
        for s in store.list_signals(
            dataset_urn=inc.dataset_urn,
            kind=inc.kind,
            state=SignalState.BREACH,
            signature=inc.signature,
            limit=10_000,
        )
        if s.signal_id in ids
    ]
    if not found:
        return None
    return max(found, key=lambda s: s.evaluated_at)


def signature_step(store: SqlStore, inc: Incident, sig: Signal | None) -> Step | None:
    """The failure signature and the gate evidence that carries it, if a gate produced it."""
    run_id = sig.run_id if sig is not None else inc.run_id
    evidence = store.list_evidence(run_id=run_id) if run_id else []
    failed = [e for e in evidence if e.result is GateResult.FAIL and e.gate != "CERTIFICATION"]
    matching = [
        e
        for e in failed
        if inc.signature == e.failure_signature or inc.signature in e.failure_signatures
    ]
    shown = matching or (failed if inc.kind is SignalKind.FRESHNESS else [])
    if not shown:
        return None
    ev = shown[0]
    certification = next((e for e in evidence if e.gate == "CERTIFICATION"), None)
    held = certification.context.get("certified_view_status") if certification else None
    quarantine = ev.context.get("quarantine_table") or (
        certification.context.get("quarantine_table") if certification else None
    )
    signatures = ", ".join(s for s in ev.failure_signatures if s) or ev.failure_signature
    text = f"gate {ev.gate} ({ev.stage}) FAILED in run {ev.run_id} with {signatures}"
    if quarantine:
        text += f"; the rows went to {quarantine}"
    if held:
        text += f"; certified view {held}"
    return Step(
        "failure_signature",
        ev.failure_signature or inc.signature,
        text,
        ev.timestamp,
        {"evidence_id": ev.evidence_id, "gate": ev.gate, "metrics": dict(ev.metrics)},
    )


def run_for(
    store: SqlStore, urn: str, run_id: str | None, partition: str | None
) -> RunRecord | None:
    """Our run behind a signal: by id, else the latest run of ``urn`` for ``partition``."""
    if run_id:
        run = store.get_run(run_id)
        if run is not None:
            return run
    if partition is None:
        return None
    for run in store.list_runs(dataset_urn=urn, limit=1000):  # newest first
        if partition_text(run.partition) == partition:
            return run
    return None


def dag_run_of(store: SqlStore, run_id: str) -> str | None:
    for e in store.list_events(run_id=run_id, event_type=LifecycleEventType.JOB_RUN_STARTED):
        dag = e.payload.get("dag_run_id")
        if dag:
            return str(dag)
    return None


def external_run(
    store: SqlStore, urn: str, partition: str | None, at: datetime
) -> tuple[LifecycleEvent | None, LifecycleEvent | None]:
    """The latest started and failed events of a run writing ``partition`` of ``urn``."""
    started = [
        e
        for e in _recent(store, urn, LifecycleEventType.JOB_RUN_STARTED, at)
        if partition_of(e) in (partition, None)
    ]
    failed = failures(store, urn, partition, until=at) if partition is not None else []
    last_start = max(started, key=lambda e: e.timestamp) if started else None
    last_fail = failed[-1] if failed else None
    if (
        last_fail is not None
        and last_start is not None
        and last_fail.run_id != last_start.run_id
        and last_start.timestamp > last_fail.timestamp
    ):
        last_fail = None  # a later attempt started after the failure
    return last_start, last_fail


def dag_run_step(store: SqlStore, dag_run_id: str) -> Step:
    tasks = lineage.dag_run(store, dag_run_id)
    failed = [t for t in tasks if t.state == "FAIL"]
    text = f"DAG run {dag_run_id}: {len(tasks)} task runs"
    if failed:
        text += "; failed: " + ", ".join(
            f"{t.job} at {t.event_time:%H:%M} UTC ({t.error or 'no message'})" for t in failed
        )
    return Step(
        "dag_run",
        dag_run_id,
        text,
        None,
        {"tasks": [{"job": t.job, "run_id": t.run_id, "state": t.state} for t in tasks]},
    )


def upstream(store: SqlStore, urn: str, depth: int | None = None) -> list[tuple[str, int]]:
    """Upstream datasets of ``urn``, nearest first (deterministic order within a depth);
    empty when the lineage graph does not know ``urn``."""
    try:
        hops = lineage.upstream(store, urn, depth)
    except NotFoundError:
        return []
    return sorted({(h.node_id, h.depth) for h in hops}, key=lambda x: (x[1], x[0]))


def deployment_steps(
    store: SqlStore, inc: Incident, run: RunRecord | None, since: datetime, until: datetime
) -> list[Step]:
    """Deployments of the dataset's pipeline between ``since`` and ``until``, newest first."""
    pipelines = {run.pipeline} if run is not None else set()
    if not pipelines:
        pipelines = {r.pipeline for r in store.list_runs(dataset_urn=inc.dataset_urn, limit=20)}
    if not pipelines:  # jobs we do not run (SDK, OpenLineage): the names their events carry
        started = _recent(store, inc.dataset_urn, LifecycleEventType.JOB_RUN_STARTED, until)
        for e in started[-20:]:
            name = e.payload.get("pipeline") or e.payload.get("job_name")
            if name:
                pipelines.add(str(name))
    steps = []
    found = [
        dep
        for p in sorted(pipelines)
        for dep in store.list_deployments(p, since=since, until=until)
    ]
    for dep in found:
        note = f" ({dep.note})" if dep.note else ""
        hours = (until - dep.recorded_at).total_seconds() / 3600
        steps.append(
            Step(
                "deployment",
                dep.deploy_ref,
                f"deploy {dep.deploy_ref} of pipeline {dep.pipeline}{note} at "
                f"{dep.recorded_at:%Y-%m-%d %H:%M} UTC, {hours:.1f} h before",
                dep.recorded_at,
                dep.to_dict(),
            )
        )
    return sorted(steps, key=lambda s: s.at or until, reverse=True)
