"""Incidents, alert deliveries and deployments in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from signalfactory.core.errors import ConfigError, NotFoundError, Terminal
from signalfactory.core.observability import (
    Deployment,
    Incident,
    IncidentStatus,
    Severity,
    SignalKind,
)
from signalfactory.knowledge import SqlStore
from signalfactory.knowledge.store_incidents import AlertDelivery, AlertEvent, DeliveryStatus

T0 = datetime(2026, 2, 16, 7, 15, 32, 250000, tzinfo=UTC)
URN = "ds://curated/orders_enriched"


def _incident(n: int = 0, **kw: object) -> Incident:
    fields: dict[str, object] = {
        "incident_id": f"inc_{n:04d}",
        "dataset_urn": URN,
        "kind": SignalKind.FRESHNESS,
        "signature": "JOB_FAILED",
        "severity": Severity.WARNING,
        "status": IncidentStatus.OPEN,
        "opened_at": T0 + timedelta(minutes=n),
        "updated_at": T0 + timedelta(minutes=n),
        "summary": "gold orders is late: job failed",
        "signal_ids": (f"sig_{n}",),
        "partition": "dt=2026-02-15",
        "run_id": f"run_{n}",
        "owner_team": "data-platform",
        "blast_radius": ("ds://mart/revenue", "ds://mart/finance"),
    }
    fields.update(kw)
    return Incident(**fields)  # type: ignore[arg-type]


def test_incident_round_trips_every_field(store: SqlStore) -> None:
    incident = _incident(1)
    store.add_incident(incident)
    assert store.get_incident(incident.incident_id) == incident
    assert store.get_incident("inc_missing") is None


def test_only_one_open_incident_per_dedup_key(store: SqlStore) -> None:
    first = _incident(1)
    store.add_incident(first)
    with pytest.raises(Terminal, match="find_open_incident"):
        store.add_incident(_incident(2))
    assert store.find_open_incident(first.dedup_key) == first
    # once resolved, the key is free again
    resolved = replace(first, status=IncidentStatus.RESOLVED, resolved_at=T0 + timedelta(hours=1))
    store.update_incident(resolved)
    assert store.find_open_incident(first.dedup_key) is None
    second = _incident(2)
    store.add_incident(second)
    assert store.find_open_incident(first.dedup_key) == second
    assert [i.incident_id for i in store.list_incidents(dedup_key=first.dedup_key)] == [
        second.incident_id,
        first.incident_id,
    ]


def test_update_of_unknown_incident_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="inc_0009"):
        store.update_incident(_incident(9))


def test_list_incidents_filters_and_orders_newest_first(store: SqlStore) -> None:
    other = "ds://raw/payments"
    store.add_incident(_incident(1))
    store.add_incident(_incident(2, signature="VOLUME_ANOMALY", kind=SignalKind.VOLUME))
    store.add_incident(_incident(3, dataset_urn=other, status=IncidentStatus.RESOLVED))
    assert [i.incident_id for i in store.list_incidents()] == ["inc_0003", "inc_0002", "inc_0001"]
    assert [i.incident_id for i in store.list_incidents(status="open")] == [
        "inc_0002",
        "inc_0001",
    ]
    assert [i.incident_id for i in store.list_incidents(IncidentStatus.RESOLVED)] == ["inc_0003"]
    assert [i.incident_id for i in store.list_incidents(dataset_urn=other)] == ["inc_0003"]
    assert len(store.list_incidents(limit=2)) == 2
    with pytest.raises(ConfigError, match="OPEN, RESOLVED"):
        store.list_incidents(status="closed")


def test_deliveries_round_trip_and_filter(store: SqlStore) -> None:
    ok = AlertDelivery(
        "inc_1", "webhook", AlertEvent.OPENED, Severity.CRITICAL, DeliveryStatus.DELIVERED, 3
    )
    failed = AlertDelivery(
        "inc_1",
        "slack",
        AlertEvent.OPENED,
        Severity.CRITICAL,
        DeliveryStatus.FAILED,
        5,
        error="HTTP 503 after 5 attempts",
        at=datetime(2026, 2, 16, 9, 0, tzinfo=timezone(timedelta(hours=-5))),
    )
    other = replace(ok, incident_id="inc_2", delivery_id="dlv_other")
    for d in (ok, failed, other):
        store.record_delivery(d)
    assert store.list_deliveries("inc_1") == [ok, replace(failed, at=failed.at.astimezone(UTC))]
    assert store.list_deliveries(status="failed") == [store.list_deliveries("inc_1")[1]]
    assert store.list_deliveries(sink="webhook") == [ok, other]
    with pytest.raises(Terminal):
        store.record_delivery(ok)


def test_deployments_filter_by_pipeline_and_window(store: SqlStore) -> None:
    deps = [
        Deployment("abc123", "orders", recorded_at=T0 + timedelta(hours=h), note=f"n{h}")
        for h in (3, 1, 2)
    ] + [Deployment("fff999", "payments", recorded_at=T0 + timedelta(hours=2), actor="ci")]
    for d in deps:
        store.add_deployment(d)
    orders = store.list_deployments("orders")
    assert [d.recorded_at for d in orders] == [T0 + timedelta(hours=h) for h in (1, 2, 3)]
    assert orders[0] == deps[1]
    window = store.list_deployments(
        since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=2, minutes=30)
    )
    assert sorted(d.deploy_ref for d in window) == ["abc123", "fff999"]
    assert store.list_deployments("nope") == []
