"""``signalfactory incidents [show]`` and ``signalfactory deploy record|list``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumption.harness import sf_inproc, squash
from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.knowledge import open_store
from signalfactory.knowledge.store_incidents import AlertDelivery, AlertEvent, DeliveryStatus
from signalfactory.processing.incidents import reconcile

T0 = datetime(2026, 2, 16, 7, 30, tzinfo=UTC)
ORDERS = "ds://curated/orders_enriched"
PAYMENTS = "ds://raw/payments"


def _signal(urn: str, signature: str, at: datetime, *, ok: bool = False) -> Signal:
    return Signal(
        dataset_urn=urn,
        kind=SignalKind.FRESHNESS,
        state=SignalState.OK if ok else SignalState.BREACH,
        signature="OK" if ok else signature,
        severity=Severity.INFO if ok else Severity.CRITICAL,
        evaluated_at=at,
        summary=f"{urn}: {signature}",
        partition="dt=2026-02-15",
        run_id="run_1",
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home with one open incident of ORDERS and one resolved incident of PAYMENTS."""
    home = tmp_path / "home"
    store = open_store(f"sqlite:///{home / 'signalfactory.db'}")
    try:

        def rec(signals: list[Signal], at: datetime) -> None:
            reconcile(
                store,
                signals,
                at,
                owner_of={ORDERS: "data-platform", PAYMENTS: "payments"}.get,
                downstream=lambda urn: ["ds://mart/revenue"] if urn == ORDERS else [],
            )

        rec([_signal(PAYMENTS, "JOB_FAILED", T0)], T0)
        rec([_signal(ORDERS, "VOLUME_ANOMALY", T0 + timedelta(hours=1))], T0)
        rec([_signal(PAYMENTS, "", T0 + timedelta(hours=2), ok=True)], T0)
        [orders] = store.list_incidents(dataset_urn=ORDERS)
        store.record_delivery(
            AlertDelivery(
                orders.incident_id,
                "webhook",
                AlertEvent.OPENED,
                Severity.CRITICAL,
                DeliveryStatus.FAILED,
                5,
                error="webhook sink: http://127.0.0.1:9/… did not take the alert",
            )
        )
    finally:
        store.close()
    return home


def test_incidents_lists_open_ones_by_default(home: Path) -> None:
    rows = sf_inproc("incidents", "--json", home=home).expect(0).json()
    assert [(r["dataset_urn"], r["status"]) for r in rows] == [(ORDERS, "OPEN")]
    assert rows[0]["blast_radius"] == ["ds://mart/revenue"]
    assert rows[0]["owner_team"] == "data-platform"
    table = sf_inproc("incidents", home=home).expect(0)
    assert rows[0]["incident_id"] in table.stdout
    assert "VOLUME_ANOMALY" in table.stdout
    assert "JOB_FAILED" not in table.stdout


def test_incidents_status_and_dataset_filters(home: Path) -> None:
    every = sf_inproc("incidents", "--status", "all", "--json", home=home).expect(0).json()
    assert [r["dataset_urn"] for r in every] == [ORDERS, PAYMENTS]  # newest first
    resolved = sf_inproc("incidents", "--status", "RESOLVED", "--json", home=home).json()
    assert [(r["dataset_urn"], r["status"]) for r in resolved] == [(PAYMENTS, "RESOLVED")]
    assert resolved[0]["resolved_at"] == "2026-02-16T09:30:00Z"
    by_ds = sf_inproc(
        "incidents", "--status", "all", "--dataset", PAYMENTS, "--json", home=home
    ).json()
    assert [r["signature"] for r in by_ds] == ["JOB_FAILED"]
    none = sf_inproc("incidents", "--dataset", PAYMENTS, home=home).expect(0)
    assert squash("no open incidents for ds://raw/payments") in squash(none.stdout)


def test_incidents_rejects_an_unknown_status(home: Path) -> None:
    res = sf_inproc("incidents", "--status", "closed", home=home).expect(2)
    res.assert_one_paragraph_error("--status 'closed'", "open, resolved, all")


def test_incidents_show_has_the_deliveries_and_the_explain_hint(home: Path) -> None:
    [row] = sf_inproc("incidents", "--json", home=home).json()
    iid = row["incident_id"]
    doc = sf_inproc("incidents", "show", iid, "--json", home=home).expect(0).json()
    assert doc["incident_id"] == iid
    assert [(d["sink"], d["status"], d["attempts"]) for d in doc["deliveries"]] == [
        ("webhook", "FAILED", 5)
    ]
    text = sf_inproc("incidents", "show", iid, home=home).expect(0).stdout
    assert f"signalfactory explain {iid}" in text
    assert "ds://mart/revenue" in text
    missing = sf_inproc("incidents", "show", "inc_nope", home=home).expect(2)
    missing.assert_one_paragraph_error("inc_nope", "--status all")


def test_deploy_record_and_list(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = sf_inproc(
        "deploy", "record", "--ref", "3f2a9c1", "--pipeline", "orders",
        "--note", "new enum mapping", "--at", "2026-02-15T06:00:00+01:00", "--json",
        home=home,
    ).expect(0).json()  # fmt: skip
    assert first["recorded_at"] == "2026-02-15T05:00:00Z"
    assert first["actor"].startswith("cli")
    text = sf_inproc(
        "deploy", "record", "--ref", "77aa001", "--pipeline", "payments", "--at",
        "2026-02-14T23:00:00", home=home,
    ).expect(0)  # fmt: skip
    assert "77aa001" in text.stdout
    assert "2026-02-14T23:00:00Z" in text.stdout  # no offset given: UTC
    sf_inproc("deploy", "record", "--ref", "9bb", "--pipeline", "orders", home=home).expect(0)
    listed = sf_inproc("deploy", "list", "--json", home=home).expect(0).json()
    assert [d["deploy_ref"] for d in listed] == ["77aa001", "3f2a9c1", "9bb"]  # oldest first
    orders = sf_inproc("deploy", "list", "--pipeline", "orders", "--json", home=home).json()
    assert [d["deploy_ref"] for d in orders] == ["3f2a9c1", "9bb"]
    assert orders[0]["note"] == "new enum mapping"
    assert orders[0]["deployment_id"] == first["deployment_id"]
    window = sf_inproc(
        "deploy", "list", "--since", "2026-02-15T00:00:00Z", "--until", "2026-02-15T12:00:00Z",
        "--json", home=home,
    ).json()  # fmt: skip
    assert [d["deploy_ref"] for d in window] == ["3f2a9c1"]
    table = sf_inproc("deploy", "list", home=home).expect(0)
    assert "3f2a9c1" in table.stdout
    assert "new enum mapping" in table.stdout


def test_deploy_input_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad_at = sf_inproc(
        "deploy", "record", "--ref", "x", "--pipeline", "p", "--at", "yesterday", home=home
    ).expect(2)
    bad_at.assert_one_paragraph_error("--at 'yesterday'", "ISO-8601")
    missing = sf_inproc("deploy", "record", "--ref", "x", home=home)
    assert missing.exit_code == 2
    assert "--pipeline" in missing.stderr
    empty = sf_inproc("deploy", "record", "--ref", " ", "--pipeline", "p", home=home).expect(2)
    empty.assert_one_paragraph_error("--ref and --pipeline")
    assert sf_inproc("deploy", "list", "--json", home=home).json() == []
