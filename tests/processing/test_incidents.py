"""Signals become incidents: open, update, resolve, deduplicate, and reconcile idempotently."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from signalfactory.core.observability import (
    IncidentStatus,
    Severity,
    Signal,
    SignalKind,
    SignalState,
)
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.knowledge.store_incidents import AlertEvent
from signalfactory.processing.incidents import IncidentChange, reconcile

T0 = datetime(2026, 2, 16, 7, 30, tzinfo=UTC)
T0_ISO = "2026-02-16T07:30:00Z"
ORDERS = "ds://curated/orders_enriched"
PAYMENTS = "ds://raw/payments"
GRAPH = {
    PAYMENTS: [ORDERS, "ds://mart/revenue", ORDERS],
    ORDERS: ["ds://mart/revenue", "ds://mart/finance", ORDERS],
}
OWNERS = {ORDERS: "data-platform", PAYMENTS: "payments-team"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'sf.db'}")
    try:
        yield opened
    finally:
        opened.close()


def breach(
    at: datetime,
    signature: str = "JOB_FAILED",
    *,
    urn: str = ORDERS,
    kind: SignalKind = SignalKind.FRESHNESS,
    severity: Severity = Severity.WARNING,
    partition: str | None = "dt=2026-02-15",
    run_id: str | None = "run_1",
) -> Signal:
    return Signal(
        dataset_urn=urn,
        kind=kind,
        state=SignalState.BREACH,
        signature=signature,
        severity=severity,
        evaluated_at=at,
        summary=f"{urn} partition {partition} breached: {signature}",
        partition=partition,
        run_id=run_id,
    )


def ok(
    at: datetime,
    *,
    urn: str = ORDERS,
    kind: SignalKind = SignalKind.FRESHNESS,
    partition: str | None = "dt=2026-02-15",
) -> Signal:
    return Signal(
        dataset_urn=urn,
        kind=kind,
        state=SignalState.OK,
        signature="OK",
        severity=Severity.INFO,
        evaluated_at=at,
        summary="healthy",
        partition=partition,
    )


def run(store: SqlStore, signals: list[Signal], at: datetime = T0) -> list[IncidentChange]:
    return reconcile(
        store,
        signals,
        at,
        owner_of=OWNERS.get,
        downstream=lambda urn: list(GRAPH.get(urn, [])),
    )


def test_a_breach_opens_an_incident_with_owner_and_blast_radius(store: SqlStore) -> None:
    signal = breach(T0, severity=Severity.CRITICAL)
    [change] = run(store, [signal])
    assert change.event is AlertEvent.OPENED
    assert change.signal is signal
    incident = change.incident
    assert store.get_incident(incident.incident_id) == incident
    assert incident.status is IncidentStatus.OPEN
    assert (incident.dataset_urn, incident.kind, incident.signature) == (
        ORDERS,
        SignalKind.FRESHNESS,
        "JOB_FAILED",
    )
    assert incident.severity is Severity.CRITICAL
    assert incident.owner_team == "data-platform"
    # downstream as given, deduplicated, without the dataset itself
    assert incident.blast_radius == ("ds://mart/revenue", "ds://mart/finance")
    assert incident.signal_ids == (signal.signal_id,)
    assert incident.opened_at == incident.updated_at == T0
    assert (incident.partition, incident.run_id) == ("dt=2026-02-15", "run_1")
    assert "JOB_FAILED" in incident.summary
    doc = json.loads(json.dumps(change.to_dict()))
    assert (doc["event"], doc["signal_id"], doc["at"]) == ("OPENED", signal.signal_id, T0_ISO)
    assert doc["incident"]["incident_id"] == incident.incident_id


def test_a_repeated_breach_updates_and_raises_severity_but_never_lowers_it(
    store: SqlStore,
) -> None:
    [opened] = run(store, [breach(T0)])
    later = breach(T0 + timedelta(hours=1), severity=Severity.CRITICAL, run_id="run_2")
    [update] = run(store, [later], T0 + timedelta(hours=1))
    assert update.event is AlertEvent.UPDATED
    assert update.incident.incident_id == opened.incident.incident_id
    assert update.previous_severity is Severity.WARNING
    assert update.escalated
    assert update.incident.severity is Severity.CRITICAL
    assert update.incident.run_id == "run_2"
    assert update.incident.updated_at == T0 + timedelta(hours=1)
    assert update.incident.opened_at == T0
    mild = breach(T0 + timedelta(hours=2), severity=Severity.INFO)
    [again] = run(store, [mild], T0 + timedelta(hours=2))
    assert not again.escalated
    stored = store.get_incident(opened.incident.incident_id)
    assert stored is not None
    assert stored.severity is Severity.CRITICAL
    assert stored.signal_ids == (
        opened.signal.signal_id,
        later.signal_id,
        mild.signal_id,
    )
    assert len(store.list_incidents()) == 1


def test_incidents_are_deduplicated_per_dataset_kind_and_signature(store: SqlStore) -> None:
    batch = [
        breach(T0),
        breach(T0, partition="dt=2026-02-14"),  # same cause, other partition: same incident
        breach(T0, "JOB_NOT_TRIGGERED"),
        breach(T0, urn=PAYMENTS),
        breach(T0, "VOLUME_ANOMALY", kind=SignalKind.VOLUME),
    ]
    changes = run(store, batch)
    assert [c.event for c in changes].count(AlertEvent.OPENED) == 4
    assert [c.event for c in changes].count(AlertEvent.UPDATED) == 1
    keys = sorted(i.dedup_key for i in store.list_incidents(IncidentStatus.OPEN))
    assert keys == sorted(
        {
            f"{ORDERS}|FRESHNESS|JOB_FAILED",
            f"{ORDERS}|FRESHNESS|JOB_NOT_TRIGGERED",
            f"{PAYMENTS}|FRESHNESS|JOB_FAILED",
            f"{ORDERS}|VOLUME|VOLUME_ANOMALY",
        }
    )
    [payments] = store.list_incidents(dataset_urn=PAYMENTS)
    assert payments.owner_team == "payments-team"
    assert payments.blast_radius == (ORDERS, "ds://mart/revenue")


def test_an_ok_signal_at_or_after_the_latest_breach_resolves(store: SqlStore) -> None:
    [opened] = run(store, [breach(T0)])
    iid = opened.incident.incident_id
    not_resolving = [
        ok(T0 - timedelta(minutes=1)),  # before the breach
        ok(T0 + timedelta(hours=1), partition="dt=2026-02-14"),  # an earlier partition
        ok(T0 + timedelta(hours=1), partition="region=eu"),  # another partition key
        ok(T0 + timedelta(hours=1), partition=None),  # no partition
        ok(T0 + timedelta(hours=1), kind=SignalKind.VOLUME),  # another kind
        ok(T0 + timedelta(hours=1), urn=PAYMENTS),  # another dataset
    ]
    assert run(store, not_resolving, T0 + timedelta(hours=1)) == []
    assert store.find_open_incident(opened.incident.dedup_key) is not None
    [resolved] = run(store, [ok(T0)], T0)  # at the breach's instant counts
    assert resolved.event is AlertEvent.RESOLVED
    assert resolved.incident.incident_id == iid
    stored = store.get_incident(iid)
    assert stored is not None
    assert stored.status is IncidentStatus.RESOLVED
    assert stored.resolved_at == T0
    assert store.find_open_incident(opened.incident.dedup_key) is None


@pytest.mark.parametrize(
    ("incident_partition", "ok_partition", "resolves"),
    [
        ("dt=2026-02-15", "dt=2026-02-16", True),
        ("dt=2026-02-15", "dt=2026-03-01", True),
        ("dt=2026-02-15", "dt=2026-02-09", False),
        ("hour=9", "hour=10", True),  # numbers compare as numbers, not text
        ("hour=10", "hour=9", False),
        ("dt=2026-02-15/region=eu", "dt=2026-02-15/region=us", True),
        ("dt=2026-02-15/region=eu", "dt=2026-02-16", False),
        ("dt=2026-02-15", "garbage", False),
    ],
)
def test_a_healthy_later_partition_resolves_an_earlier_partitions_incident(
    store: SqlStore, incident_partition: str, ok_partition: str, resolves: bool
) -> None:
    run(store, [breach(T0, partition=incident_partition)])
    changes = run(store, [ok(T0 + timedelta(days=1), partition=ok_partition)])
    assert [c.event for c in changes] == ([AlertEvent.RESOLVED] if resolves else [])


def test_an_incident_follows_its_latest_breached_partition(store: SqlStore) -> None:
    run(store, [breach(T0, partition="dt=2026-02-15")])
    [update] = run(store, [breach(T0 + timedelta(days=1), partition="dt=2026-02-16")])
    assert update.incident.partition == "dt=2026-02-16"
    # a late replayed breach of the older partition does not move it back
    [late] = run(store, [breach(T0, partition="dt=2026-02-14")])
    assert late.incident.partition == "dt=2026-02-16"
    assert late.incident.updated_at == T0 + timedelta(days=1)
    assert run(store, [ok(T0 + timedelta(days=1), partition="dt=2026-02-15")]) == []


def test_a_dataset_level_incident_is_resolved_by_any_partition(store: SqlStore) -> None:
    run(store, [breach(T0, partition=None)])
    [change] = run(store, [ok(T0 + timedelta(hours=1), partition="dt=2026-02-16")])
    assert change.event is AlertEvent.RESOLVED


def test_a_breach_of_the_same_cause_in_the_batch_keeps_it_open(store: SqlStore) -> None:
    run(store, [breach(T0), breach(T0, "JOB_NOT_TRIGGERED")])
    later = T0 + timedelta(hours=1)
    changes = run(store, [ok(later), breach(later)], later)
    events = sorted((str(c.event), c.incident.signature) for c in changes)
    # JOB_FAILED breached again: updated, not resolved; JOB_NOT_TRIGGERED is healthy again
    assert events == [("RESOLVED", "JOB_NOT_TRIGGERED"), ("UPDATED", "JOB_FAILED")]
    [still_open] = store.list_incidents(IncidentStatus.OPEN)
    assert still_open.signature == "JOB_FAILED"


def test_reconciling_the_same_signals_twice_changes_nothing(store: SqlStore) -> None:
    first = [breach(T0), breach(T0, urn=PAYMENTS), breach(T0, "VOLUME_ANOMALY")]
    assert len(run(store, first)) == 3
    before = store.list_incidents()
    assert run(store, first) == []
    assert store.list_incidents() == before
    second = [breach(T0 + timedelta(hours=1)), ok(T0 + timedelta(hours=1), urn=PAYMENTS)]
    assert len(run(store, second)) == 2
    after_second = store.list_incidents()
    assert run(store, second) == []
    # replaying an older batch does not reopen what has been resolved since
    assert run(store, first) == []
    assert store.list_incidents() == after_second


def test_a_cause_that_comes_back_after_resolution_opens_a_new_incident(store: SqlStore) -> None:
    [first] = run(store, [breach(T0)])
    run(store, [ok(T0 + timedelta(hours=1))])
    [second] = run(store, [breach(T0 + timedelta(hours=2))])
    assert second.event is AlertEvent.OPENED
    assert second.incident.incident_id != first.incident.incident_id
    statuses = {i.incident_id: i.status for i in store.list_incidents()}
    assert statuses == {
        first.incident.incident_id: IncidentStatus.RESOLVED,
        second.incident.incident_id: IncidentStatus.OPEN,
    }


def test_a_generated_history_gives_one_incident_per_run_of_bad_days(store: SqlStore) -> None:
    """60 days of seeded health per (dataset, cause): every stretch of consecutive bad days is
    exactly one incident, open iff the stretch reaches the last day; replays change nothing."""
    rng = random.Random(20260216)
    causes = [
        (ORDERS, SignalKind.FRESHNESS, "JOB_FAILED"),
        (ORDERS, SignalKind.VOLUME, "VOLUME_ANOMALY"),
        (PAYMENTS, SignalKind.FRESHNESS, "JOB_NOT_TRIGGERED"),
    ]
    bad: dict[tuple[str, SignalKind, str], list[bool]] = {
        c: [rng.random() < 0.2 for _ in range(60)] for c in causes
    }
    for day in range(60):
        at = T0 + timedelta(days=day)
        batch = []
        for (urn, kind, signature), days in bad.items():
            part = f"dt={(at - timedelta(days=1)).date()}"
            if days[day]:
                batch.append(breach(at, signature, urn=urn, kind=kind, partition=part))
            else:
                batch.append(ok(at, urn=urn, kind=kind, partition=part))
        run(store, batch, at)
        assert run(store, batch, at) == []
    longest = 0
    for (urn, kind, signature), days in bad.items():
        key = f"{urn}|{kind}|{signature}"
        stretches: list[tuple[int, int]] = []
        for i, is_bad in enumerate(days):
            if is_bad and (i == 0 or not days[i - 1]):
                stretches.append((i, i))
            elif is_bad:
                stretches[-1] = (stretches[-1][0], i)
        longest = max(longest, *(last - first + 1 for first, last in stretches))
        incidents = sorted(store.list_incidents(dedup_key=key), key=lambda i: i.opened_at)
        assert len(incidents) == len(stretches), key
        for incident, (first, last) in zip(incidents, stretches, strict=True):
            assert incident.opened_at == T0 + timedelta(days=first)
            assert len(incident.signal_ids) == last - first + 1
            if last == 59:
                assert incident.status is IncidentStatus.OPEN
                assert incident.updated_at == T0 + timedelta(days=last)
            else:
                assert incident.status is IncidentStatus.RESOLVED
                assert incident.resolved_at == T0 + timedelta(days=last + 1)
    assert longest > 1  # the seed gives incidents that last several days


def test_blast_radius_is_taken_when_the_incident_opens(store: SqlStore) -> None:
    graph = {ORDERS: ["ds://mart/a"]}

    def downstream(urn: str) -> list[str]:
        return list(graph.get(urn, []))

    reconcile(store, [breach(T0)], T0, owner_of=lambda _u: None, downstream=downstream)
    graph[ORDERS] = ["ds://mart/a", "ds://mart/b"]
    [update] = reconcile(
        store,
        [breach(T0 + timedelta(hours=1))],
        T0,
        owner_of=lambda _u: None,
        downstream=downstream,
    )
    assert update.incident.blast_radius == ("ds://mart/a",)
    assert update.incident.owner_team is None
    assert replace(update.incident, blast_radius=()).blast_radius == ()


def test_a_concurrently_opened_incident_is_updated_instead(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two evaluators race: ours does not see the other's incident, its insert is refused by
    the one-open-incident-per-key constraint, and it updates the other's incident instead."""
    [theirs] = run(store, [breach(T0)])
    real = store.find_open_incident
    calls: list[str] = []

    def stale_once(key: str) -> object:
        calls.append(key)
        return None if len(calls) == 1 else real(key)

    monkeypatch.setattr(store, "find_open_incident", stale_once)
    late = breach(T0 + timedelta(minutes=1), severity=Severity.CRITICAL)
    [change] = run(store, [late])
    assert change.event is AlertEvent.UPDATED
    assert change.incident.incident_id == theirs.incident.incident_id
    assert change.incident.signal_ids == (theirs.signal.signal_id, late.signal_id)
    assert len(store.list_incidents()) == 1


def test_summaries_are_stored_without_pii(store: SqlStore) -> None:
    signal = replace(breach(T0), summary="row of jane.doe@example.com, call 415-555-0100")
    [change] = run(store, [signal])
    assert "jane.doe@example.com" not in change.incident.summary
    assert "415-555-0100" not in change.incident.summary
    assert change.incident.summary.count("<redacted>") == 2
