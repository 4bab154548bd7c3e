"""OpenLineage NDJSON ingest: RunEvents from Airflow, Spark, dbt into the lineage graph.

``ingest_openlineage(store, lines, source)`` reads one RunEvent per line and:

* validates it: invalid JSON, or a missing ``eventType``/``eventTime``/``run.runId``/
  ``job.namespace``/``job.name``, rejects the line with an error naming the source and line
  number. Rejected lines are **skipped and reported** (``IngestReport.errors``); every good line
  is kept. The CLI exits 1 when any line was rejected;
* is idempotent: each event has a key (digest of run id, event type and event time); events
  already stored change nothing, so re-ingesting a file is a no-op;
* builds the graph (datasets, jobs, runs with their ParentRunFacet DAG run, edges, column lineage
  from ``columnLineage`` facets, failure signatures) in batches of ``batch_size`` events;
* maps each new event to our lifecycle events so freshness and volume engines see external jobs:
  START → ``JobRunStarted``, COMPLETE → ``JobRunCompleted`` + one ``DatasetWriteCommitted`` per
  output (rows/bytes from ``outputStatistics``), FAIL and ABORT → ``JobRunFailed`` (reason from
  the ``errorMessage`` facet). One event per output dataset (the job node when there is none),
  with deterministic ids. Events produced by signalfactory itself (a ``signalfactory_run`` run
  facet) are not mapped: our runner already recorded them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from signalfactory.core.records import LifecycleEvent, LifecycleEventType
from signalfactory.knowledge.lineage_records import (
    DEFAULT_NAMESPACE,
    ColumnEdge,
    DatasetRef,
    LineageEvent,
    dataset_node_id,
)
from signalfactory.knowledge.models import to_utc

if TYPE_CHECKING:
    from signalfactory.knowledge.store import SqlStore

__all__ = ["IngestReport", "LineError", "ingest_openlineage", "lifecycle_events", "parse_event"]

#: The run facet our emitter adds; it carries our run id (OpenLineage run ids must be UUIDs).
OUR_RUN_FACET = "signalfactory_run"
_EVENT_TYPES = frozenset({"START", "RUNNING", "COMPLETE", "FAIL", "ABORT", "OTHER"})
_MAX_ERRORS_KEPT = 1000
#: Refresh planner statistics after an ingest of at least this many new events.
ANALYZE_AFTER = 5000


class LineError(ValueError):
    """A line that is not a valid OpenLineage RunEvent."""


@dataclass
class IngestReport:
    """What one ingest did. ``ok`` is false when any line was rejected."""

    source: str
    lines: int = 0
    events: int = 0
    new_events: int = 0
    duplicates: int = 0
    rejected: int = 0
    lifecycle_events: int = 0
    seconds: float = 0.0
    #: "SOURCE:LINE: reason" for the first rejected lines.
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "lines": self.lines,
            "events": self.events,
            "new_events": self.new_events,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "lifecycle_events": self.lifecycle_events,
            "seconds": round(self.seconds, 4),
            "events_per_s": round(self.events_per_s, 1),
            "ok": self.ok,
            "errors": list(self.errors),
        }


def ingest_openlineage(
    store: SqlStore,
    lines: Iterable[str],
    source: str,
    *,
    our_namespace: str = DEFAULT_NAMESPACE,
    batch_size: int = 2000,
) -> IngestReport:
    """Ingest NDJSON RunEvents from ``lines`` (``source`` names them in errors)."""
    report = IngestReport(source=source)
    started = time.perf_counter()
    ours = {d.urn for d in store.list_datasets()}
    batch: list[LineageEvent] = []

    def flush() -> None:
        fresh = store.record_lineage(batch)
        report.new_events += len(fresh)
        report.duplicates += len(batch) - len(fresh)
        bare = [e.job_id for e in fresh if not e.outputs]
        known = store.lineage_job_outputs(bare) if bare else {}
        mapped = [
            ev
            for e in fresh
            for ev in lifecycle_events(
                e,
                our_namespace,
                ours,
                tuple(DatasetRef(ns, name) for ns, name in known.get(e.job_id, ())),
            )
        ]
        report.lifecycle_events += store.add_events_if_new(mapped)
        batch.clear()

    for number, line in enumerate(lines, start=1):
        report.lines = number
        if not line.strip():
            continue
        try:
            batch.append(parse_event(_load(line), source))
        except LineError as exc:
            report.rejected += 1
            if len(report.errors) < _MAX_ERRORS_KEPT:
                report.errors.append(f"{source}:{number}: {exc}")
            continue
        report.events += 1
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if report.new_events >= ANALYZE_AFTER:
        store.analyze_lineage()
    report.seconds = time.perf_counter() - started
    return report


def _load(line: str) -> Mapping[str, Any]:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise LineError(f"expected a JSON object (a RunEvent), got {type(doc).__name__}")
    return doc


def _text(doc: Mapping[str, Any], *path: str) -> str:
    value: Any = doc
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value:
        raise LineError(
            f"missing {'.'.join(path)} (a RunEvent needs eventType, eventTime, run.runId, "
            "job.namespace and job.name)"
        )
    return value


def _time(value: str, what: str) -> datetime:
    try:
        return to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise LineError(f"{what} {value[:40]!r} is not an ISO-8601 time") from None


def _facets(doc: Any, key: str = "facets") -> Mapping[str, Any]:
    found = doc.get(key) if isinstance(doc, dict) else None
    return found if isinstance(found, dict) else {}


def _stats(dataset: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for holder, facet in (("outputFacets", "outputStatistics"), ("inputFacets", "inputStatistics")):
        stats = _facets(_facets(dataset, holder), facet)
        if stats:
            for key in ("rowCount", "size", "fileCount"):
                value = stats.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    out[key] = value
    return out


def _datasets(doc: Mapping[str, Any], key: str) -> tuple[DatasetRef, ...]:
    items = doc.get(key) or []
    if not isinstance(items, list):
        raise LineError(f"{key} must be a list of datasets")
    refs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise LineError(f"{key}[{i}] must be an object with namespace and name")
        refs.append(DatasetRef(_text(item, "namespace"), _text(item, "name"), _stats(item)))
    return tuple(refs)


def _columns(outputs: Sequence[Mapping[str, Any]]) -> list[ColumnEdge]:
    edges = []
    for out in outputs:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            continue
        target = dataset_node_id(str(out.get("namespace", "")), out["name"])
        fields = _facets(_facets(out), "columnLineage").get("fields")
        for name, spec in (fields or {}).items() if isinstance(fields, dict) else ():
            default = " ".join(
                str(spec.get(k, "")) for k in ("transformationType", "transformationDescription")
            ).strip()
            for src in spec.get("inputFields") or ():
                if not isinstance(src, dict) or not src.get("field"):
                    continue
                steps = [
                    ":".join(str(t.get(k)) for k in ("type", "subtype") if t.get(k))
                    for t in src.get("transformations") or ()
                    if isinstance(t, dict)
                ]
                edges.append(
                    ColumnEdge(
                        target,
                        str(name),
                        dataset_node_id(str(src.get("namespace", "")), str(src.get("name", ""))),
                        str(src["field"]),
                        ", ".join(s for s in steps if s) or default,
                    )
                )
    return edges


def _signatures(
    doc: Mapping[str, Any], error: str | None, job_name: str
) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    if error:
        head = error.split(":", 1)[0].strip().split()
        kind = head[0].rsplit(".", 1)[-1] if head else "Error"
        found.append((f"JOB_FAILED:{job_name}:{kind[:80]}", None))
    for key in ("inputs", "outputs"):
        for ds in doc.get(key) or ():
            if not isinstance(ds, dict):
                continue
            node = dataset_node_id(str(ds.get("namespace", "")), str(ds.get("name", "")))
            facets = {**_facets(ds), **_facets(ds, "inputFacets")}
            for a in _facets(facets, "dataQualityAssertions").get("assertions") or ():
                if isinstance(a, dict) and a.get("success") is False:
                    parts = [str(a.get("assertion", "assertion")), str(a.get("column") or "")]
                    found.append(("DQ_ASSERTION_FAILED:" + ":".join(p for p in parts if p), node))
    return found


def event_key(run_id: str, event_type: str, event_time: str) -> str:
    return hashlib.sha256(f"{run_id}|{event_type}|{event_time}".encode()).hexdigest()[:32]


def parse_event(doc: Mapping[str, Any], source: str) -> LineageEvent:
    """The graph's view of one RunEvent document; raises :class:`LineError` when invalid."""
    event_type = _text(doc, "eventType").upper()
    if event_type not in _EVENT_TYPES:
        raise LineError(f"eventType {event_type[:20]!r} is not one of {sorted(_EVENT_TYPES)}")
    raw_time = _text(doc, "eventTime")
    at = _time(raw_time, "eventTime")
    ol_run_id = _text(doc, "run", "runId")
    job_ns, job_name = _text(doc, "job", "namespace"), _text(doc, "job", "name")
    run_facets = _facets(doc.get("run"))
    ours = _facets(run_facets, OUR_RUN_FACET)
    run_id = str(ours.get("run_id") or ol_run_id)
    parent = _facets(run_facets, "parent")
    parent_run = ours.get("dag_run_id") or _facets(parent, "run").get("runId")
    parent_job = _facets(parent, "job")
    nominal = _facets(run_facets, "nominalTime").get("nominalStartTime")
    nominal_at = _time(nominal, "nominalStartTime") if isinstance(nominal, str) else None
    error = _facets(run_facets, "errorMessage").get("message")
    partition = ours.get("partition_key")
    if not partition and nominal_at is not None:
        partition = f"dt={nominal_at.date().isoformat()}"
    outputs = doc.get("outputs") if isinstance(doc.get("outputs"), list) else []
    return LineageEvent(
        event_key=event_key(run_id, event_type, raw_time),
        run_id=run_id,
        event_type=event_type,
        event_time=at,
        job_namespace=job_ns,
        job_name=job_name,
        producer=str(doc.get("producer") or ""),
        inputs=_datasets(doc, "inputs"),
        outputs=_datasets(doc, "outputs"),
        parent_run_id=str(parent_run) if parent_run else None,
        parent_job_id=(
            f"job:{parent_job.get('namespace', '')}:{parent_job['name']}"
            if parent_job.get("name")
            else None
        ),
        nominal_start=nominal_at,
        partition_key=str(partition) if partition else None,
        error_message=str(error)[:2000] if error else None,
        run_facets={"ol_run_id": ol_run_id} if ours else {},
        column_edges=tuple(_columns(outputs or [])),
        signatures=tuple(_signatures(doc, str(error) if error else None, job_name)),
        source=source,
    )


