"""The last link of the RCA chain: which upstream dataset, if any, caused the incident.

Upstream datasets up to :data:`UPSTREAM_DEPTH` hops are checked for the incident's partition
with ONE query for all of their commits and failures (a wide graph has hundreds of upstream
datasets; a query each would miss the 100 ms target). For each:

* **never written** — no serving-layer commit of the partition; a failed job run for it is
  named with its time and error;
* **arrived short** — committed, but :data:`SHORT_PARTITION_PCT` or more below the mean of its
  previous partitions (at least 3 of them);
* otherwise healthy. Direct inputs are listed as such; healthy ones further up are counted.

The deepest upstream dataset with a problem is the root cause: a problem further up explains
the ones below it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from signalfactory.consumption import rca_facts as facts
from signalfactory.consumption.rca_facts import Step, when
from signalfactory.core.records import LifecycleEvent, LifecycleEventType
from signalfactory.knowledge.store import SqlStore

__all__ = ["SHORT_PARTITION_PCT", "UPSTREAM_DEPTH", "walk_upstream"]

#: An upstream partition whose rows fall this far below its recent mean is called short.
SHORT_PARTITION_PCT = 30.0
#: How many hops up the lineage graph the walk checks.
UPSTREAM_DEPTH = 3
#: How much history of each upstream dataset is read (its recent partitions' volumes).
HISTORY = timedelta(days=21)

_COMMITTED = LifecycleEventType.DATASET_WRITE_COMMITTED
_FAILED = LifecycleEventType.JOB_RUN_FAILED


def _serving(events: Sequence[LifecycleEvent]) -> list[LifecycleEvent]:
    return [
        e
        for e in events
        if e.event_type is _COMMITTED and e.payload.get("layer") in (None, "certified")
    ]


def _failures(events: Sequence[LifecycleEvent], partition: str) -> list[LifecycleEvent]:
    return [
        e for e in events if e.event_type is _FAILED and facts.partition_of(e) in (partition, None)
    ]


def _failure_text(f: LifecycleEvent) -> str:
    job = f.payload.get("job_name") or f.run_id
    reason = f.payload.get("failure_reason") or "no reason given"
    return f"job {job} failed at {when(f.timestamp)} with {reason}"


def _problem(node: str, partition: str, events: Sequence[LifecycleEvent]) -> Step | None:
    commits = _serving(events)
    here = [c for c in commits if facts.partition_of(c) == partition]
    failed = _failures(events, partition)
    if not here:
        if failed:
            f = failed[-1]
            text = f"upstream {node} partition {partition} was never written: {_failure_text(f)}"
            return Step("upstream_dataset", node, text, f.timestamp, dict(f.payload))
        if commits:  # it has history, but not this partition
            text = f"upstream {node} partition {partition} was never written (no run committed it)"
            return Step("upstream_dataset", node, text, None, {"partition": partition})
        return None
    rows = sum(int(c.payload.get("rows_written") or 0) for c in here)
    before = facts.rows_per_partition([c for c in commits if c.timestamp < here[0].timestamp])
    before = before[-7:]
    if len(before) < 3:
        return None
    mean = statistics.fmean(before)
    if mean <= 0 or (mean - rows) / mean * 100 < SHORT_PARTITION_PCT:
        return None
    pct = round((rows - mean) / mean * 100)
    text = (
        f"upstream {node} partition {partition} arrived short: {rows:,} rows against "
        f"{mean:,.0f} on average over its previous {len(before)} partitions ({pct}%)"
    )
    if failed:
        text += f"; {_failure_text(failed[-1])}"
    evidence = {"rows": rows, "baseline_mean": mean, "partition": partition}
    return Step("upstream_dataset", node, text, here[-1].timestamp, evidence)


def _healthy(
    node: str, depth: int, partition: str | None, events: Sequence[LifecycleEvent]
) -> Step:
    written = [
        c for c in _serving(events) if partition is None or facts.partition_of(c) == partition
    ]
    if written:
        last = written[-1]
        rows = sum(int(c.payload.get("rows_written") or 0) for c in written)
        text = f"upstream {node} (depth {depth}) was written" + (
            f" for {partition}: {rows:,} rows at {when(last.timestamp)}" if partition else ""
        )
        return Step("upstream_dataset", node, text, last.timestamp, {"depth": depth, "rows": rows})
    text = (
        f"upstream {node} (depth {depth}) has no recorded writes to check "
        "(files read directly, or a dataset no job reports on)"
    )
    return Step("upstream_dataset", node, text, None, {"depth": depth})


def walk_upstream(
    store: SqlStore, urn: str, partition: str | None, at: datetime
) -> tuple[list[Step], Step | None]:
    """The upstream steps of the chain (nearest first) and the root cause among them."""
    hops = facts.upstream(store, urn, UPSTREAM_DEPTH)
    if not hops:
        return [], None
    events = store.list_events_of(
        [node for node, _ in hops], since=at - HISTORY, until=at, event_types=[_COMMITTED, _FAILED]
    )
    by_node: dict[str, list[LifecycleEvent]] = defaultdict(list)
    for e in events:
        by_node[e.dataset_urn].append(e)
    steps: list[Step] = []
    quiet: list[str] = []
    root: Step | None = None
    for node, depth in hops:
        mine = by_node.get(node, [])
        problem = _problem(node, partition, mine) if partition is not None else None
        if problem is not None:
            steps.append(problem)
            root = problem  # hops are nearest first: a deeper problem replaces a nearer one
        elif depth == 1:
            steps.append(_healthy(node, depth, partition, mine))
        else:
            quiet.append(node)
    if quiet:
        text = (
            f"{len(quiet)} more upstream dataset(s) at depth 2–{UPSTREAM_DEPTH} show no problem"
            + (f" for {partition}" if partition else "")
        )
        steps.append(Step("upstream_dataset", f"{len(quiet)} more", text, None, {"nodes": quiet}))
    return steps, root
