"""The embedded evidence bus: an append-only event log in the metadata store.

The default backend (``bus_url = "store"``): nothing to run, works on SQLite and PostgreSQL,
shared by every process that opens the same store. Offsets and leases per consumer group
live in the store too (see :mod:`signalfactory.knowledge.store_bus`); an unacknowledged
delivery is handed out again once its visibility timeout has passed.
"""

from __future__ import annotations

import time

from signalfactory.core.errors import ConfigError, StoreError
from signalfactory.core.observability import CloudEvent
from signalfactory.knowledge import SqlStore
from signalfactory.processing.bus.base import BusUnavailable, Delivery, check_consume_args

__all__ = ["DEFAULT_VISIBILITY_S", "StoreBus"]

DEFAULT_VISIBILITY_S = 30.0
_POLL_S = 0.05


class StoreBus:
    """:class:`~signalfactory.processing.bus.base.EvidenceBus` on a :class:`SqlStore`.

    ``visibility_s``: how long a delivery stays leased to its consumer before it is handed
    out again. The store is not closed by :meth:`close` (its owner closes it).
    """

    def __init__(self, store: SqlStore, *, visibility_s: float = DEFAULT_VISIBILITY_S) -> None:
        if not visibility_s > 0:
            raise ConfigError(
                f"visibility_s must be a positive number of seconds, got {visibility_s!r}"
            )
        self.store = store
        self.visibility_s = float(visibility_s)

    @property
    def name(self) -> str:
        return "store"

    def __repr__(self) -> str:
        return f"StoreBus({self.store.display_url!r})"

    def publish(self, event: CloudEvent) -> None:
        try:
            self.store.bus_append(event.to_dict())
        except StoreError as exc:
            raise BusUnavailable(f"cannot publish to the store bus: {exc.message}") from None

    def consume(
        self, group: str, consumer: str, *, max_count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        check_consume_args(group, consumer, max_count, block_ms)
        deadline = time.monotonic() + block_ms / 1000
        while True:
            try:
                entries = self.store.bus_claim(
                    group, consumer, max_count=max_count, visibility_s=self.visibility_s
                )
            except StoreError as exc:
                raise BusUnavailable(f"cannot consume from the store bus: {exc.message}") from None
            if entries or time.monotonic() >= deadline:
                return [
                    Delivery(CloudEvent.from_dict(e.envelope), str(e.seq), e.attempt)
                    for e in entries
                ]
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))

    def ack(self, group: str, delivery: Delivery) -> None:
        try:
            seq = int(delivery.delivery_id)
        except ValueError:
            raise ConfigError(
                f"delivery id {delivery.delivery_id!r} was not handed out by the store bus "
                "(its ids are log positions); ack a delivery on the bus that consumed it"
            ) from None
        try:
            self.store.bus_ack(group, seq)
        except StoreError as exc:
            raise BusUnavailable(f"cannot ack on the store bus: {exc.message}") from None

    def close(self) -> None:
        return None
