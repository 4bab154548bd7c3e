"""The PRD's steel thread as data: two weeks of daily orders and their upstream Airflow DAG.

Everything is generated in code from fixed seeds:

* ``raw/orders/dt=D/orders_eu.csv`` and ``orders_us.csv`` — written by the upstream Airflow DAG
  ``daily_ingest`` (tasks ``ingest_orders_eu`` and ``ingest_orders_us``), whose OpenLineage
  events are in ``openlineage/daily_ingest.ndjson`` (START/COMPLETE/FAIL with parent-run facets
  linking each task run to its DAG run, and ``outputStatistics``);
* daily volumes with weekly seasonality (weekends ~20% lower) and noise;
* the bad days: an upstream partition dropped (``ingest_orders_us`` fails), a new enum value
  ``FLASH_SALE`` after a deployment, and a day our pipeline is never triggered.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from signalfactory.consumption.demo import (
    COUNTRIES,
    POLICY_YAML,
    TRANSFORMS_PY,
    TYPES,
)

URN = "ds://curated/orders_enriched"
FIRST_DAY = date(2026, 2, 1)
DAYS = 14
DROP_DAY = date(2026, 2, 10)  # ingest_orders_us fails: the US half never arrives
ENUM_DAY = date(2026, 2, 12)  # a deploy upstream starts sending order_type FLASH_SALE
MISSED_DAY = date(2026, 2, 14)  # upstream is fine, our pipeline is never triggered
DEPLOY_REF = "4f2c9e1"
OL_NAMESPACE = "warehouse"
UPSTREAM = {"eu": "raw.orders_eu", "us": "raw.orders_us"}
_OL_PRODUCER = "https://github.com/apache/airflow/tree/providers-openlineage/1.9.0"
_OL_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent"
_NS = uuid.UUID("5f0c2b58-7d4e-4e39-9a9a-0d7c1f3e2a11")

DATASET_YAML = f"""\
urn: "{URN}"
owner_team: "data-platform"
tier: TIER_1
storage:
  bronze: "bronze/orders/"
  silver: "silver/orders/"
  gold: "gold/orders/"
slo:
  freshness:
    expected_update_by: "02:00 ET daily"
    grace_period: "30m"
    partition_key: "dt"
  volume:
    min_rows_per_partition: 500
    anomaly_threshold_pct: 40
