"""Bulk, idempotent writes of the lineage graph (the write half of ``LineageStoreMixin``).

Every function takes the open connection of one transaction. Inserts are
``INSERT ... ON CONFLICT`` on SQLite and PostgreSQL alike, in chunks; edges and nodes keep the
newest run/time (``WHERE excluded.updated_at >= table.updated_at``); run rows are merged in
Python from the stored row and the new events (state of the newest event, first start, last
end, parent run, error).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from signalfactory.knowledge import models as m
from signalfactory.knowledge import models_lineage as ml
from signalfactory.knowledge.lineage_records import (
    TERMINAL_STATES,
    LineageEvent,
    signature_node_id,
)

__all__ = ["bulk", "existing", "new_events", "node_row", "upsert_nodes", "write_events"]

_CHUNK = 500
_RANK = {"START": 0, "RUNNING": 1, "COMPLETE": 2, "FAIL": 2, "ABORT": 2}


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _dialect_insert(conn: Connection, table: Table) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def bulk(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    update: Sequence[str] = (),
    newer: str | None = None,
) -> None:
    """Insert ``rows``; on a key conflict do nothing, or update ``update`` (when ``newer`` is)."""
    if not rows:
        return
    for part in _chunks(rows):
        stmt = _dialect_insert(conn, table)
        if update:
            where = None if newer is None else stmt.excluded[newer] >= table.c[newer]
            stmt = stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={c: stmt.excluded[c] for c in update},
                where=where,
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        conn.execute(stmt, list(part))


def existing(conn: Connection, column: Any, values: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for part in _chunks(list(dict.fromkeys(values))):
        found.update(conn.execute(select(column).where(column.in_(part))).scalars())
    return found


def new_events(conn: Connection, events: Sequence[LineageEvent]) -> list[LineageEvent]:
    known = existing(conn, ml.lineage_run_events.c.event_key, [e.event_key for e in events])
    fresh: list[LineageEvent] = []
    for event in events:
        if event.event_key not in known:
            known.add(event.event_key)
            fresh.append(event)
    return fresh


def node_row(node_id: str, kind: str, namespace: str, name: str, at: datetime) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "first_seen": at,
        "last_seen": at,
    }


def upsert_nodes(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        old = by_id.get(row["node_id"])
        if old is None:
            by_id[row["node_id"]] = dict(row)
        else:
            old["first_seen"] = min(old["first_seen"], row["first_seen"])
            old["last_seen"] = max(old["last_seen"], row["last_seen"])
    bulk(
        conn,
        ml.lineage_nodes,
        list(by_id.values()),
        ["node_id"],
        update=["last_seen"],
        newer="last_seen",
    )


def _newest(rows: Iterable[dict[str, Any]], keys: Sequence[str], at: str) -> list[dict[str, Any]]:
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        if key not in best or row[at] >= best[key][at]:
            best[key] = row
    return list(best.values())


def write_events(conn: Connection, events: Sequence[LineageEvent]) -> None:
    nodes: list[dict[str, Any]] = []
    io: dict[tuple[str, str, str], dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    ds_edges: list[dict[str, Any]] = []
    columns: list[dict[str, Any]] = []
    signatures: list[dict[str, Any]] = []
    for e in events:
        at, job = e.event_time, e.job_id
        nodes.append(node_row(job, "job", e.job_namespace, e.job_name, at))
        for direction, refs in (("in", e.inputs), ("out", e.outputs)):
            for ref in refs:
                nodes.append(node_row(ref.node_id, "dataset", ref.namespace, ref.name, at))
                key = (e.run_id, ref.node_id, direction)
                stats = dict(io[key]["stats"]) if key in io else {}
                stats.update(ref.stats)
                io[key] = {
                    "run_id": e.run_id,
                    "dataset_id": ref.node_id,
                    "direction": direction,
                    "stats": stats,
                }
                src, dst = (ref.node_id, job) if direction == "in" else (job, ref.node_id)
                edges.append(
                    {"src_id": src, "dst_id": dst, "last_run_id": e.run_id, "updated_at": at}
                )
        for i in e.inputs:
            for o in e.outputs:
                if i.node_id != o.node_id:
                    ds_edges.append(
                        {
                            "upstream": i.node_id,
                            "downstream": o.node_id,
                            "job_id": job,
                            "last_run_id": e.run_id,
                            "updated_at": at,
                        }
                    )
        for c in e.column_edges:
            columns.append(
                {
                    "dataset_id": c.dataset_id,
                    "field": c.field,
                    "input_dataset_id": c.input_dataset_id,
                    "input_field": c.input_field,
                    "transformation": c.transformation,
                    "last_run_id": e.run_id,
                }
            )
        for signature, dataset in e.signatures:
            node = signature_node_id(signature)
            nodes.append(node_row(node, "signature", "", signature, at))
            signatures.append(
                {
                    "run_id": e.run_id,
                    "signature_id": node,
                    "dataset_id": dataset,
                    "source": e.source or "openlineage",
                    "at": at,
                }
            )
    upsert_nodes(conn, nodes)
    _merge_runs(conn, events)
    bulk(
        conn,
        ml.lineage_run_io,
        list(io.values()),
        ["run_id", "dataset_id", "direction"],
        update=["stats"],
    )
    bulk(
        conn,
        ml.lineage_edges,
        _newest(edges, ("src_id", "dst_id"), "updated_at"),
        ["src_id", "dst_id"],
        update=["last_run_id", "updated_at"],
        newer="updated_at",
    )
    ds_keys = ("upstream", "downstream", "job_id")
    bulk(
        conn,
        ml.lineage_dataset_edges,
        _newest(ds_edges, ds_keys, "updated_at"),
        ds_keys,
        update=["last_run_id", "updated_at"],
        newer="updated_at",
    )
    col_keys = ("dataset_id", "field", "input_dataset_id", "input_field")
    uniq_cols = list({tuple(c[k] for k in col_keys): c for c in columns}.values())
    bulk(
        conn, ml.lineage_column_edges, uniq_cols, col_keys, update=["transformation", "last_run_id"]
    )
    uniq_sigs = list({(s["run_id"], s["signature_id"]): s for s in signatures}.values())
    bulk(conn, ml.lineage_run_signatures, uniq_sigs, ["run_id", "signature_id"])
    bulk(
        conn,
        ml.lineage_run_events,
        [
            {
                "event_key": e.event_key,
                "run_id": e.run_id,
                "event_type": e.event_type,
                "event_time": e.event_time,
                "source": e.source,
            }
            for e in events
        ],
        ["event_key"],
    )


def _merge_runs(conn: Connection, events: Sequence[LineageEvent]) -> None:
    t = ml.lineage_runs
    ids = list(dict.fromkeys(e.run_id for e in events))
    runs: dict[str, dict[str, Any]] = {}
    for part in _chunks(ids):
        for row in conn.execute(select(t).where(t.c.run_id.in_(part))).mappings():
            runs[row["run_id"]] = dict(row)
    for e in sorted(events, key=lambda ev: ev.event_time):
        run = runs.get(e.run_id)
        if run is None:
            run = runs[e.run_id] = {
                "run_id": e.run_id,
                "job_id": e.job_id,
                "state": e.event_type,
                "event_time": e.event_time,
                "started_at": None,
                "ended_at": None,
                "nominal_start": None,
                "partition_key": None,
                "parent_run_id": None,
                "parent_job_id": None,
                "error_message": None,
                "producer": e.producer,
                "facets": {},
            }
        _merge(run, e)
    rows = list(runs.values())
    keys = [c.name for c in t.columns if c.name != "run_id"]
    bulk(conn, t, rows, ["run_id"], update=keys)


def _merge(run: dict[str, Any], e: LineageEvent) -> None:
    rank = _RANK.get(e.event_type)
    if rank is not None:
        current = m.to_utc(run["event_time"])
        if e.event_time > current or (
            e.event_time == current and rank >= _RANK.get(run["state"], -1)
        ):
            run["state"], run["event_time"] = e.event_type, e.event_time
    if e.event_type == "START" and (
        run["started_at"] is None or e.event_time < m.to_utc(run["started_at"])
    ):
        run["started_at"] = e.event_time
    if e.event_type in TERMINAL_STATES and (
        run["ended_at"] is None or e.event_time > m.to_utc(run["ended_at"])
    ):
        run["ended_at"] = e.event_time
    for column, value in (
        ("nominal_start", e.nominal_start),
        ("partition_key", e.partition_key),
        ("parent_run_id", e.parent_run_id),
        ("parent_job_id", e.parent_job_id),
        ("error_message", e.error_message),
        ("producer", e.producer or None),
    ):
        if value is not None:
            run[column] = value
    if e.run_facets:
        run["facets"] = {**(run["facets"] or {}), **m.json_ready(e.run_facets)}
