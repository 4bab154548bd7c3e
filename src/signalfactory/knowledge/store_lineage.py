"""The lineage part of ``SqlStore``: the lineage graph (OpenLineage runs, datasets, jobs, edges).

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``, ``_insert``, ``_upsert``, ``_select``) and is not meant to be used on its own.

Writes are bulk and idempotent: :meth:`LineageStoreMixin.record_lineage` skips events whose
``event_key`` is already stored, merges the rest into the run rows, and upserts nodes and edges
with ``INSERT ... ON CONFLICT`` (edges keep the newest run). Traversal is one recursive CTE over
the materialised dataset→dataset adjacency (``lineage_dataset_edges``) on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, text
from sqlalchemy.engine import RowMapping

from signalfactory.core.records import LifecycleEvent, utcnow
from signalfactory.knowledge import models as m
from signalfactory.knowledge import models_lineage as ml
from signalfactory.knowledge.lineage_records import (
    ColumnEdge,
    LineageEvent,
    LineageHop,
    LineageRun,
    signature_node_id,
    split_node_id,
)
from signalfactory.knowledge.plumbing import StorePlumbing
from signalfactory.knowledge.store_lineage_write import (
    bulk,
    existing,
    new_events,
    node_row,
    upsert_nodes,
    write_events,
)

__all__ = ["MAX_DEPTH", "LineageStoreMixin"]

#: "Unlimited" traversal depth: deeper graphs are cut here (a guard against cycles).
MAX_DEPTH = 256

_REACH = """
WITH RECURSIVE reach(node) AS (
    SELECT CAST(:start AS VARCHAR)
    UNION
    SELECT e.{far} FROM lineage_dataset_edges e JOIN reach r ON e.{near} = r.node
)
SELECT e.{near}, e.{far}, e.job_id, n.namespace, n.name
FROM reach r
JOIN lineage_dataset_edges e ON e.{near} = r.node
LEFT JOIN lineage_nodes n ON n.node_id = e.{far}
"""

_WALK = """
WITH RECURSIVE walk(node, depth) AS (
    SELECT {far}, 1 FROM lineage_dataset_edges WHERE {near} = :start
    UNION
    SELECT e.{far}, w.depth + 1
    FROM lineage_dataset_edges e JOIN walk w ON e.{near} = w.node
    WHERE w.depth < :max_depth
),
best AS (
    SELECT node, MIN(depth) AS depth FROM walk WHERE node <> :start GROUP BY node
),
prev AS (
    SELECT node, depth FROM best
    UNION ALL SELECT CAST(:start AS VARCHAR), 0
)
SELECT b.node, b.depth, e.job_id, e.{near} AS via, n.namespace, n.name
FROM best b
JOIN lineage_dataset_edges e ON e.{far} = b.node
JOIN prev p ON p.node = e.{near} AND p.depth = b.depth - 1
LEFT JOIN lineage_nodes n ON n.node_id = b.node
"""


class LineageStoreMixin(StorePlumbing):
    """Methods of ``SqlStore`` for the lineage graph (OpenLineage runs, datasets, jobs, edges)."""

    # writes

    def record_lineage(self, events: Sequence[LineageEvent]) -> list[LineageEvent]:
        """Add ``events`` to the graph in one transaction; return those not recorded before.

        Re-recording an event (same ``event_key``) changes nothing.
        """
        with self._conn(write=True) as conn:
            fresh = new_events(conn, events)
            if not fresh:
                return []
            write_events(conn, fresh)
        return fresh

    def analyze_lineage(self) -> None:
        """Refresh the planner statistics of the lineage tables (PostgreSQL; no-op elsewhere).

        Right after a bulk load the tables have no statistics and PostgreSQL plans the
        recursive walk badly (seconds instead of milliseconds) until autovacuum runs.
        """
        with self._conn(write=True) as conn:
            if conn.dialect.name == "postgresql":
                for name in sorted(ml.TABLE_NAMES):
                    conn.execute(text(f'ANALYZE "{name}"'))

    def add_events_if_new(self, events: Sequence[LifecycleEvent]) -> int:
        """Insert lifecycle events whose ``event_id`` is not stored yet; return how many were."""
        if not events:
            return 0
        t = m.lifecycle_events
        ids = [e.event_id for e in events]
        with self._conn(write=True) as conn:
            known = existing(conn, t.c.event_id, ids)
            rows, seen = [], set(known)
            for event in events:
                if event.event_id not in seen:
                    seen.add(event.event_id)
                    rows.append(
                        {
                            "event_id": event.event_id,
                            "event_type": str(event.event_type),
                            "run_id": event.run_id,
                            "dataset_urn": event.dataset_urn,
                            "payload": m.json_ready(event.payload),
                            "timestamp": event.timestamp,
                        }
                    )
            if rows:
                bulk(conn, t, rows, ["event_id"])
        return len(rows)

    def link_failure_signature(
        self,
        run_id: str,
        signature: str,
        *,
        dataset_id: str | None = None,
        source: str = "evidence",
        at: datetime | None = None,
    ) -> None:
        """Link failure ``signature`` (a node ``signature:…``) to ``run_id``; idempotent."""
        when = at or utcnow()
        node = signature_node_id(signature)
        with self._conn(write=True) as conn:
            upsert_nodes(conn, [node_row(node, "signature", "", signature, when)])
            row = {
                "run_id": run_id,
                "signature_id": node,
                "dataset_id": dataset_id,
                "source": source,
                "at": when,
            }
            bulk(conn, ml.lineage_run_signatures, [row], ["run_id", "signature_id"])

    # reads

    def lineage_node(self, node_id: str) -> RowMapping | None:
        rows = self._select(ml.lineage_nodes, ml.lineage_nodes.c.node_id == node_id)
        return rows[0] if rows else None

    def lineage_nodes_named(self, name: str, kind: str = "dataset") -> list[RowMapping]:
        t = ml.lineage_nodes
        return self._select(t, t.c.name == name, t.c.kind == kind)

    def lineage_nodes_like(self, fragment: str, limit: int = 5) -> list[str]:
        """Dataset node ids containing ``fragment`` (for "did you mean" hints)."""
        t = ml.lineage_nodes
        stmt = select(t.c.node_id).where(
            t.c.node_id.contains(fragment, autoescape=True), t.c.kind == "dataset"
        )
        with self._conn() as conn:
            return list(conn.execute(stmt.order_by(t.c.node_id).limit(limit)).scalars())

    def lineage_node_ids(self, kind: str = "dataset") -> list[str]:
        t = ml.lineage_nodes
        with self._conn() as conn:
            return list(conn.execute(select(t.c.node_id).where(t.c.kind == kind)).scalars())

    def lineage_walk(self, node_id: str, *, upstream: bool, depth: int | None) -> list[LineageHop]:
        """Datasets upstream (or downstream) of ``node_id``, nearest first, one per dataset.

        Unlimited walks run one recursive query for the reachable set (``UNION`` keeps each
        dataset once, so cycles and diamonds cost nothing) and fetch the edges inside it; the
        depths come from a breadth-first pass in Python. Depth-limited walks track the depth
        in the recursive query itself and stop at ``depth``.
        """
        near, far = ("downstream", "upstream") if upstream else ("upstream", "downstream")
        limit = MAX_DEPTH if depth is None else max(0, min(depth, MAX_DEPTH))
        if limit == 0:
            return []
        rows: Sequence[Any]
        with self._conn() as conn:
            if conn.dialect.name == "postgresql":
                # Recursive CTEs get huge row estimates; JIT compiling them costs more than
                # the walk itself. Local to this read-only transaction.
                conn.execute(text("SET LOCAL jit = off"))
            if depth is None:
                sql = text(_REACH.format(near=near, far=far))
                edges = conn.execute(sql, {"start": node_id}).all()
                rows = _breadth_first(node_id, edges)
            else:
                sql = text(_WALK.format(near=near, far=far))
                rows = conn.execute(sql, {"start": node_id, "max_depth": limit}).all()
        hops: dict[str, tuple[int, str, str, list[str], list[str]]] = {}
        for node, level, job, via, namespace, name in rows:
            if node not in hops:
                if namespace is None or name is None:  # a node the graph only names by id
                    _, namespace, name = split_node_id(node)
                hops[node] = (int(level), namespace, name, [], [])
            _, _, _, jobs, vias = hops[node]
            if job not in jobs:
                jobs.append(job)
            if via not in vias:
                vias.append(via)
        # Sorted here, not in SQL: string collation differs between backends.
        return sorted(
            (
                LineageHop(node, ns, nm, level, tuple(sorted(jobs)), tuple(sorted(vias)))
                for node, (level, ns, nm, jobs, vias) in hops.items()
            ),
            key=lambda hop: (hop.depth, hop.node_id),
        )

    def lineage_runs(
        self,
        *,
        run_ids: Iterable[str] | None = None,
        dataset_id: str | None = None,
        direction: str | None = None,
        parent_run_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        partition_key: str | None = None,
    ) -> list[LineageRun]:
        """Runs matching every given filter, newest event first."""
        r, io = ml.lineage_runs, ml.lineage_run_io
        stmt = select(r)
        if dataset_id is not None:
            sub = select(io.c.run_id).where(io.c.dataset_id == dataset_id)
            if direction is not None:
                sub = sub.where(io.c.direction == direction)
            stmt = stmt.where(r.c.run_id.in_(sub))
        if run_ids is not None:
            stmt = stmt.where(r.c.run_id.in_(list(run_ids)))
        if parent_run_id is not None:
            stmt = stmt.where(r.c.parent_run_id == parent_run_id)
        if since is not None:
            stmt = stmt.where(r.c.event_time >= since)
        if until is not None:
            stmt = stmt.where(r.c.event_time <= until)
        if partition_key is not None:
            stmt = stmt.where(r.c.partition_key == partition_key)
        stmt = stmt.order_by(r.c.event_time.desc(), r.c.run_id)
        with self._conn() as conn:
            return [_run(row) for row in conn.execute(stmt).mappings()]

    def lineage_job_outputs(self, job_ids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        """(namespace, name) of the datasets each job is known to write (from past runs)."""
        e, n = ml.lineage_edges, ml.lineage_nodes
        ids = list(dict.fromkeys(job_ids))
        found: dict[str, list[tuple[str, str]]] = {}
        if not ids:
            return found
        stmt = (
            select(e.c.src_id, n.c.namespace, n.c.name)
            .join(n, n.c.node_id == e.c.dst_id)
            .where(e.c.src_id.in_(ids), n.c.kind == "dataset")
        )
        with self._conn() as conn:
            for job, namespace, name in conn.execute(stmt):
                found.setdefault(job, []).append((namespace, name))
        return {job: sorted(refs) for job, refs in found.items()}

    def lineage_run_datasets(self, run_id: str) -> list[RowMapping]:
        io = ml.lineage_run_io
        return self._select(io, io.c.run_id == run_id, order_by=(io.c.direction, io.c.dataset_id))

    def lineage_columns(self, dataset_id: str) -> list[ColumnEdge]:
        """Column lineage into ``dataset_id`` (its fields) and out of it (fields it feeds)."""
        t = ml.lineage_column_edges
        where = or_(t.c.dataset_id == dataset_id, t.c.input_dataset_id == dataset_id)
        order = (t.c.dataset_id, t.c.field, t.c.input_dataset_id, t.c.input_field)
        rows = self._select(t, where, order_by=order)
        return [
            ColumnEdge(
                r["dataset_id"],
                r["field"],
                r["input_dataset_id"],
                r["input_field"],
                r["transformation"],
            )
            for r in rows
        ]

    def lineage_runs_with_signature(self, signature: str) -> list[LineageRun]:
        """Runs linked to failure ``signature`` (ingested or linked later), newest first."""
        t = ml.lineage_run_signatures
        ids = select(t.c.run_id).where(t.c.signature_id == signature_node_id(signature))
        with self._conn() as conn:
            run_ids = list(conn.execute(ids).scalars())
        return self.lineage_runs(run_ids=run_ids) if run_ids else []

    def lineage_signatures(self, run_id: str) -> list[RowMapping]:
        t = ml.lineage_run_signatures
        return self._select(t, t.c.run_id == run_id, order_by=(t.c.signature_id,))


def _breadth_first(start: str, edges: Sequence[Any]) -> list[tuple[Any, ...]]:
    """(node, depth, job, via, namespace, name) of each edge that reaches a node first."""
    out_of: dict[str, list[tuple[str, str, str | None, str | None]]] = {}
    for near_node, far_node, job, namespace, name in edges:
        out_of.setdefault(near_node, []).append((far_node, job, namespace, name))
    depth_of = {start: 0}
    frontier, rows, level = [start], [], 0
    while frontier:
        level += 1
        reached: list[str] = []
        for node in frontier:
            for far_node, job, namespace, name in out_of.get(node, ()):
                seen = depth_of.get(far_node)
                if seen is None:
                    depth_of[far_node] = level
                    reached.append(far_node)
                if seen is None or seen == level:
                    rows.append((far_node, level, job, node, namespace, name))
        frontier = reached
    return [r for r in rows if r[0] != start]


def _run(row: RowMapping) -> LineageRun:
    return LineageRun(
        run_id=row["run_id"],
        job_id=row["job_id"],
        state=row["state"],
        event_time=row["event_time"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        nominal_start=row["nominal_start"],
        partition_key=row["partition_key"],
        parent_run_id=row["parent_run_id"],
        parent_job_id=row["parent_job_id"],
        error_message=row["error_message"],
        producer=row["producer"],
        facets=row["facets"] or {},
    )