"""

PIPELINE_YAML = f"""\
pipeline: orders_daily
dataset: {URN}
source:
  format: csv
  path: raw/orders/dt={{dt}}/*.csv
upstream:
  - "dataset:{OL_NAMESPACE}:{UPSTREAM["eu"]}"
  - "dataset:{OL_NAMESPACE}:{UPSTREAM["us"]}"
engine: threads
chunk_size: 5000
steps:
  silver:
    - sql: "SELECT * FROM batch WHERE order_id IS NOT NULL"
  gold:
    - python: "transforms:enrich"
"""


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    rows: dict[str, int]  # region -> rows written upstream (0: not written)
    us_failed: bool
    flash_sale: bool
    run_pipeline: bool

    @property
    def dt(self) -> str:
        return self.day.isoformat()

    @property
    def ingest_at(self) -> datetime:
        """When the upstream DAG runs: 00:30 ET the next morning (05:30 UTC in February)."""
        nxt = self.day + timedelta(days=1)
        return datetime(nxt.year, nxt.month, nxt.day, 5, 30, tzinfo=UTC)

    @property
    def run_at(self) -> datetime:
        """When our pipeline runs: 01:05 ET the next morning, before its 02:00 ET deadline."""
        return self.ingest_at + timedelta(minutes=35)

    @property
    def evaluate_at(self) -> datetime:
        """The first evaluation after deadline (02:00 ET) + grace (30m): 02:35 ET."""
        return self.ingest_at + timedelta(hours=2, minutes=5)


def plan_days() -> list[Day]:
    rng = random.Random(7)  # noqa: S311 - demo data, not secrets
    days = []
    for i in range(DAYS):
        d = FIRST_DAY + timedelta(days=i)
        season = 0.8 if d.weekday() >= 5 else 1.0
        rows = {
            "eu": int(1100 * season * rng.uniform(0.95, 1.05)),
            "us": int(1250 * season * rng.uniform(0.95, 1.05)),
        }
        failed = d == DROP_DAY
        if failed:
            rows["us"] = 0
        days.append(Day(d, rows, failed, d == ENUM_DAY, d != MISSED_DAY))
    return days


def _orders(day: Day, region: str, first_id: int) -> pl.DataFrame:
    n = day.rows[region]
    rng = random.Random(f"{day.dt}-{region}")  # noqa: S311 - demo data
    start = datetime(day.day.year, day.day.month, day.day.day)
    countries = ["US", "CA"] if region == "us" else [c for c in COUNTRIES if c not in ("US", "CA")]
    types = [*TYPES, "FLASH_SALE"] if day.flash_sale else TYPES
    weights = [0.25, 0.25, 0.25, 0.25] if day.flash_sale else None
    return pl.DataFrame(
        {
            "order_id": list(range(first_id, first_id + n)),
            "customer_id": [f"C{rng.randrange(1, 5000):06d}" for _ in range(n)],
            "order_total": [f"{rng.uniform(5, 400):.2f}" for _ in range(n)],
            "order_type": rng.choices(types, weights=weights, k=n),
            "email": [f"user{rng.randrange(1, 10**6)}@example.com" for _ in range(n)],
            "phone": [
                f"555-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}" for _ in range(n)
            ],
            "created_at": [
                (start + timedelta(seconds=rng.randrange(86_400))).isoformat() + "Z"
                for _ in range(n)
            ],
            "country": [rng.choice(countries) for _ in range(n)],
        }
    )


def _facet(**fields: Any) -> dict[str, Any]:
    return {"_producer": _OL_PRODUCER, "_schemaURL": _OL_SCHEMA, **fields}


def _event(
    kind: str,
    at: datetime,
    run_id: str,
    job: str,
    day: Day,
    *,
    parent: tuple[str, str] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    facets: dict[str, Any] = {
        "nominalTime": _facet(nominalStartTime=f"{day.dt}T00:00:00Z"),
    }
    if parent is not None:
        facets["parent"] = _facet(
            run={"runId": parent[0]}, job={"namespace": "airflow", "name": parent[1]}
        )
    if error is not None:
        facets["errorMessage"] = _facet(message=error, programmingLanguage="python")
    return {
        "eventType": kind,
        "eventTime": at.isoformat().replace("+00:00", "Z"),
        "producer": _OL_PRODUCER,
        "schemaURL": _OL_SCHEMA,
        "run": {"runId": run_id, "facets": facets},
        "job": {"namespace": "airflow", "name": job},
        "inputs": [],
        "outputs": outputs or [],
    }


def openlineage_events(day: Day, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """The Airflow DAG run of ``day``: DAG START, two tasks, DAG COMPLETE or FAIL."""
    dag = "daily_ingest"
    dag_run = str(uuid.uuid5(_NS, f"{dag}-{day.dt}"))
    t0 = day.ingest_at
    events = [_event("START", t0, dag_run, dag, day)]
    for k, region in enumerate(("eu", "us")):
        task = f"{dag}.ingest_orders_{region}"
        run = str(uuid.uuid5(_NS, f"{task}-{day.dt}"))
        start = t0 + timedelta(minutes=1 + k)
        events.append(_event("START", start, run, task, day, parent=(dag_run, dag)))
        end = start + timedelta(minutes=6 + 3 * k)
        if region == "us" and day.us_failed:
            message = (
                "ConnectionResetError: the orders API closed the connection while paging "
                "(attempt 3 of 3)"
            )
            events.append(_event("FAIL", end, run, task, day, parent=(dag_run, dag), error=message))
            continue
        output = {
            "namespace": OL_NAMESPACE,
            "name": UPSTREAM[region],
            "facets": {},
            "outputFacets": {
                "outputStatistics": _facet(rowCount=day.rows[region], size=sizes[region])
            },
        }
        events.append(
            _event("COMPLETE", end, run, task, day, parent=(dag_run, dag), outputs=[output])
        )
    last = t0 + timedelta(minutes=16)
    events.append(_event("FAIL" if day.us_failed else "COMPLETE", last, dag_run, dag, day))
    return events


def build_history(directory: Path) -> list[Day]:
    """Write the steel thread's files under ``directory``; return the planned days."""
    for name, text in (
        ("dataset.yaml", DATASET_YAML),
        ("policy_bundle.yaml", POLICY_YAML),
        ("pipeline.yaml", PIPELINE_YAML),
        ("transforms.py", TRANSFORMS_PY),
    ):
        (directory / name).write_text(text, encoding="utf-8")
    days = plan_days()
    lineage = directory / "openlineage"
    lineage.mkdir(parents=True, exist_ok=True)
    first_id = 1
    for day in days:
        folder = directory / "raw" / "orders" / f"dt={day.dt}"
        folder.mkdir(parents=True, exist_ok=True)
        sizes = {}
        for region in ("eu", "us"):
            if day.rows[region] == 0:
                sizes[region] = 0
                continue
            path = folder / f"orders_{region}.csv"
            _orders(day, region, first_id).write_csv(path)
            first_id += day.rows[region]
            sizes[region] = path.stat().st_size
        with (lineage / f"daily_ingest_{day.dt}.ndjson").open("w", encoding="utf-8") as out:
            for event in openlineage_events(day, sizes):
                out.write(json.dumps(event) + "\n")
    return days
