"""The lineage graph's public API: resolve nodes, walk upstream/downstream, find runs.

For RCA (``explain``), incident blast radius and the ``lineage`` CLI. Every function takes the
store first; ``node`` is one of our dataset URNs (``ds://…``), a Marquez node id
(``dataset:NAMESPACE:NAME``) or a dataset name known to the graph.

* :func:`resolve_node` → the node id, or ``NotFoundError`` naming close matches;
* :func:`upstream` / :func:`downstream` → ``list[LineageHop]`` (nearest first, one per dataset,
  with the job(s) between; ``depth=None`` walks up to ``MAX_DEPTH`` hops);
* :func:`runs_of_dataset` → runs that read or wrote a dataset (``direction`` "in"/"out");
* :func:`latest_runs_writing` → runs that wrote a dataset (optionally one partition), newest
  first: job, run id, state, event time, error message, DAG run id;
* :func:`dag_run` → the task runs of one DAG run (ParentRunFacet), in start order;
* :func:`column_lineage` → column edges into and out of a dataset;
* :func:`ingest_openlineage` (re-exported) → NDJSON RunEvents into the graph.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import TYPE_CHECKING

from signalfactory.core.errors import NotFoundError
from signalfactory.knowledge.lineage_ingest import IngestReport, ingest_openlineage
from signalfactory.knowledge.lineage_records import (
    DEFAULT_NAMESPACE,
    ColumnEdge,
    LineageHop,
    LineageRun,
    dataset_node_id,
)

if TYPE_CHECKING:
    from signalfactory.knowledge.store import SqlStore

__all__ = [
    "ColumnEdge",
    "IngestReport",
    "LineageHop",
    "LineageRun",
    "column_lineage",
    "dag_run",
    "downstream",
    "ingest_openlineage",
    "latest_runs_writing",
    "resolve_node",
    "runs_of_dataset",
    "upstream",
]


def resolve_node(store: SqlStore, node: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The graph's node id for ``node`` (URN, ``dataset:NS:NAME``/``job:NS:NAME`` or name).

    One of our registered dataset URNs always resolves (to ``dataset:NAMESPACE:URN``), even
    before any lineage was recorded for it; anything else unknown raises ``NotFoundError``
    naming close matches.
    """
    candidates = [node]
    if not node.startswith(("dataset:", "job:", "signature:")):
        candidates.append(dataset_node_id(namespace, node))
    for candidate in candidates:
        if store.lineage_node(candidate) is not None:
            return candidate
    if store.get_dataset(node) is not None:
        return dataset_node_id(namespace, node)  # ours, with no lineage recorded yet
    named = store.lineage_nodes_named(node)
    if len(named) == 1:
        return str(named[0]["node_id"])
    if len(named) > 1:
        ids = ", ".join(str(r["node_id"]) for r in named[:5])
        raise NotFoundError(
            f"lineage node {node!r} is ambiguous: datasets in several namespaces have that "
            f"name ({ids}); give the full node id dataset:NAMESPACE:NAME"
        )
    raise NotFoundError(_unknown(store, node))


def _unknown(store: SqlStore, node: str) -> str:
    tail = node.rsplit(":", 1)[-1].rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    close = store.lineage_nodes_like(tail) if len(tail) >= 3 else []
    if not close:
        ids = store.lineage_node_ids()
        close = difflib.get_close_matches(node, ids, n=5, cutoff=0.6) if len(ids) <= 5000 else []
    hint = f"close matches: {', '.join(close)}. " if close else ""
    return (
        f"no lineage node {node!r} in the store: {hint}Give one of our dataset URNs (ds://…) "
        "or an OpenLineage node id dataset:NAMESPACE:NAME; lineage is recorded by our runs "
        "and by `signalfactory lineage ingest FILE` (OpenLineage NDJSON)"
    )


def upstream(
    store: SqlStore, node: str, depth: int | None = None, namespace: str = DEFAULT_NAMESPACE
) -> list[LineageHop]:
    """Datasets ``node`` is derived from, nearest first (``depth`` hops at most)."""
    return store.lineage_walk(resolve_node(store, node, namespace), upstream=True, depth=depth)


def downstream(
    store: SqlStore, node: str, depth: int | None = None, namespace: str = DEFAULT_NAMESPACE
) -> list[LineageHop]:
    """Datasets derived from ``node`` (its blast radius), nearest first."""
    return store.lineage_walk(resolve_node(store, node, namespace), upstream=False, depth=depth)


def runs_of_dataset(
    store: SqlStore,
    node: str,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    direction: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> list[LineageRun]:
    """Runs that read (``direction="in"``), wrote (``"out"``) or either, newest first."""
    dataset = resolve_node(store, node, namespace)
    return store.lineage_runs(dataset_id=dataset, direction=direction, since=since, until=until)


def latest_runs_writing(
    store: SqlStore,
    dataset_node: str,
    partition: str | None = None,
    *,
    limit: int = 10,
    namespace: str = DEFAULT_NAMESPACE,
) -> list[LineageRun]:
    """The newest runs that wrote ``dataset_node`` (``partition`` like "dt=2026-02-15")."""
    dataset = resolve_node(store, dataset_node, namespace)
    runs = store.lineage_runs(dataset_id=dataset, direction="out", partition_key=partition)
    return runs[:limit]


def dag_run(store: SqlStore, dag_run_id: str) -> list[LineageRun]:
    """The task runs whose ParentRunFacet names ``dag_run_id``, in start order."""
    runs = store.lineage_runs(parent_run_id=dag_run_id)
    return sorted(runs, key=lambda r: (r.started_at or r.event_time, r.run_id))


def column_lineage(
    store: SqlStore, node: str, namespace: str = DEFAULT_NAMESPACE
) -> list[ColumnEdge]:
    """Column edges into ``node`` (its fields ← inputs) and out of it."""
    return store.lineage_columns(resolve_node(store, node, namespace))
