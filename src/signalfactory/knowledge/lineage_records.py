"""Records of the lineage graph: normalised run events, hops, runs and column edges.

A :class:`LineageEvent` is one OpenLineage RunEvent reduced to what the graph keeps; both the
NDJSON ingest and our own runs (``LineageRecorder``) produce them, so a run recorded live and
the same run re-ingested from its emitted OpenLineage events build the same graph.

Node ids follow Marquez: ``dataset:NAMESPACE:NAME``, ``job:NAMESPACE:NAME``; failure
signatures are ``signature:SIGNATURE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from signalfactory.core.records import iso

__all__ = [
    "DEFAULT_NAMESPACE",
    "TERMINAL_STATES",
    "ColumnEdge",
    "DatasetRef",
    "LineageEvent",
    "LineageHop",
    "LineageRun",
    "dataset_node_id",
    "job_node_id",
    "signature_node_id",
    "split_node_id",
]

#: The OpenLineage namespace of our own datasets and jobs (``settings.openlineage_namespace``).
DEFAULT_NAMESPACE = "signalfactory"
#: OpenLineage event types that end a run.
TERMINAL_STATES = frozenset({"COMPLETE", "FAIL", "ABORT"})


def dataset_node_id(namespace: str, name: str) -> str:
    return f"dataset:{namespace}:{name}"


def job_node_id(namespace: str, name: str) -> str:
    return f"job:{namespace}:{name}"


def signature_node_id(signature: str) -> str:
    return f"signature:{signature}"


def split_node_id(node_id: str) -> tuple[str, str, str]:
    """``(kind, namespace, name)`` of a node id; a namespace may hold ``://`` (``s3://bucket``).

    ``dataset:s3://lake:raw/orders`` → ``("dataset", "s3://lake", "raw/orders")``. An
    ambiguous id (a namespace with a port) is better looked up in the store, which keeps the
    namespace and name of every node.
    """
    kind, _, rest = node_id.partition(":")
    scheme_end = rest.find("://")
    start = scheme_end + 3 if scheme_end != -1 and scheme_end < rest.find(":") + 1 else 0
    cut = rest.find(":", start)
    if cut == -1:
        return kind, "", rest
    return kind, rest[:cut], rest[cut + 1 :]


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """An input or output dataset of one event, with its statistics when the event had them."""

    namespace: str
    name: str
    #: ``rowCount``, ``size`` and ``fileCount`` from outputStatistics/inputStatistics.
    stats: Mapping[str, Any] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return dataset_node_id(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class ColumnEdge:
    """Column lineage: ``dataset_id.field`` is derived from ``input_dataset_id.input_field``."""

    dataset_id: str
    field: str
    input_dataset_id: str
    input_field: str
    transformation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset_id,
            "field": self.field,
            "input_dataset": self.input_dataset_id,
            "input_field": self.input_field,
            "transformation": self.transformation,
        }


@dataclass(frozen=True, slots=True)
class LineageEvent:
    """One RunEvent as the graph keeps it (see :mod:`signalfactory.knowledge.lineage_ingest`)."""

    #: Idempotency key: a digest of run id, event type and event time.
    event_key: str
    run_id: str
    #: START | RUNNING | COMPLETE | FAIL | ABORT | OTHER
    event_type: str
    event_time: datetime
    job_namespace: str
    job_name: str
    producer: str = ""
    inputs: tuple[DatasetRef, ...] = ()
    outputs: tuple[DatasetRef, ...] = ()
    #: From the ParentRunFacet: the DAG run of a task run, and the DAG (job) itself.
    parent_run_id: str | None = None
    parent_job_id: str | None = None
    nominal_start: datetime | None = None
    #: "dt=2026-02-15" when the event tells the partition (or its nominal start date).
    partition_key: str | None = None
    error_message: str | None = None
    run_facets: Mapping[str, Any] = field(default_factory=dict)
    column_edges: tuple[ColumnEdge, ...] = ()
    #: (failure signature, dataset node id or None) pairs found in the event.
    signatures: tuple[tuple[str, str | None], ...] = ()
    #: Where the event came from: a file name, or "signalfactory" for our own runs.
    source: str = ""

    @property
    def job_id(self) -> str:
        return job_node_id(self.job_namespace, self.job_name)


@dataclass(frozen=True, slots=True)
class LineageHop:
    """One dataset reached by a traversal, ``depth`` hops away from the start node."""

    node_id: str
    namespace: str
    name: str
    depth: int
    #: The job(s) between this dataset and the one(s) ``depth - 1`` hops away.
    jobs: tuple[str, ...]
    #: The dataset(s) ``depth - 1`` hops away it connects to (the start node at depth 1).
    via: tuple[str, ...]

    @property
    def job(self) -> str | None:
        return self.jobs[0] if self.jobs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "namespace": self.namespace,
            "name": self.name,
            "depth": self.depth,
            "jobs": list(self.jobs),
            "via": list(self.via),
        }


@dataclass(frozen=True, slots=True)
class LineageRun:
    """A run of the graph: the merged state of all its events."""

    run_id: str
    job_id: str
    state: str
    event_time: datetime
    started_at: datetime | None
    ended_at: datetime | None
    nominal_start: datetime | None
    partition_key: str | None
    #: The DAG run (ParentRunFacet) this task run belongs to, and its job.
    parent_run_id: str | None
    parent_job_id: str | None
    error_message: str | None
    producer: str
    facets: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dag_run_id(self) -> str | None:
        return self.parent_run_id

    @property
    def job_name(self) -> str:
        return split_node_id(self.job_id)[2]

    @property
    def job(self) -> str:
        """The job's name (``daily_orders.ingest_orders``); ``job_id`` is the node id."""
        return self.job_name

    @property
    def error(self) -> str | None:
        return self.error_message

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job_id,
            "job_name": self.job_name,
            "state": self.state,
            "event_time": iso(self.event_time),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "nominal_start": iso(self.nominal_start),
            "partition_key": self.partition_key,
            "dag_run_id": self.parent_run_id,
            "parent_job": self.parent_job_id,
            "error_message": self.error_message,
            "producer": self.producer,
        }
