"""The lineage graph from OpenLineage NDJSON: DAG runs, traversal, columns, idempotency.

Every test runs on SQLite and PostgreSQL (the ``store`` fixture), so the recursive CTE and the
``ON CONFLICT`` upserts are exercised on both.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from knowledge.ol_factory import (
    ENRICHED,
    ORDERS_SRC,
    PAYMENTS_SRC,
    RAW_ORDERS,
    RAW_PAYMENTS,
    REFUNDS,
    REPORT,
    TASKS,
    URN,
    dag_events,
    ndjson,
)
from signalfactory.core.errors import NotFoundError
from signalfactory.knowledge import SqlStore
from signalfactory.knowledge import models as m
from signalfactory.knowledge import models_lineage as ml
from signalfactory.knowledge.lineage import (
    column_lineage,
    dag_run,
    downstream,
    ingest_openlineage,
    latest_runs_writing,
    resolve_node,
    runs_of_dataset,
    upstream,
)


def counts(store: SqlStore) -> dict[str, int]:
    tables = [*(ml.metadata.tables[n] for n in sorted(ml.TABLE_NAMES)), m.lifecycle_events]
    with store._conn() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables
        }


@pytest.fixture
def dag(store: SqlStore) -> str:
    dag_run_id, events = dag_events()
    report = ingest_openlineage(store, ndjson(events), "airflow.ndjson")
    assert report.ok
    assert (report.events, report.new_events, report.rejected) == (len(events), len(events), 0)
    return dag_run_id


def test_dag_run_links_its_task_runs(store: SqlStore, dag: str) -> None:
    runs = dag_run(store, dag)
    assert [r.job_name for r in runs] == [f"daily_orders.{t.name}" for t in TASKS]
    assert {r.parent_job_id for r in runs} == {"job:airflow:daily_orders"}
    assert [r.state for r in runs] == ["COMPLETE"] * 4 + ["FAIL"]
    assert runs[-1].error_message is not None
    assert "UndefinedTable" in runs[-1].error_message
    assert all(r.partition_key == "dt=2026-02-15" for r in runs)
    assert all(r.started_at is not None and r.ended_at is not None for r in runs)
    assert dag_run(store, "no-such-dag-run") == []


def test_upstream_walks_every_hop_with_the_job_between(store: SqlStore, dag: str) -> None:
    hops = upstream(store, REPORT)
    assert [(h.node_id, h.depth) for h in hops] == [
        (ENRICHED, 1),
        (RAW_ORDERS, 2),
        (RAW_PAYMENTS, 2),
        (ORDERS_SRC, 3),
        (PAYMENTS_SRC, 3),
    ]
    assert hops[0].jobs == ("job:airflow:daily_orders.publish_report",)
    assert hops[0].via == (REPORT,)
    assert hops[1].jobs == ("job:airflow:daily_orders.build_enriched",)
    assert hops[3].namespace == "postgres://db:5432"
    assert hops[3].name == "public.orders"


def test_depth_limits_the_walk(store: SqlStore, dag: str) -> None:
    assert [h.node_id for h in upstream(store, REPORT, depth=1)] == [ENRICHED]
    assert {h.node_id for h in upstream(store, REPORT, depth=2)} == {
        ENRICHED,
        RAW_ORDERS,
        RAW_PAYMENTS,
    }
    assert upstream(store, REPORT, depth=0) == []


def test_downstream_is_the_blast_radius(store: SqlStore, dag: str) -> None:
    hops = downstream(store, ORDERS_SRC)
    assert [(h.node_id, h.depth) for h in hops] == [
        (RAW_ORDERS, 1),
        (REFUNDS, 2),
        (ENRICHED, 2),
        (REPORT, 3),
    ]
    assert downstream(store, REPORT) == []


def test_our_urn_and_names_resolve_to_nodes(store: SqlStore, dag: str) -> None:
    assert resolve_node(store, URN) == ENRICHED
    assert resolve_node(store, ENRICHED) == ENRICHED
    assert resolve_node(store, "public.payments") == PAYMENTS_SRC
    assert [h.node_id for h in downstream(store, URN)] == [REPORT]
    with pytest.raises(NotFoundError) as caught:
        resolve_node(store, "dataset:s3://lake:raw/payment")
    assert "raw/payments" in caught.value.message
    assert "signalfactory lineage ingest" in caught.value.message


def test_column_lineage_from_column_lineage_facets(store: SqlStore, dag: str) -> None:
    edges = column_lineage(store, URN)
    assert {(e.field, e.input_dataset_id, e.input_field) for e in edges} == {
        ("order_total", RAW_ORDERS, "amount"),
        ("order_total", RAW_PAYMENTS, "paid"),
        ("customer_id", RAW_ORDERS, "customer_id"),
    }
    assert {e.transformation for e in edges} == {"DIRECT:AGGREGATION"}
    fed = column_lineage(store, RAW_PAYMENTS)
    assert [(e.dataset_id, e.field) for e in fed] == [(ENRICHED, "order_total")]


def test_reingest_changes_nothing(store: SqlStore, dag: str) -> None:
    before = counts(store)
    assert before["lineage_runs"] == len(TASKS)
    _, events = dag_events()
    again = ingest_openlineage(store, ndjson(events), "airflow.ndjson")
    assert (again.new_events, again.duplicates, again.lifecycle_events) == (0, len(events), 0)
    assert counts(store) == before


def test_bad_lines_are_reported_with_line_numbers_and_good_ones_kept(store: SqlStore) -> None:
    _, events = dag_events()
    lines = ndjson(events[:4])
    no_run = {k: v for k, v in events[4].items() if k != "run"}
    lines[1:1] = ["{not json", ""]
    lines.append(json.dumps(no_run))
    lines.append(json.dumps({**events[5], "eventTime": "yesterday"}))
    report = ingest_openlineage(store, lines, "bad.ndjson")
    assert not report.ok
    assert (report.rejected, report.events, report.new_events) == (3, 4, 4)
    assert report.errors[0].startswith("bad.ndjson:2: not valid JSON")
    assert report.errors[1].startswith("bad.ndjson:7: missing run.runId")
    assert report.errors[2].startswith("bad.ndjson:8: eventTime 'yesterday'")
    assert counts(store)["lineage_run_events"] == 4


def _events_of(store: SqlStore, urn: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for e in store.list_events(dataset_urn=urn):
        found.setdefault(str(e.event_type), []).append(dict(e.payload))
    return found


def test_external_jobs_become_lifecycle_events(store: SqlStore, dag: str) -> None:
    raw = _events_of(store, RAW_ORDERS)
    assert sorted(raw) == ["DatasetWriteCommitted", "JobRunCompleted", "JobRunStarted"]
    (commit,) = raw["DatasetWriteCommitted"]
    assert (commit["rows_written"], commit["bytes_written"]) == (5000, 500_000)
    assert commit["partition_key"] == "dt=2026-02-15"
    assert commit["partition"] == {"dt": "2026-02-15"}
    assert commit["dag_run_id"] == dag
    assert commit["job_name"] == "daily_orders.ingest_orders"
    # One of our datasets: the lifecycle events use its URN, not the node id.
    ours = _events_of(store, URN)
    assert ours["DatasetWriteCommitted"][0]["rows_written"] == 4900
    assert _events_of(store, ENRICHED) == {}
    failed = _events_of(store, REFUNDS)
    assert "DatasetWriteCommitted" not in failed
    assert "UndefinedTable" in failed["JobRunFailed"][0]["failure_reason"]


def test_runs_writing_a_dataset_and_their_signatures(store: SqlStore, dag: str) -> None:
    (latest,) = latest_runs_writing(store, REFUNDS, "dt=2026-02-15")
    assert latest.state == "FAIL"
    assert latest.dag_run_id == dag
    assert latest_runs_writing(store, REFUNDS, "dt=2026-02-14") == []
    assert {r.job_name for r in runs_of_dataset(store, RAW_ORDERS)} == {
        "daily_orders.ingest_orders",
        "daily_orders.build_enriched",
        "daily_orders.ingest_refunds",
    }
    assert [r.job_name for r in runs_of_dataset(store, RAW_ORDERS, direction="out")] == [
        "daily_orders.ingest_orders"
    ]
    sigs = [r["signature_id"] for r in store.lineage_signatures(latest.run_id)]
    assert sigs == ["signature:JOB_FAILED:daily_orders.ingest_refunds:UndefinedTable"]
    store.link_failure_signature(latest.run_id, "UNKNOWN_ENUM:order_type:FLASH_SALE")
    store.link_failure_signature(latest.run_id, "UNKNOWN_ENUM:order_type:FLASH_SALE")
    assert len(store.lineage_signatures(latest.run_id)) == 2
    linked = store.lineage_runs_with_signature("UNKNOWN_ENUM:order_type:FLASH_SALE")
    assert [r.run_id for r in linked] == [latest.run_id]
    assert store.lineage_runs_with_signature("NOPE") == []


def test_a_failure_without_outputs_lands_on_what_the_job_writes(store: SqlStore, dag: str) -> None:
    _, events = dag_events(day="2026-02-16")
    orders_done = [e for e in events if e["job"]["name"].endswith("ingest_orders")]
    start, done = orders_done
    failed = {
        **done,
        "eventType": "FAIL",
        "outputs": [],
        "run": {
            "runId": done["run"]["runId"],
            "facets": {**done["run"]["facets"], "errorMessage": {"message": "TimeoutError: api"}},
        },
    }
    report = ingest_openlineage(store, ndjson([{**start, "outputs": []}, failed]), "day2.ndjson")
    assert report.ok
    next_day = [
        e
        for e in store.list_events(dataset_urn=RAW_ORDERS)
        if e.payload["partition"] == {"dt": "2026-02-16"}
    ]
    assert [str(e.event_type) for e in next_day] == ["JobRunStarted", "JobRunFailed"]
    assert next_day[1].payload["failure_reason"] == "TimeoutError: api"
    # the failed run wrote nothing: no output is recorded for it
    assert latest_runs_writing(store, RAW_ORDERS, "dt=2026-02-16") == []


def test_unlimited_and_deep_limited_walks_agree(store: SqlStore, dag: str) -> None:
    store.analyze_lineage()  # planner statistics (PostgreSQL); the answers must not change
    for node in (REPORT, ENRICHED, ORDERS_SRC):
        for walk in (upstream, downstream):
            assert walk(store, node) == walk(store, node, depth=50)


def test_cycles_terminate(store: SqlStore) -> None:
    def event(run: str, src: str, dst: str, minute: int) -> str:
        return json.dumps(
            {
                "eventType": "COMPLETE",
                "eventTime": f"2026-02-15T01:{minute:02d}:00Z",
                "run": {"runId": run},
                "job": {"namespace": "dbt", "name": f"{src}_to_{dst}"},
                "inputs": [{"namespace": "wh", "name": src}],
                "outputs": [{"namespace": "wh", "name": dst}],
            }
        )

    lines = [event("r1", "a", "b", 1), event("r2", "b", "c", 2), event("r3", "c", "a", 3)]
    assert ingest_openlineage(store, lines, "cycle.ndjson").ok
    assert [(h.name, h.depth) for h in upstream(store, "dataset:wh:a")] == [("c", 1), ("b", 2)]
    assert [(h.name, h.depth) for h in downstream(store, "dataset:wh:a", depth=5)] == [
        ("b", 1),
        ("c", 2),
    ]
