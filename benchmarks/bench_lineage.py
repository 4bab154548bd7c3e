"""Lineage graph at scale: ``upstream``/``downstream`` latency and OpenLineage ingest rate.

The graph is a layered DAG generated from a seed: ``LAYERS`` layers of datasets, one job per
dataset after the first layer reading 1–4 datasets of the layers above (mostly the one right
above, near its own position — teams build on their own domain — with 5% random cross-domain
reads), and daily runs of every job (START + COMPLETE events) until ``runs`` runs exist. It is
written through the store API (``record_lineage``, bulk batches). Then:

* ``upstream``/``downstream`` (``signalfactory.knowledge.lineage``) p50/p95 over sampled nodes,
  unlimited depth and depth 3 (upstream from the last layers, downstream from the first);
* ``ingest_openlineage`` of a generated NDJSON (one more day of runs) in events/s, lifecycle
  mapping included;
* ``explain`` (the RCA walk: incident → signal → run → DAG run → upstream datasets, three hops,
  their commits and failures) p50/p95 on a volume incident of each sampled late dataset, for
  the partition just ingested.

Targets: 10,000 datasets / 100,000 runs, upstream and explain p95 < 100 ms (Marquez: 10–15 s
reported for its lineage API).
``python -m benchmarks.bench_lineage [--quick] [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from signalfactory.consumption.rca import explain
from signalfactory.core.observability import (
    Incident,
    IncidentStatus,
    Severity,
    Signal,
    SignalKind,
    SignalState,
)
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.knowledge.lineage import downstream, ingest_openlineage, upstream
from signalfactory.knowledge.lineage_records import DatasetRef, LineageEvent

LAYERS = 20
NAMESPACE = "s3://bench-lake"
JOB_NAMESPACE = "airflow"
DAY0 = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
_SEED = uuid.UUID(int=42)


def _name(layer: int, i: int) -> str:
    return f"layer{layer:02d}/table_{i:05d}"


def build_dag(datasets: int, seed: int = 7) -> dict[str, list[str]]:
    """output dataset name → its input dataset names (one job per output)."""
    rng = random.Random(seed)
    width = max(1, datasets // LAYERS)
    inputs: dict[str, list[str]] = {}
    for layer in range(1, LAYERS):
        for i in range(width):
            chosen: set[str] = set()
            for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
                if rng.random() < 0.05:
                    src_layer, j = rng.randrange(0, layer), rng.randrange(width)
                else:
                    src_layer = layer - 1 if rng.random() < 0.8 else max(0, layer - 2)
                    j = min(width - 1, max(0, i + rng.randint(-12, 12)))
                chosen.add(_name(src_layer, j))
            inputs[_name(layer, i)] = sorted(chosen)
    return inputs


def _run_id(job: str, day: int) -> str:
    return str(uuid.uuid5(_SEED, f"{job}/{day}"))


def _events(job: str, srcs: list[str], day: int) -> list[LineageEvent]:
    run_id = _run_id(job, day)
    start = DAY0 + timedelta(days=day, minutes=hash(job) % 600)
    refs_in = tuple(DatasetRef(NAMESPACE, s) for s in srcs)
    out = (DatasetRef(NAMESPACE, job, {"rowCount": 1000 + day, "size": 100_000}),)
    common: dict[str, Any] = {
        "run_id": run_id,
        "job_namespace": JOB_NAMESPACE,
        "job_name": job,
        "inputs": refs_in,
        "outputs": out,
        "partition_key": f"dt={(DAY0 + timedelta(days=day)).date()}",
        "source": "bench",
    }
    return [
        LineageEvent(event_key=f"{run_id}/S", event_type="START", event_time=start, **common),
        LineageEvent(
            event_key=f"{run_id}/C",
            event_type="COMPLETE",
            event_time=start + timedelta(minutes=9),
            **common,
        ),
    ]


def populate(store: SqlStore, dag: dict[str, list[str]], runs: int, batch: int = 4000) -> int:
    """Daily runs of every job until ``runs`` runs are recorded; returns the days used."""
    jobs = sorted(dag)
    buffer: list[LineageEvent] = []
    made, day = 0, 0
    while made < runs:
        for job in jobs:
            if made >= runs:
                break
            buffer.extend(_events(job, dag[job], day))
            made += 1
            if len(buffer) >= batch:
                store.record_lineage(buffer)
                buffer = []
        day += 1
    if buffer:
        store.record_lineage(buffer)
    return day


def ndjson(dag: dict[str, list[str]], day: int, limit: int) -> list[str]:
    lines: list[str] = []
    for job in sorted(dag)[: max(1, limit // 2)]:
        run_id = _run_id(job, day)
        at = DAY0 + timedelta(days=day)
        for kind, when in (("START", at), ("COMPLETE", at + timedelta(minutes=9))):
            doc: dict[str, Any] = {
                "eventType": kind,
                "eventTime": when.isoformat(),
                "producer": "https://github.com/apache/airflow",
                "run": {
                    "runId": run_id,
                    "facets": {"nominalTime": {"nominalStartTime": at.isoformat()}},
                },
                "job": {"namespace": JOB_NAMESPACE, "name": job},
                "inputs": [{"namespace": NAMESPACE, "name": s} for s in dag[job]],
                "outputs": [
                    {
                        "namespace": NAMESPACE,
                        "name": job,
                        "outputFacets": {"outputStatistics": {"rowCount": 1000, "size": 9000}},
                    }
                ],
            }
            lines.append(json.dumps(doc))
    return lines


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def _time_walks(store: SqlStore, nodes: list[str], up: bool, depth: int | None) -> dict[str, float]:
    walk = upstream if up else downstream
    samples, sizes = [], []
    for node in nodes:
        started = time.perf_counter()
        hops = walk(store, f"dataset:{NAMESPACE}:{node}", depth)
        samples.append(time.perf_counter() - started)
        sizes.append(len(hops))
    return {**_percentiles(samples), "mean_hops": round(statistics.mean(sizes), 1)}


def _time_explain(store: SqlStore, nodes: list[str], day: int) -> dict[str, float]:
    """Open a volume incident on each node for partition ``day``, then time ``explain``."""
    at = DAY0 + timedelta(days=day + 1)
    partition = f"dt={(DAY0 + timedelta(days=day)).date()}"
    ids = []
    for i, node in enumerate(dict.fromkeys(nodes)):
        urn = f"dataset:{NAMESPACE}:{node}"
        sig = Signal(urn, SignalKind.VOLUME, SignalState.BREACH, "VOLUME_ANOMALY",
                     Severity.CRITICAL, at, "bench", partition=partition)  # fmt: skip
        store.add_signals([sig])
        inc_id = f"inc_bench_{i}"
        store.add_incident(
            Incident(
                inc_id,
                urn,
                SignalKind.VOLUME,
                "VOLUME_ANOMALY",
                Severity.CRITICAL,
                IncidentStatus.OPEN,
                at,
                at,
                "bench",
                (sig.signal_id,),
                partition,
            )
        )
        ids.append(inc_id)
    samples, steps = [], []
    for inc_id in ids:
        started = time.perf_counter()
        exp = explain(store, inc_id)
        samples.append(time.perf_counter() - started)
        steps.append(len(exp.chain))
    return {**_percentiles(samples), "mean_steps": round(statistics.mean(steps), 1)}


def run(quick: bool = False, database_url: str | None = None) -> dict[str, Any]:
    datasets, runs, samples, ingest_events = (
        (1_000, 10_000, 50, 2_000) if quick else (10_000, 100_000, 200, 20_000)
    )
    rng = random.Random(11)
    dag = build_dag(datasets)
    width = max(1, datasets // LAYERS)
    with tempfile.TemporaryDirectory(prefix="sf-bench-lineage-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'lineage.db'}"
        with open_store(url) as store:
            started = time.perf_counter()
            days = populate(store, dag, runs)
            store.analyze_lineage()  # what a bulk loader does (PostgreSQL; no-op on SQLite)
            build_s = time.perf_counter() - started
            late = [
                _name(rng.randrange(LAYERS - 3, LAYERS), rng.randrange(width))
                for _ in range(samples)
            ]
            used = sorted({s for srcs in dag.values() for s in srcs if s < "layer03"})
            early = [rng.choice(used) for _ in range(samples)]
            result: dict[str, Any] = {
                "backend": url.split(":", 1)[0],
                "datasets": width * LAYERS,
                "jobs": len(dag),
                "runs": runs,
                "events_written": 2 * runs,
                "build_s": round(build_s, 1),
                "build_events_per_s": round(2 * runs / build_s),
                "upstream": _time_walks(store, late, True, None),
                "upstream_depth3": _time_walks(store, late, True, 3),
                "downstream": _time_walks(store, early, False, None),
                "downstream_depth3": _time_walks(store, early, False, 3),
            }
            lines = ndjson(dag, days + 1, ingest_events)
            report = ingest_openlineage(store, lines, "bench.ndjson")
            result["ingest"] = {
                "events": report.events,
                "new_events": report.new_events,
                "lifecycle_events": report.lifecycle_events,
                "seconds": round(report.seconds, 2),
                "events_per_s": round(report.events_per_s),
            }
            result["explain"] = _time_explain(store, late, days + 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_lineage")
    parser.add_argument("--quick", action="store_true", help="1,000 datasets, 10,000 runs")
    parser.add_argument("--database-url", default=None, help="a store URL (default: SQLite)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.quick, args.database_url), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
