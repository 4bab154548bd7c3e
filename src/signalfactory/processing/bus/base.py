"""The evidence bus interface: publish CloudEvents envelopes, consume them in groups, ack.

Every backend (the metadata store, Redis Streams, NATS JetStream) gives the same guarantees:

* **at-least-once**: a delivery that is not acknowledged comes back to the group (after the
  store's visibility timeout, Redis' ``min_idle_ms`` via ``XAUTOCLAIM``, NATS' ``ack_wait``),
  with ``attempt`` counting the deliveries; consumers de-duplicate on ``event.id``;
* **de-duplicated publishing**: publishing an envelope whose ``id`` was already published is
  accepted and not delivered twice (the store keeps ids unique for the life of the log, Redis
  for ``dedup_ttl_s``, NATS within the stream's duplicate window);
* **groups**: each consumer group gets every event; the consumers of one group share them.
  A group that consumes for the first time starts at the oldest event still retained.

Errors: a bus that cannot be reached raises :class:`BusUnavailable` (a ``Transient`` error,
so :class:`~signalfactory.processing.bus.spool.SpoolingPublisher` spools and retries later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from signalfactory.core.errors import ConfigError, Transient
from signalfactory.core.observability import CloudEvent

__all__ = [
    "DEFAULT_SUBJECT",
    "BusUnavailable",
    "Delivery",
    "EvidenceBus",
    "check_consume_args",
]

#: The PRD's Kafka topic, kept as the Redis stream key and the NATS subject.
DEFAULT_SUBJECT = "signal_factory.evidence"


class BusUnavailable(Transient):
    """The bus could not be reached or did not answer in time; retrying later may work."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event handed to one consumer: ack it with :meth:`EvidenceBus.ack` once processed.

    ``delivery_id`` identifies this hand-out to the backend (the store's log position, the
    Redis entry id, the NATS ack subject); ``attempt`` is 1 on the first delivery and goes up
    each time an unacknowledged delivery comes back.
    """

    event: CloudEvent
    delivery_id: str
    attempt: int


@runtime_checkable
class EvidenceBus(Protocol):
    """What every evidence bus backend provides (see the module docstring for guarantees)."""

    @property
    def name(self) -> str:
        """The backend's name: ``store``, ``redis`` or ``nats``."""
        ...

    def publish(self, event: CloudEvent) -> None:
        """Append ``event``; a no-op if an event with its id was published before."""
        ...

    def consume(
        self, group: str, consumer: str, *, max_count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        """Up to ``max_count`` deliveries for ``consumer`` of ``group``, oldest first.

        Redeliveries of unacknowledged events come first. With nothing to deliver, waits up
        to ``block_ms`` milliseconds for new events (0: return at once) and returns ``[]``.
        """
        ...

    def ack(self, group: str, delivery: Delivery) -> None:
        """Mark ``delivery`` processed by ``group``: it is not delivered to the group again."""
        ...

    def close(self) -> None:
        """Release connections; safe to call twice."""
        ...


def check_consume_args(group: str, consumer: str, max_count: int, block_ms: int) -> None:
    """Raise ``ConfigError`` for arguments no backend accepts."""
    if not group or not consumer:
        raise ConfigError(
            f"a consumer group and a consumer name are required, got group={group!r} "
            f"consumer={consumer!r}; name them after the service that consumes"
        )
    if max_count < 1:
        raise ConfigError(f"max_count must be at least 1, got {max_count!r}")
    if block_ms < 0:
        raise ConfigError(f"block_ms must be 0 (do not wait) or more, got {block_ms!r}")
