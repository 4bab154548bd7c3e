"""Run hooks for lineage: record our runs in the graph, and emit them as OpenLineage events.

* :class:`LineageRecorder` (always on; defined in ``lineage_recorder``, re-exported here) turns
  our lifecycle events into graph events: the job
  ``job:NAMESPACE:<pipeline>``, inputs from ``JobRunStarted.payload["inputs"]`` (node ids
  ``dataset:NS:NAME``, ``ds://`` URNs, ``file://`` paths), the run's dataset URN as output.
* :class:`OpenLineageEmitter` (on when ``settings.openlineage_url`` is set) sends START and
  COMPLETE/FAIL RunEvents through openlineage-python: schema, outputStatistics,
  dataQualityAssertions (one per gate evidence), dataQualityMetrics and our
  ``signalfactory_certification`` facet. ``openlineage_url`` is ``http(s)://host`` (HTTP
  transport, ``/api/v1/lineage``), ``file:///path.ndjson`` (append, one event per line) or
  ``console``. Emission failures are logged once and never raised into the run.

Both build the same :class:`LineageEvent` for a run, so re-ingesting the emitted NDJSON with
``ingest_openlineage`` gives the graph the recorder built.
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attr
import structlog
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    RunFacet,
    data_quality_assertions_dataset,
    data_quality_metrics_dataset,
    error_message_run,
    nominal_time_run,
    output_statistics_output_dataset,
    parent_run,
    schema_dataset,
)
from openlineage.client.serde import Serde
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import HttpConfig, HttpTransport
from openlineage.client.transport.transport import Transport

from signalfactory.core.errors import ConfigError
from signalfactory.core.records import (
    Evidence,
    GateResult,
    LifecycleEvent,
    LifecycleEventType,
    RunRecord,
)
from signalfactory.knowledge.lineage_ingest import OUR_RUN_FACET
from signalfactory.knowledge.lineage_records import (
    DEFAULT_NAMESPACE,
)
from signalfactory.knowledge.store import SqlStore
from signalfactory.pipeline.lineage_recorder import (
    PRODUCER,
    STATE_OF,
    LineageRecorder,
    dataset_ref,
    nominal_start_of,
    partition_key_of,
)

__all__ = ["LineageRecorder", "OpenLineageEmitter", "make_transport"]

_WARN_DISPOSITIONS = frozenset({"WARNED", "RECORDED", "WARNING_ONLY", "ROWS_QUARANTINED"})


class StderrTransport(Transport):
    """``console``: one event per line on stderr (the library's console transport logs at INFO,
    which is invisible unless logging is configured)."""

    kind = "console"

    def emit(self, event: Any) -> None:
        sys.stderr.write(Serde.to_json(event) + "\n")


#: HTTP emission must not hold a run up for long when the collector is down.
_HTTP_RETRY = {
    "total": 2,
    "read": 2,
    "connect": 2,
    "backoff_factor": 0.2,
    "status_forcelist": [500, 502, 503, 504],
    "allowed_methods": ["HEAD", "POST"],
}


def make_transport(url: str) -> Transport:
    """The openlineage-python transport for ``url`` (http(s)://, file://PATH, or console)."""
    if url == "console":
        return StderrTransport()
    if url.startswith("file://"):
        path = Path(url.removeprefix("file://")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=str(path), append=True))
    if url.startswith(("http://", "https://")):
        return HttpTransport(HttpConfig(url=url, timeout=3.0, retry=dict(_HTTP_RETRY)))
    raise ConfigError(
        f"OpenLineage URL {url.split('@')[-1]!r} is not supported: use http(s)://HOST[:PORT] "
        "(sent to /api/v1/lineage), file:///PATH.ndjson or console"
    )


@attr.define
class CertificationRunFacet(RunFacet):
    """Our custom run facet: the certified view's state after this run."""

    status: str
    certified_version: int | None = attr.field(default=None)
    quarantine_table: str | None = attr.field(default=None)
    rows_quarantined: int | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return f"{PRODUCER}/spec/SignalFactoryCertificationRunFacet.json"


