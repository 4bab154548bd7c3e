"""Airflow-like OpenLineage NDJSON written in code: one DAG run of five tasks.

The DAG ``daily_orders`` (namespace ``airflow``) runs on 2026-02-15:

    postgres public.payments ─ ingest_payments ─▶ s3 raw/payments ─┐
    postgres public.orders   ─ ingest_orders   ─▶ s3 raw/orders   ─┴ build_enriched ─▶ ds://curated/orders_enriched
    ds://curated/orders_enriched ─ publish_report ─▶ s3 reports/daily
    s3 raw/orders ─ ingest_refunds (FAILS) ─▶ s3 raw/refunds

Each task has a ParentRunFacet naming the DAG run; outputs carry outputStatistics, and
build_enriched has a columnLineage facet.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

PG = "postgres://db:5432"
S3 = "s3://lake"
OURS = "signalfactory"
URN = "ds://curated/orders_enriched"
DAY = "2026-02-15"
PRODUCER = "https://github.com/apache/airflow/tree/providers-openlineage/1.0"


def node(namespace: str, name: str) -> str:
    return f"dataset:{namespace}:{name}"


PAYMENTS_SRC, ORDERS_SRC = node(PG, "public.payments"), node(PG, "public.orders")
RAW_PAYMENTS, RAW_ORDERS = node(S3, "raw/payments"), node(S3, "raw/orders")
ENRICHED, REPORT, REFUNDS = node(OURS, URN), node(S3, "reports/daily"), node(S3, "raw/refunds")


@dataclass
class Task:
    name: str
    inputs: list[tuple[str, str]]
    outputs: list[tuple[str, str, int]]  # namespace, name, rows
    fails: bool = False
    columns: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)


TASKS = [
    Task("ingest_payments", [(PG, "public.payments")], [(S3, "raw/payments", 1200)]),
    Task("ingest_orders", [(PG, "public.orders")], [(S3, "raw/orders", 5000)]),
    Task(
        "build_enriched",
        [(S3, "raw/payments"), (S3, "raw/orders")],
        [(OURS, URN, 4900)],
        columns={
            "order_total": [(S3, "raw/orders", "amount"), (S3, "raw/payments", "paid")],
            "customer_id": [(S3, "raw/orders", "customer_id")],
        },
    ),
    Task("publish_report", [(OURS, URN)], [(S3, "reports/daily", 30)]),
    Task("ingest_refunds", [(S3, "raw/orders")], [(S3, "raw/refunds", 0)], fails=True),
]


def _dataset(ns: str, name: str, rows: int | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"namespace": ns, "name": name, "facets": {}}
    if rows is not None:
        doc["outputFacets"] = {
            "outputStatistics": {"_producer": PRODUCER, "rowCount": rows, "size": rows * 100}
        }
    return doc


def dag_events(seed: int = 1, day: str = DAY) -> tuple[str, list[dict[str, Any]]]:
    """The DAG run id and its RunEvents (START and COMPLETE/FAIL per task), in time order."""
    rng = uuid.UUID(int=seed)
    dag_run = str(uuid.uuid5(rng, f"dag-{day}"))
    start = datetime.fromisoformat(f"{day}T01:00:00+00:00").astimezone(UTC) + timedelta(days=1)
    events: list[dict[str, Any]] = []
    for i, task in enumerate(TASKS):
        run_id = str(uuid.uuid5(rng, f"{task.name}-{day}"))
        facets: dict[str, Any] = {
            "parent": {
                "run": {"runId": dag_run},
                "job": {"namespace": "airflow", "name": "daily_orders"},
            },
            "nominalTime": {"nominalStartTime": f"{day}T00:00:00Z"},
        }
        begin = start + timedelta(minutes=7 * i)
        common = {
            "producer": PRODUCER,
            "job": {"namespace": "airflow", "name": f"daily_orders.{task.name}"},
            "inputs": [_dataset(ns, n) for ns, n in task.inputs],
        }
        events.append(
            {
                **common,
                "eventType": "START",
                "eventTime": begin.isoformat(),
                "run": {"runId": run_id, "facets": facets},
                "outputs": [_dataset(ns, n) for ns, n, _ in task.outputs],
            }
        )
        end_facets = dict(facets)
        outputs = [_dataset(ns, n, None if task.fails else rows) for ns, n, rows in task.outputs]
        if task.fails:
            end_facets["errorMessage"] = {
                "message": "psycopg.errors.UndefinedTable: relation refunds does not exist",
                "programmingLanguage": "PYTHON",
            }
        if task.columns:
            outputs[0]["facets"]["columnLineage"] = {
                "fields": {
                    col: {
                        "inputFields": [
                            {
                                "namespace": ns,
                                "name": n,
                                "field": f,
                                "transformations": [{"type": "DIRECT", "subtype": "AGGREGATION"}],
                            }
                            for ns, n, f in sources
                        ]
                    }
                    for col, sources in task.columns.items()
                }
            }
        events.append(
            {
                **common,
                "eventType": "FAIL" if task.fails else "COMPLETE",
                "eventTime": (begin + timedelta(minutes=5)).isoformat(),
                "run": {"runId": run_id, "facets": end_facets},
                "outputs": outputs,
            }
        )
    return dag_run, events


def ndjson(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(e) for e in events]
