"""The signals mixin of SqlStore on every backend: signals and time-window event reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from signalfactory.core.errors import ConfigError, Terminal
from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.core.records import LifecycleEvent, LifecycleEventType
from signalfactory.knowledge import SqlStore

T0 = datetime(2026, 2, 16, 7, 0, tzinfo=UTC)
EST = timezone(timedelta(hours=-5))


def _sig(
    urn: str,
    kind: SignalKind,
    minutes: int,
    *,
    state: SignalState = SignalState.BREACH,
    partition: str | None = "dt=2026-02-15",
    signature: str = "JOB_FAILED",
) -> Signal:
    return Signal(
        dataset_urn=urn,
        kind=kind,
        state=state,
        signature=signature,
        severity=Severity.CRITICAL,
        evaluated_at=(T0 + timedelta(minutes=minutes)).astimezone(EST),
        summary=f"{signature} — Zürich ✓",
        partition=partition,
        run_id="run_1",
        details={"deadline": "2026-02-16T07:00:00Z", "observed": 1.5, "layers": ["gold"]},
    )


def test_signals_round_trip_and_filters(store: SqlStore) -> None:
    a = _sig("ds://a/x", SignalKind.FRESHNESS, 0)
    b = _sig("ds://a/x", SignalKind.VOLUME, 5, signature="VOLUME_ANOMALY")
    c = _sig(
        "ds://b/y", SignalKind.FRESHNESS, 10, state=SignalState.OK, signature="OK", partition=None
    )
    store.add_signals([a, b, c])
    store.add_signals([])
    got = store.list_signals()
    assert got == [a, b, c]
    assert got[0].evaluated_at.tzinfo == UTC
    assert got[0].evaluated_at == a.evaluated_at
    assert store.list_signals(dataset_urn="ds://a/x") == [a, b]
    assert store.list_signals(kind=SignalKind.FRESHNESS) == [a, c]
    assert store.list_signals(state="OK") == [c]
    assert store.list_signals(signature="VOLUME_ANOMALY") == [b]
    assert store.list_signals(since=T0 + timedelta(minutes=5)) == [b, c]
    assert store.list_signals(until=T0 + timedelta(minutes=5)) == [a, b]
    assert store.list_signals(limit=2, newest_first=True) == [c, b]
    with pytest.raises(ConfigError, match="limit"):
        store.list_signals(limit=0)


def test_a_signal_id_is_stored_once_and_a_batch_is_all_or_none(store: SqlStore) -> None:
    a = _sig("ds://a/x", SignalKind.FRESHNESS, 0)
    store.add_signals([a])
    fresh = _sig("ds://a/x", SignalKind.FRESHNESS, 1)
    with pytest.raises(Terminal, match="signal ids are unique"):
        store.add_signals([fresh, a])
    assert store.list_signals() == [a]


def test_latest_signal_per_dataset_kind_and_partition(store: SqlStore) -> None:
    old = _sig("ds://a/x", SignalKind.FRESHNESS, 0)
    new = _sig("ds://a/x", SignalKind.FRESHNESS, 30, state=SignalState.OK, signature="OK")
    whole = _sig("ds://a/x", SignalKind.FRESHNESS, 5, partition=None)
    other = _sig("ds://a/x", SignalKind.FRESHNESS, 40, partition="dt=2026-02-16")
    store.add_signals([old, whole, new, other])
    assert store.latest_signal("ds://a/x", SignalKind.FRESHNESS, "dt=2026-02-15") == new
    assert store.latest_signal("ds://a/x", SignalKind.FRESHNESS) == whole
    assert store.latest_signal("ds://a/x", SignalKind.VOLUME) is None
    ids = sorted(s.signal_id for s in store.latest_signals())
    assert ids == sorted(s.signal_id for s in (whole, new, other))
    assert new in store.latest_signals("ds://a/x")
    assert store.latest_signals("ds://b/y") == []
    assert store.latest_signals(["ds://b/y", "ds://a/x"]) == store.latest_signals()


def test_events_between_filters_by_dataset_type_and_window(store: SqlStore) -> None:
    def add(urn: str, kind: LifecycleEventType, minutes: int) -> LifecycleEvent:
        event = LifecycleEvent(
            kind,
            "run_1",
            urn,
            {"partition": {"dt": "2026-02-15"}},
            timestamp=(T0 + timedelta(minutes=minutes)).astimezone(EST),
        )
        store.add_event(event)
        return event

    started = add("ds://a/x", LifecycleEventType.JOB_RUN_STARTED, 0)
    committed = add("ds://a/x", LifecycleEventType.DATASET_WRITE_COMMITTED, 20)
    done = add("ds://a/x", LifecycleEventType.JOB_RUN_COMPLETED, 21)
    early = add("ds://a/x", LifecycleEventType.JOB_RUN_STARTED, -60)  # inserted last
    add("ds://b/y", LifecycleEventType.JOB_RUN_STARTED, 0)
    assert store.list_events_between("ds://a/x") == [early, started, committed, done]
    assert store.list_events_between("ds://a/x", since=T0, until=T0 + timedelta(minutes=20)) == [
        started,
        committed,
    ]
    only = store.list_events_between(
        "ds://a/x", event_types=[LifecycleEventType.DATASET_WRITE_COMMITTED]
    )
    assert only == [committed]
    assert only[0].timestamp.tzinfo == UTC
    assert store.list_events_between("ds://c/z") == []
