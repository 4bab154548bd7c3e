"""BusPublisher (the run hook) and open_bus/open_backend (choosing a bus from a URL)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from signalfactory.core.errors import ConfigError
from signalfactory.core.observability import (
    EVIDENCE_EVENT_TYPE,
    LIFECYCLE_EVENT_PREFIX,
    CloudEvent,
)
from signalfactory.core.records import (
    Evidence,
    GateResult,
    LifecycleEvent,
    LifecycleEventType,
    Stage,
)
from signalfactory.knowledge import SqlStore
from signalfactory.processing.bus import (
    BUS_URL_ENV,
    BusPublisher,
    SpoolingPublisher,
    StoreBus,
    open_backend,
    open_bus,
)
from signalfactory.processing.bus.nats_bus import NatsBus
from signalfactory.processing.bus.redis_bus import RedisBus

URN = "ds://curated/orders_enriched"
AT = datetime(2026, 2, 15, 2, 7, tzinfo=UTC)


def _evidence(gate: str, result: GateResult) -> Evidence:
    return Evidence(
        dataset_urn=URN,
        run_id="run-1",
        stage=Stage.GOLD,
        gate=gate,
        result=result,
        failure_signature=None if result is GateResult.PASS else "UNKNOWN_ENUM:order_type:X",
        metrics={"rows": 10},
        timestamp=AT,
    )


def _event(kind: LifecycleEventType) -> LifecycleEvent:
    return LifecycleEvent(kind, "run-1", URN, {"partition": {"dt": "2026-02-15"}}, AT)


def test_publishes_evidence_and_lifecycle_events_as_cloudevents(
    store: SqlStore, tmp_path: Path
) -> None:
    hook = BusPublisher.open("store", store=store, spool_dir=tmp_path / "spool")
    started = _event(LifecycleEventType.JOB_RUN_STARTED)
    passed = _evidence("G3_SCHEMA", GateResult.PASS)
    failed = _evidence("G4_CONTRACT", GateResult.FAIL)
    hook.on_event(started)
    hook.on_evidence(passed)
    hook.on_evidence(failed)
    hook.on_evidence(failed)  # a duplicate hook call: delivered once
    hook.on_alert({"dataset_urn": URN})  # alerts are not bus events
    bus = StoreBus(store)
    got = [d.event for d in bus.consume("signals", "c")]
    assert got == [
        CloudEvent.of_lifecycle(started),
        CloudEvent.of_evidence(passed),
        CloudEvent.of_evidence(failed),
    ]
    assert [e.id for e in got] == [started.event_id, passed.evidence_id, failed.evidence_id]
    assert got[0].type == f"{LIFECYCLE_EVENT_PREFIX}JobRunStarted"
    assert got[1].type == EVIDENCE_EVENT_TYPE
    assert got[2].data["failure_signature"] == "UNKNOWN_ENUM:order_type:X"
    hook.close()


class _Broken:
    name = "broken"

    def publish(self, event: CloudEvent) -> None:
        raise RuntimeError("boom")

    def consume(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise RuntimeError("boom")

    def ack(self, *args: Any) -> None:
        raise RuntimeError("boom")

    def close(self) -> None:
        raise RuntimeError("boom")


def test_never_raises_into_the_run(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("the spool cannot be created here")
    hook = BusPublisher(SpoolingPublisher(_Broken(), not_a_dir))  # bus and spool both fail
    hook.on_event(_event(LifecycleEventType.JOB_RUN_FAILED))
    hook.on_evidence(_evidence("G3_SCHEMA", GateResult.FAIL))
    hook.on_run_end(None)  # type: ignore[arg-type]
    hook.close()
    assert not_a_dir.read_text() == "the spool cannot be created here"


def test_run_end_sends_what_was_spooled(store: SqlStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    offline = BusPublisher(SpoolingPublisher(RedisBus("redis://127.0.0.1:1/0"), spool))
    evidence = _evidence("G3_SCHEMA", GateResult.PASS)
    offline.on_evidence(evidence)
    offline.close()
    online = BusPublisher(SpoolingPublisher(StoreBus(store), spool, flush_interval_s=3600))
    online.on_run_end(None)  # type: ignore[arg-type]
    assert [d.event.id for d in StoreBus(store).consume("g", "c")] == [evidence.evidence_id]
    assert not list(spool.iterdir())


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("store", StoreBus),
        (" store ", StoreBus),
        ("redis://127.0.0.1:6379/0", RedisBus),
        ("nats://127.0.0.1:4222", NatsBus),
    ],
)
def test_open_backend_by_url(store: SqlStore, url: str, kind: type) -> None:
    bus = open_backend(url, store=store)  # connecting is lazy: no server needed here
    try:
        assert isinstance(bus, kind)
    finally:
        bus.close()


def test_open_bus_wraps_the_backend_in_a_spool(store: SqlStore, tmp_path: Path) -> None:
    bus = open_bus("store", store=store, spool_dir=tmp_path / "spool")
    assert isinstance(bus, SpoolingPublisher)
    assert isinstance(bus.bus, StoreBus)
    assert bus.name == "store"


@pytest.mark.parametrize("url", ["kafka://broker:9092", "stor", "", "store://x", "redis"])
def test_unknown_bus_url_is_a_config_error(store: SqlStore, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_backend(url, store=store)
    message = caught.value.message
    assert repr(url) in message
    assert BUS_URL_ENV in message
    for allowed in ("'store'", "redis://", "nats://"):
        assert allowed in message


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: RedisBus("redis://127.0.0.1:6379/0?min_idle_ms=0"), "min_idle_ms"),
        (lambda: RedisBus("redis://127.0.0.1:6379/0?maxlen=abc"), "maxlen"),
        (lambda: NatsBus("nats://127.0.0.1:4222?ack_wait_s=-1"), "ack_wait_s"),
        (lambda: NatsBus("nats://127.0.0.1:4222?stream=a.b"), "stream"),
        (lambda: StoreBus(None, visibility_s=0), "visibility_s"),  # type: ignore[arg-type]
    ],
)
def test_bad_bus_options_are_config_errors(make: Any, option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        make()


def test_consume_arguments_are_checked(store: SqlStore) -> None:
    bus = StoreBus(store)
    bad: list[Mapping[str, Any]] = [
        {"group": "", "consumer": "c"},
        {"group": "g", "consumer": "c", "max_count": 0},
        {"group": "g", "consumer": "c", "block_ms": -1},
    ]
    for kwargs in bad:
        with pytest.raises(ConfigError):
            bus.consume(**kwargs)
