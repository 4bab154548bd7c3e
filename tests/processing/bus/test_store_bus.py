"""The store backend's own parts: retention, pending counts, a closed store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processing.bus.buskit import make_event
from signalfactory.knowledge import SqlStore
from signalfactory.processing.bus import BusUnavailable, Delivery, StoreBus


def test_trim_drops_old_entries_and_their_leases(store: SqlStore) -> None:
    bus = StoreBus(store)
    old = [make_event(n) for n in range(3)]
    for event in old:
        bus.publish(event)
    leased = bus.consume("g", "c", max_count=2)  # two old entries handed out, not acked
    assert store.bus_pending("g") == 2
    cut = datetime.now(UTC) + timedelta(microseconds=1)
    assert store.bus_trim(datetime(2000, 1, 1, tzinfo=UTC)) == 0
    assert store.bus_trim(cut) == 3
    assert store.bus_pending("g") == 0
    new = make_event(9)
    bus.publish(new)
    assert [d.event.id for d in bus.consume("g", "c")] == [new.id]
    assert [d.event.id for d in bus.consume("fresh", "c")] == [new.id]
    assert leased  # the trimmed leases were real


def test_pending_counts_unacked_deliveries_per_group(store: SqlStore) -> None:
    bus = StoreBus(store)
    for n in range(4):
        bus.publish(make_event(n))
    got = bus.consume("g", "c", max_count=3)
    assert store.bus_pending("g") == 3
    assert store.bus_pending("other") == 0
    bus.ack("g", got[0])
    bus.ack("g", got[0])  # acknowledging twice is harmless
    assert store.bus_pending("g") == 2


def test_a_closed_store_makes_the_bus_unavailable(store: SqlStore) -> None:
    bus = StoreBus(store)
    store.close()
    with pytest.raises(BusUnavailable, match="closed"):
        bus.publish(make_event(1))
    with pytest.raises(BusUnavailable, match="closed"):
        bus.consume("g", "c")
    with pytest.raises(BusUnavailable, match="closed"):
        bus.ack("g", Delivery(make_event(1), "1", 1))


def test_a_foreign_delivery_id_is_a_config_error(store: SqlStore) -> None:
    from signalfactory.core.errors import ConfigError

    with pytest.raises(ConfigError, match="store bus"):
        StoreBus(store).ack("g", Delivery(make_event(1), "1700000000000-0", 1))
