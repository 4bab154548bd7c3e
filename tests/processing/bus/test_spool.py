"""SpoolingPublisher: a producer never fails because the bus is down; the spool is delivered."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from processing.bus.buskit import BusFactory, make_event
from signalfactory.core.observability import CloudEvent
from signalfactory.knowledge import SqlStore
from signalfactory.processing.bus import (
    BusUnavailable,
    Delivery,
    EvidenceBus,
    SpoolingPublisher,
    StoreBus,
)
from signalfactory.processing.bus.nats_bus import NatsBus
from signalfactory.processing.bus.redis_bus import RedisBus


class FlakyBus:
    """A bus that accepts ``accept`` publishes, then is "down" until ``accept`` is raised."""

    def __init__(self, inner: EvidenceBus, accept: int) -> None:
        self.inner = inner
        self.accept = accept
        self.published: list[str] = []

    @property
    def name(self) -> str:
        return "flaky"

    def publish(self, event: CloudEvent) -> None:
        if len(self.published) >= self.accept:
            raise BusUnavailable("down for the test")
        self.inner.publish(event)
        self.published.append(event.id)

    def consume(
        self, group: str, consumer: str, *, max_count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        return self.inner.consume(group, consumer, max_count=max_count, block_ms=block_ms)

    def ack(self, group: str, delivery: Delivery) -> None:
        self.inner.ack(group, delivery)

    def close(self) -> None:
        self.inner.close()


def _ids_in_spool(spool: Path) -> list[str]:
    ids = []
    for path in sorted(spool.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        ids += [CloudEvent.from_json(line).id for line in path.read_bytes().splitlines() if line]
    return ids


def _consume_all(bus: EvidenceBus, group: str) -> list[str]:
    got: list[str] = []
    while batch := bus.consume(group, "c", max_count=50):
        for d in batch:
            got.append(d.event.id)
            bus.ack(group, d)
    return got


@pytest.mark.parametrize(
    "down",
    [
        lambda: RedisBus("redis://127.0.0.1:1/0"),
        lambda: NatsBus("nats://127.0.0.1:1"),
    ],
    ids=["redis", "nats"],
)
def test_publish_to_a_down_bus_spools_and_returns(down: object, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    publisher = SpoolingPublisher(down(), spool)  # type: ignore[operator]
    events = [make_event(n) for n in range(3)]
    try:
        for event in events:
            publisher.publish(event)  # does not raise
        assert _ids_in_spool(spool) == [e.id for e in events]
        assert publisher.pending() == 3
        assert publisher.flush() == 0  # still down: nothing lost, nothing sent
        assert _ids_in_spool(spool) == [e.id for e in events]
    finally:
        publisher.close()


def test_spool_lines_are_whole_envelopes_without_extra_fields(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    publisher = SpoolingPublisher(RedisBus("redis://127.0.0.1:1/0"), spool)
    event = make_event(1)
    publisher.publish(event)
    publisher.close()
    (line,) = b"".join(p.read_bytes() for p in spool.iterdir()).splitlines()
    assert CloudEvent.from_json(line) == event
    assert oct(next(spool.iterdir()).stat().st_mode & 0o777) == oct(0o600)


def test_flush_to_a_live_bus_delivers_each_event_once(
    bus_factory: BusFactory, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    down = SpoolingPublisher(RedisBus("redis://127.0.0.1:1/0"), spool)
    events = [make_event(n) for n in range(5)]
    for event in events:
        down.publish(event)
    down.close()
    live = SpoolingPublisher(bus_factory(), spool, flush_interval_s=3600)
    assert live.flush() == 5
    assert not list(spool.iterdir())
    assert live.flush() == 0
    assert _consume_all(live, f"g-{uuid.uuid4().hex[:8]}") == [e.id for e in events]


def test_a_crash_mid_flush_resends_but_delivers_once(store: SqlStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    bus = StoreBus(store)
    flaky = FlakyBus(bus, accept=0)
    publisher = SpoolingPublisher(flaky, spool, flush_interval_s=3600)
    events = [make_event(n) for n in range(6)]
    for event in events:
        publisher.publish(event)
    saved = tmp_path / "saved"
    shutil.copytree(spool, saved)
    flaky.accept = 4  # the bus takes four, then goes down again mid-flush
    assert publisher.flush() == 4
    assert _ids_in_spool(spool) == [e.id for e in events[4:]]
    # A crash that left the original file behind: it is sent again from the start.
    for path in saved.iterdir():
        shutil.copy2(path, spool / path.name)
    flaky.accept = 100
    publisher.flush()
    assert not list(spool.iterdir())
    assert flaky.published.count(events[0].id) == 2  # re-sent ...
    assert _consume_all(bus, "g") == [e.id for e in events]  # ... and delivered once


def test_events_published_while_spooling_keep_their_order(store: SqlStore, tmp_path: Path) -> None:
    bus = StoreBus(store)
    flaky = FlakyBus(bus, accept=1)
    publisher = SpoolingPublisher(flaky, tmp_path / "spool", flush_interval_s=3600)
    events = [make_event(n) for n in range(5)]
    publisher.publish(events[0])  # accepted
    publisher.publish(events[1])  # bus down: spooled
    flaky.accept = 100  # back up, but the spool is older: the next ones queue behind it
    publisher.publish(events[2])
    publisher.publish(events[3])
    assert flaky.published == [events[0].id]
    assert publisher.flush() == 3
    publisher.publish(events[4])  # spool empty: straight to the bus
    assert flaky.published == [e.id for e in events]
    assert _consume_all(bus, "g") == [e.id for e in events]


def test_publish_flushes_opportunistically(store: SqlStore, tmp_path: Path) -> None:
    flaky = FlakyBus(StoreBus(store), accept=0)
    publisher = SpoolingPublisher(flaky, tmp_path / "spool", flush_interval_s=0)
    first, second = make_event(1), make_event(2)
    publisher.publish(first)
    flaky.accept = 100
    publisher.publish(second)  # the flush interval (0) has passed: flush, then publish
    assert flaky.published == [first.id, second.id]
    assert publisher.pending() == 0


def test_flush_sends_every_publishers_files_and_skips_locked_ones(
    store: SqlStore, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    writers = [SpoolingPublisher(RedisBus("redis://127.0.0.1:1/0"), spool) for _ in range(2)]
    a, b, c = make_event(1), make_event(2), make_event(3)
    writers[0].publish(a)
    writers[1].publish(b)
    writers[0].publish(c)
    assert len(list(spool.iterdir())) == 2  # one file per publisher
    locked = next(
        p for p in spool.iterdir() if CloudEvent.from_json(p.read_bytes().split()[0]) == b
    )
    bus = StoreBus(store)
    flusher = SpoolingPublisher(bus, spool, flush_interval_s=3600)
    fd = os.open(locked, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process is busy with this file
        assert flusher.flush() == 2
        assert _ids_in_spool(spool) == [b.id]
    finally:
        os.close(fd)
    assert flusher.flush() == 1
    assert sorted(_consume_all(bus, "g")) == sorted([a.id, b.id, c.id])
    for writer in writers:
        writer.close()


def test_spooling_publisher_is_a_bus(store: SqlStore, tmp_path: Path) -> None:
    publisher = SpoolingPublisher(StoreBus(store), tmp_path / "spool")
    assert isinstance(publisher, EvidenceBus)
    assert publisher.name == "store"
    event = make_event(1)
    publisher.publish(event)
    (delivery,) = publisher.consume("g", "c")
    assert delivery.event == event
    publisher.ack("g", delivery)
    assert publisher.consume("g", "c") == []


def test_an_unwritable_spool_drops_the_event_without_raising(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("occupied")
    publisher = SpoolingPublisher(RedisBus("redis://127.0.0.1:1/0"), not_a_dir)
    publisher.publish(make_event(1))
    publisher.publish(make_event(2))
    assert publisher.dropped == 2
    assert not_a_dir.read_text() == "occupied"
    publisher.close()


_WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from signalfactory.core.observability import CloudEvent
from signalfactory.processing.bus import SpoolingPublisher
from signalfactory.processing.bus.redis_bus import RedisBus

writer, count, spool = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
publisher = SpoolingPublisher(RedisBus("redis://127.0.0.1:1/0"), spool, flush_interval_s=3600)
for n in range(count):
    publisher.publish(CloudEvent(
        id=f"{writer}-{n:04d}", source="test", type="t", subject="s",
        time=datetime.now(UTC), data={"n": n},
    ))
publisher.bus.close()
"""


def test_processes_spool_while_another_flushes(store: SqlStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    count = 150
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, name, str(count), str(spool)])
        for name in ("a", "b")
    ]
    bus = StoreBus(store)
    flusher = SpoolingPublisher(bus, spool, flush_interval_s=3600)
    while any(w.poll() is None for w in writers):
        flusher.flush()  # races the writers' appends on purpose
    assert [w.returncode for w in writers] == [0, 0]
    flusher.flush()
    assert flusher.pending() == 0
    got = _consume_all(bus, "g")
    for name in ("a", "b"):
        assert [i for i in got if i.startswith(name)] == [f"{name}-{n:04d}" for n in range(count)]
    assert len(got) == 2 * count
