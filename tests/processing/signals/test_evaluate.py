"""evaluate_all over a real store, and record_signals storing only what is news."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from signalfactory.core.errors import ConfigError, NotFoundError
from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.core.records import DatasetRecord, LifecycleEvent, LifecycleEventType
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.processing.signals import evaluate as ev
from signalfactory.processing.signals.evaluate import evaluate_all, load_engine, record_signals

URN = "ds://raw/payments"
AT = datetime(2026, 2, 16, 7, 31, tzinfo=UTC)  # dt=2026-02-15 missed (02:00 EST + 30m)


def _record(urn: str = URN, expected: str = "02:00 ET daily") -> DatasetRecord:
    return DatasetRecord(
        urn=urn,
        owner_team="payments",
        tier="TIER_1",
        spec={
            "urn": urn,
            "slo": {
                "freshness": {
                    "expected_update_by": expected,
                    "grace_period": "30m",
                    "partition_key": "dt",
                }
            },
        },
        policy={},
        source_files={},
        registered_at=datetime(2026, 2, 15, 12, tzinfo=UTC),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'sf.db'}")
    try:
        opened.put_dataset(_record())
        yield opened
    finally:
        opened.close()


def test_evaluate_all_runs_the_engines_on_registered_datasets(store: SqlStore) -> None:
    signals = evaluate_all(store, AT, engines=["freshness", "volume"])
    assert [(s.partition, s.signature) for s in signals] == [("dt=2026-02-15", "JOB_NOT_TRIGGERED")]
    assert signals[0].evaluated_at == AT
    # The same instant in another zone is the same evaluation.
    other = evaluate_all(store, AT.astimezone(timezone(timedelta(hours=-5))), engines=["freshness"])
    assert [s.evaluated_at for s in other] == [AT]
    assert evaluate_all(store, AT - timedelta(minutes=2), engines=["freshness"]) == []


def test_re_registering_does_not_hide_a_missed_partition(store: SqlStore) -> None:
    started = datetime(2026, 2, 15, 5, tzinfo=UTC)  # the 2026-02-14 run, then nothing
    store.add_event(
        LifecycleEvent(
            LifecycleEventType.JOB_RUN_STARTED,
            "r1",
            URN,
            {"partition": {"dt": "2026-02-14"}},
            timestamp=started,
        )
    )
    store.put_dataset(replace(_record(), registered_at=AT - timedelta(minutes=1)))
    signals = evaluate_all(store, AT, engines=["freshness"])
    assert ("dt=2026-02-15", "JOB_NOT_TRIGGERED") in [(s.partition, s.signature) for s in signals]


def test_evaluate_all_rejects_bad_arguments(store: SqlStore) -> None:
    with pytest.raises(ConfigError, match="time zone"):
        evaluate_all(store, AT.replace(tzinfo=None))
    with pytest.raises(NotFoundError, match=r"ds://raw/nope.*Registered: ds://raw/payments"):
        evaluate_all(store, AT, datasets=["ds://raw/nope"])
    with pytest.raises(ConfigError, match=r"unknown signal engine 'speed'.*freshness"):
        evaluate_all(store, AT, engines=["speed"])


def test_a_bad_slo_raises_or_is_skipped_and_logged(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.put_dataset(_record("ds://raw/broken", expected="2 o'clock"))
    with pytest.raises(ConfigError, match="expected_update_by"):
        evaluate_all(store, AT, engines=["freshness"])
    with caplog.at_level(logging.WARNING):
        signals = evaluate_all(store, AT, engines=["freshness"], skip_invalid=True)
    assert {s.dataset_urn for s in signals} == {URN}
    assert "ds://raw/broken" in caplog.text
    assert "expected_update_by" in caplog.text


def test_missing_engine_modules_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ev.ENGINES, "ghost", "signalfactory.processing.signals.ghost:evaluate")  # type: ignore[index]
    assert load_engine("ghost") is None
    assert load_engine("freshness") is ev.evaluate_freshness


def _signal(state: SignalState, signature: str, at: datetime, partition: str = "dt=1") -> Signal:
    return Signal(
        URN,
        SignalKind.FRESHNESS,
        state,
        signature,
        Severity.CRITICAL if state is SignalState.BREACH else Severity.INFO,
        at,
        f"{signature} at {at}",
        partition=partition,
    )


def test_record_signals_stores_changes_not_repeats(store: SqlStore) -> None:
    t = AT
    ok = _signal(SignalState.OK, "OK", t)
    assert record_signals(store, [ok]) == [ok]  # nothing stored yet: stored
    assert record_signals(store, [_signal(SignalState.OK, "OK", t + timedelta(seconds=30))]) == []
    breach = _signal(SignalState.BREACH, "JOB_FAILED", t + timedelta(minutes=1))
    assert record_signals(store, [breach]) == [breach]
    repeat = _signal(SignalState.BREACH, "JOB_FAILED", t + timedelta(minutes=2))
    assert record_signals(store, [repeat]) == []
    heartbeat = _signal(SignalState.BREACH, "JOB_FAILED", t + timedelta(hours=1, minutes=1))
    assert record_signals(store, [heartbeat]) == [heartbeat]
    changed = replace(
        heartbeat,
        signature="JOB_RUNNING_SLOW",
        signal_id="sig_changed",
        evaluated_at=t + timedelta(hours=1, minutes=2),
    )
    other_partition = _signal(SignalState.OK, "OK", t, partition="dt=2")
    healed = _signal(SignalState.OK, "OK", t + timedelta(hours=2))
    assert record_signals(store, [changed, other_partition, healed]) == [
        changed,
        other_partition,
        healed,
    ]
    stored = store.list_signals(dataset_urn=URN, kind=SignalKind.FRESHNESS)
    assert [s.signal_id for s in stored] == [
        x.signal_id for x in (ok, other_partition, breach, heartbeat, changed, healed)
    ]
    assert store.latest_signal(URN, SignalKind.FRESHNESS, "dt=1") == healed
    assert record_signals(store, [healed]) == []  # recording the same signal twice: a no-op
    again = _signal(SignalState.BREACH, "JOB_FAILED", t + timedelta(hours=5))
    assert record_signals(store, [again], repeat_breach_after=None) == [again]  # a change
    later = _signal(SignalState.BREACH, "JOB_FAILED", t + timedelta(hours=9))
    assert record_signals(store, [later], repeat_breach_after=None) == []  # no heartbeats