# lifecycle mapping


def _target(ref: DatasetRef, our_namespace: str, ours: set[str]) -> str:
    if ref.namespace == our_namespace or ref.name in ours:
        return ref.name
    return ref.node_id


def lifecycle_events(
    e: LineageEvent,
    our_namespace: str = DEFAULT_NAMESPACE,
    ours: set[str] | None = None,
    known_outputs: Sequence[DatasetRef] = (),
) -> list[LifecycleEvent]:
    """Our lifecycle events (deterministic ids) for one OpenLineage event; none for
    RUNNING/OTHER events or for our own (signalfactory_run facet).

    An event without outputs (a START or FAIL event often has none) is mapped onto
    ``known_outputs``, the datasets its job wrote before, else onto the job node itself.
    Only datasets listed in the event's own outputs get a ``DatasetWriteCommitted``.
    """
    if e.run_facets.get("ol_run_id") or e.event_type in ("RUNNING", "OTHER"):
        return []
    known = ours or set()
    targets: list[tuple[DatasetRef | None, str]] = [
        (ref, _target(ref, our_namespace, known)) for ref in e.outputs
    ]
    if not targets:
        targets = [(None, _target(ref, our_namespace, known)) for ref in known_outputs]
    if not targets:
        targets = [(None, e.job_id)]
    partition = {}
    if e.partition_key and "=" in e.partition_key:
        key, _, value = e.partition_key.partition("=")
        partition = {key: value}
    common: dict[str, Any] = {
        "partition": partition,
        "job_name": e.job_name,
        "job": e.job_id,
        "dag_run_id": e.parent_run_id,
        "producer_urn": e.producer,
        "source": "openlineage",
    }
    out: list[LifecycleEvent] = []
    for ref, urn in targets:
        if e.event_type == "START":
            scheduled = e.nominal_start.isoformat() if e.nominal_start else None
            payload = {**common, "scheduled_time": scheduled, "code_ref": None}
            out.append(_make(e, LifecycleEventType.JOB_RUN_STARTED, urn, payload))
        elif e.event_type == "COMPLETE":
            stats = ref.stats if ref is not None else {}
            payload = {
                **common,
                "duration": None,
                "rows_read": None,
                "rows_written": stats.get("rowCount"),
            }
            out.append(_make(e, LifecycleEventType.JOB_RUN_COMPLETED, urn, payload))
            if ref is not None:
                commit = {
                    **common,
                    "rows_written": stats.get("rowCount"),
                    "bytes_written": stats.get("size"),
                    "files_added": stats.get("fileCount"),
                    "commit_version": None,
                    "partition_key": e.partition_key or "",
                }
                out.append(_make(e, LifecycleEventType.DATASET_WRITE_COMMITTED, urn, commit))
        else:  # FAIL, ABORT
            reason = e.error_message or f"run {e.event_type.lower()}ed (no errorMessage facet)"
            payload = {**common, "failure_reason": reason, "retry_count": 0}
            out.append(_make(e, LifecycleEventType.JOB_RUN_FAILED, urn, payload))
    return out


def _make(
    e: LineageEvent, kind: LifecycleEventType, urn: str, payload: dict[str, Any]
) -> LifecycleEvent:
    return LifecycleEvent(
        event_type=kind,
        run_id=e.run_id,
        dataset_urn=urn,
        payload=payload,
        timestamp=e.event_time,
        event_id="evt_ol_"
        + hashlib.sha256(f"{e.event_key}|{kind}|{urn}".encode()).hexdigest()[:24],
    )