@attr.define
class SignalFactoryRunFacet(RunFacet):
    """Our run id (OpenLineage run ids are UUIDs), pipeline and partition."""

    run_id: str
    pipeline: str
    partition_key: str | None = attr.field(default=None)
    dag_run_id: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return f"{PRODUCER}/spec/SignalFactoryRunFacet.json"


class OpenLineageEmitter:
    """Emits our runs as OpenLineage RunEvents; never raises into the run."""

    def __init__(
        self,
        url: str,
        store: SqlStore | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        transport: Transport | None = None,
    ) -> None:
        self.url = url
        self.store = store
        self.namespace = namespace
        self.log = structlog.get_logger("signalfactory.openlineage")
        self._failed_once = False
        self._evidence: dict[str, list[Evidence]] = {}
        self._started: dict[str, LifecycleEvent] = {}
        self._commits: dict[str, dict[str, Any]] = {}
        self.client: OpenLineageClient | None = None
        try:
            self.client = OpenLineageClient(transport=transport or make_transport(url))
        except Exception as exc:
            self._warn("openlineage_transport_failed", exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        if not self._failed_once:
            self._failed_once = True
            self.log.warning(what, url=self.url.split("@")[-1], error=type(exc).__name__)

    def close(self) -> None:
        """Release the transport (HTTP sessions); safe to call twice."""
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close(timeout=5.0)
            except Exception as exc:
                self._warn("openlineage_close_failed", exc)

    def on_evidence(self, evidence: Evidence) -> None:
        self._evidence.setdefault(evidence.run_id, []).append(evidence)

    def on_alert(self, alert: Mapping[str, Any]) -> None:
        return None

    def on_run_end(self, run: RunRecord) -> None:
        return None

    def on_event(self, event: LifecycleEvent) -> None:
        try:
            self._on_event(event)
        except Exception as exc:
            self._warn("openlineage_emit_failed", exc)

    def _on_event(self, event: LifecycleEvent) -> None:
        kind = event.event_type
        if kind is LifecycleEventType.DATASET_WRITE_COMMITTED:
            layer = str(event.payload.get("layer") or "")
            if layer in ("certified", "gold") or event.run_id not in self._commits:
                self._commits[event.run_id] = dict(event.payload)
            return
        if kind is LifecycleEventType.JOB_RUN_STARTED:
            self._started[event.run_id] = event
        start = self._started.get(event.run_id, event)
        built = self.build(event, start)
        if kind is not LifecycleEventType.JOB_RUN_STARTED:
            self._started.pop(event.run_id, None)
            self._evidence.pop(event.run_id, None)
            self._commits.pop(event.run_id, None)
        if built is not None and self.client is not None:
            self.client.emit(built)

    def build(self, event: LifecycleEvent, start: LifecycleEvent) -> RunEvent | None:
        """The RunEvent for ``event`` (``start`` is its run's JobRunStarted)."""
        state = STATE_OF.get(event.event_type)
        if state is None:
            return None
        p, sp = event.payload, start.payload
        pipeline = str(p.get("pipeline") or sp.get("pipeline") or "unknown")
        partition = p.get("partition") or sp.get("partition")
        dag = p.get("dag_run_id") or sp.get("dag_run_id")
        dag_run_id = str(dag) if dag else None
        run_facets: dict[str, RunFacet] = {
            OUR_RUN_FACET: SignalFactoryRunFacet(
                run_id=event.run_id,
                pipeline=pipeline,
                partition_key=partition_key_of(partition),
                dag_run_id=dag_run_id,
            )
        }
        if dag_run_id:
            run_facets["parent"] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=_uuid(dag_run_id)),
                job=parent_run.Job(
                    namespace=self.namespace, name=str(sp.get("dag_id") or pipeline)
                ),
            )
        nominal = nominal_start_of(partition)
        if nominal is not None:
            run_facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
                nominalStartTime=nominal.isoformat()
            )
        if state == "FAIL":
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=str(p.get("failure_reason") or "run failed"),
                programmingLanguage="PYTHON",
                stackTrace=str(p.get("stack_trace")) if p.get("stack_trace") else None,
            )
        if state == "COMPLETE" and self.store is not None:
            run_facets.update(self._certification(event.run_id))
        inputs = [
            InputDataset(namespace=r.namespace, name=r.name)
            for r in (dataset_ref(str(i), self.namespace) for i in sp.get("inputs") or ())
        ]
        output = OutputDataset(
            namespace=self.namespace,
            name=event.dataset_urn,
            facets=self._dataset_facets(event, state),
            outputFacets=self._output_facets(event.run_id, state),
        )
        return RunEvent(
            eventType=RunState[state],
            eventTime=event.timestamp.isoformat(),
            run=Run(runId=_uuid(event.run_id), facets=run_facets),
            job=Job(namespace=self.namespace, name=pipeline),
            producer=PRODUCER,
            inputs=inputs,
            outputs=[output],
        )

    def _certification(self, run_id: str) -> dict[str, RunFacet]:
        assert self.store is not None
        run = self.store.get_run(run_id)
        if run is None:
            return {}
        return {
            "signalfactory_certification": CertificationRunFacet(
                status=str(run.certification_status),
                certified_version=run.certified_version,
                quarantine_table=run.quarantine_table,
                rows_quarantined=run.rows_quarantined,
            )
        }

    def _dataset_facets(self, event: LifecycleEvent, state: str) -> dict[str, Any]:
        facets: dict[str, Any] = {}
        fields = self._schema_fields(event.dataset_urn)
        if fields:
            facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=fields)
        if state == "START":
            return facets
        evidence = self._evidence.get(event.run_id, [])
        if evidence:
            facets["dataQualityAssertions"] = (
                data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
                    assertions=[_assertion(e) for e in evidence]
                )
            )
        commit = self._commits.get(event.run_id)
        rows = event.payload.get("rows_written")
        if commit is not None or rows is not None:
            facets["dataQualityMetrics"] = (
                data_quality_metrics_dataset.DataQualityMetricsDatasetFacet(
                    columnMetrics=_null_counts(evidence),
                    rowCount=_int(commit.get("rows_written") if commit else rows),
                    bytes=_int(commit.get("bytes_written")) if commit else None,
                    fileCount=_int(commit.get("files_added")) if commit else None,
                )
            )
        return facets

    def _output_facets(self, run_id: str, state: str) -> dict[str, Any]:
        commit = self._commits.get(run_id)
        if state != "COMPLETE" or commit is None:
            return {}
        return {
            "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=_int(commit.get("rows_written")),
                size=_int(commit.get("bytes_written")),
                fileCount=_int(commit.get("files_added")),
            )
        }

    def _schema_fields(self, urn: str) -> list[schema_dataset.SchemaDatasetFacetFields]:
        if self.store is None:
            return []
        try:
            record = self.store.get_dataset(urn)
        except Exception:
            return []
        constraints = (record.policy.get("schema") or {}) if record is not None else {}
        items = constraints.get("constraints") if isinstance(constraints, Mapping) else None
        return [
            schema_dataset.SchemaDatasetFacetFields(name=str(c["field"]), type=str(c.get("type")))
            for c in items or ()
            if isinstance(c, Mapping) and c.get("field")
        ]


def _uuid(run_id: str) -> str:
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return str(uuid.UUID(hashlib.sha256(run_id.encode()).hexdigest()[:32]))


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _assertion(e: Evidence) -> data_quality_assertions_dataset.Assertion:
    disposition = str(e.context.get("disposition", ""))
    warn = e.result is GateResult.WARN or disposition in _WARN_DISPOSITIONS
    column = e.context.get("column") or e.metrics.get("column")
    return data_quality_assertions_dataset.Assertion(
        assertion=f"{e.stage}:{e.gate}",
        success=e.result is not GateResult.FAIL,
        column=str(column) if column else None,
        severity="warn" if warn else "error",
        name=e.failure_signature,
    )


def _null_counts(
    evidence: list[Evidence],
) -> dict[str, data_quality_metrics_dataset.ColumnMetrics]:
    out: dict[str, data_quality_metrics_dataset.ColumnMetrics] = {}
    for e in evidence:
        counts = e.metrics.get("null_counts")
        if isinstance(counts, Mapping):
            for column, count in counts.items():
                if isinstance(count, int):
                    out[str(column)] = data_quality_metrics_dataset.ColumnMetrics(nullCount=count)
    return out
