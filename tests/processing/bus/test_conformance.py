"""One conformance suite for every evidence bus backend: store, Redis Streams, NATS JetStream."""

from __future__ import annotations

import threading
import time
import uuid

from processing.bus.buskit import REDELIVER_S, BusFactory, make_event
from signalfactory.processing.bus import Delivery, EvidenceBus


def _group() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def _drain(
    bus: EvidenceBus, group: str, consumer: str = "c1", *, ack: bool = True
) -> list[Delivery]:
    """Everything the group can be handed right now (acknowledged unless ``ack=False``)."""
    got: list[Delivery] = []
    while batch := bus.consume(group, consumer, max_count=50):
        got.extend(batch)
        if ack:
            for delivery in batch:
                bus.ack(group, delivery)
    return got


def test_publish_consume_ack_in_order(bus_factory: BusFactory) -> None:
    bus = bus_factory()
    events = [make_event(n) for n in range(7)]
    for event in events:
        bus.publish(event)
    group = _group()
    got = _drain(bus, group)
    assert [d.event for d in got] == events  # the whole envelope round-trips, in order
    assert all(d.attempt == 1 for d in got)
    assert len({d.delivery_id for d in got}) == len(events)
    assert _drain(bus, group) == []  # acknowledged: never handed out again


def test_republished_id_is_delivered_once(bus_factory: BusFactory) -> None:
    bus = bus_factory()
    first = make_event(1)
    bus.publish(first)
    bus.publish(make_event(2))
    bus.publish(make_event(3, event_id=first.id))  # the same id, even with other data
    bus.publish(first)
    got = _drain(bus, _group())
    assert [d.event.id for d in got].count(first.id) == 1
    assert [d.event.data["n"] for d in got] == [1, 2]


def test_unacked_delivery_comes_back(bus_factory: BusFactory) -> None:
    bus = bus_factory()
    kept, dropped = make_event(1), make_event(2)
    bus.publish(kept)
    bus.publish(dropped)
    group = _group()
    first = bus.consume(group, "c1", max_count=10)
    assert [d.event.id for d in first] == [kept.id, dropped.id]
    bus.ack(group, first[0])  # the consumer "crashes" before acknowledging the second
    time.sleep(REDELIVER_S * 2.5)
    again = bus.consume(group, "c2", max_count=10, block_ms=int(REDELIVER_S * 4000))
    assert [d.event.id for d in again] == [dropped.id]
    assert again[0].attempt == 2
    bus.ack(group, again[0])
    time.sleep(REDELIVER_S * 2.5)
    assert bus.consume(group, "c2", max_count=10) == []  # acknowledged now: gone for good


def test_consumers_of_one_group_share_the_work(bus_factory: BusFactory) -> None:
    one, two = bus_factory(), bus_factory()  # two connections, like two worker processes
    events = [make_event(n) for n in range(10)]
    for event in events:
        one.publish(event)
    group = _group()
    first = one.consume(group, "worker-1", max_count=4)
    second = two.consume(group, "worker-2", max_count=100)
    assert len(first) == 4
    ids_first = {d.event.id for d in first}
    ids_second = {d.event.id for d in second}
    assert not ids_first & ids_second
    assert ids_first | ids_second == {e.id for e in events}
    for d in first:
        one.ack(group, d)
    for d in second:
        two.ack(group, d)


def test_each_group_gets_every_event(bus_factory: BusFactory) -> None:
    bus = bus_factory()
    events = [make_event(n) for n in range(5)]
    for event in events[:3]:
        bus.publish(event)
    signals, lineage = _group(), _group()
    got_signals = _drain(bus, signals)
    for event in events[3:]:
        bus.publish(event)
    got_signals += _drain(bus, signals)
    got_lineage = _drain(bus, lineage, "other")
    expected = [e.id for e in events]
    assert [d.event.id for d in got_signals] == expected
    assert [d.event.id for d in got_lineage] == expected


def test_blocking_consume_returns_empty_when_nothing_comes(bus_factory: BusFactory) -> None:
    bus = bus_factory()
    assert bus.consume(_group(), "c1", max_count=5, block_ms=50) == []


def test_concurrent_consumers_never_get_the_same_event(bus_factory: BusFactory) -> None:
    buses = [bus_factory() for _ in range(3)]
    events = [make_event(n) for n in range(60)]
    for event in events:
        buses[0].publish(event)
    group = _group()
    got: dict[int, list[str]] = {i: [] for i in range(len(buses))}

    def work(i: int) -> None:
        while batch := buses[i].consume(group, f"w{i}", max_count=7):
            for d in batch:
                got[i].append(d.event.id)
                buses[i].ack(group, d)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(buses))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [event_id for ids in got.values() for event_id in ids]
    assert sorted(everything) == sorted(e.id for e in events)  # each exactly once


def test_concurrent_publishers_lose_nothing_for_a_live_consumer(bus_factory: BusFactory) -> None:
    producers = [bus_factory() for _ in range(3)]
    consumer = bus_factory()
    group = _group()
    consumer.consume(group, "c", max_count=1)  # the group exists before publishing starts
    per_producer = 40
    expected = {f"p{i}-{n}-{uuid.uuid4().hex[:6]}" for i in range(3) for n in range(per_producer)}
    ids_of = [sorted(e for e in expected if e.startswith(f"p{i}-")) for i in range(3)]

    def produce(i: int) -> None:
        for event_id in ids_of[i]:
            producers[i].publish(make_event(0, event_id=event_id))

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    got: list[str] = []
    while any(t.is_alive() for t in threads):  # consume while the producers race
        got += [d.event.id for d in _drain(consumer, group, "c")]
    for thread in threads:
        thread.join()
    got += [d.event.id for d in _drain(consumer, group, "c")]
    assert sorted(got) == sorted(expected)
