"""What only one backend does: Redis errors and group recovery, NATS acks from anywhere."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from conftest import require_service
from processing.bus.buskit import NATS_URL, REDIS_URL, backend_url, make_event
from signalfactory.core.errors import ConfigError
from signalfactory.processing.bus import BusUnavailable
from signalfactory.processing.bus.nats_bus import NatsBus
from signalfactory.processing.bus.redis_bus import RedisBus


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = backend_url("redis", uuid.uuid4().hex[:12])
    bus = RedisBus(url)
    try:
        bus.consume("probe", "probe")
    except BusUnavailable as exc:
        bus.close()
        require_service("redis", f"{REDIS_URL}: {exc.message[:200]}")
    try:
        yield url
    finally:
        bus.delete_stream()
        bus.close()


@pytest.fixture
def nats_url() -> Iterator[str]:
    url = backend_url("nats", uuid.uuid4().hex[:12])
    bus = NatsBus(url)
    try:
        bus.consume("probe", "probe")
    except BusUnavailable as exc:
        bus.close()
        require_service("nats", f"{NATS_URL}: {exc.message[:200]}")
    try:
        yield url
    finally:
        bus.delete_stream()
        bus.close()


def test_redis_key_of_another_type_is_a_config_error(redis_url: str) -> None:
    bus = RedisBus(redis_url)
    try:
        bus.delete_stream()
        bus._pub.set(bus.stream, "not a stream")  # someone else's key
        with pytest.raises(ConfigError, match="refused to publish"):
            bus.publish(make_event(1))
        with pytest.raises(ConfigError, match="refused to consume"):
            bus.consume("g", "c")
    finally:
        bus.close()


def test_redis_group_is_made_again_after_the_stream_was_deleted(redis_url: str) -> None:
    consumer, admin = RedisBus(redis_url), RedisBus(redis_url)
    try:
        first = make_event(1)
        admin.publish(first)
        assert [d.event.id for d in consumer.consume("g", "c")] == [first.id]
        admin.delete_stream()  # the consumer still thinks group "g" exists
        second = make_event(2)
        admin.publish(second)
        assert [d.event.id for d in consumer.consume("g", "c")] == [second.id]
    finally:
        consumer.close()
        admin.close()


def test_nats_delivery_can_be_acked_by_another_connection(nats_url: str) -> None:
    reader, acker = NatsBus(nats_url), NatsBus(nats_url)
    try:
        event = make_event(1)
        reader.publish(event)
        (delivery,) = reader.consume("g", "c")
        acker.ack("g", delivery)  # the delivery id is the ack subject: no state needed
        acker.close()  # flushes the ack
        assert reader.consume("g", "c", block_ms=1500) == []  # ack_wait passed: not back
    finally:
        reader.close()
        acker.close()


def test_nats_names_that_cannot_be_consumers_are_config_errors(nats_url: str) -> None:
    bus = NatsBus(nats_url)
    try:
        with pytest.raises(ConfigError, match="durable"):
            bus.consume("signals.v1", "c")
    finally:
        bus.close()
