"""The evidence bus: CloudEvents envelopes of evidence and lifecycle events, at-least-once.

Backends behind one interface (:class:`EvidenceBus`): the metadata store (embedded default),
Redis Streams and NATS JetStream. Producers publish through :class:`SpoolingPublisher` (or the
:class:`BusPublisher` run hook), which spools to local files while the bus is down.
Redis and NATS modules are imported only when used.
"""

from __future__ import annotations

from signalfactory.processing.bus.base import DEFAULT_SUBJECT, BusUnavailable, Delivery, EvidenceBus
from signalfactory.processing.bus.publisher import BusPublisher
from signalfactory.processing.bus.registry import BACKENDS, BUS_URL_ENV, open_backend, open_bus
from signalfactory.processing.bus.spool import SpoolingPublisher
from signalfactory.processing.bus.store_bus import StoreBus

__all__ = [
    "BACKENDS",
    "BUS_URL_ENV",
    "DEFAULT_SUBJECT",
    "BusPublisher",
    "BusUnavailable",
    "Delivery",
    "EvidenceBus",
    "SpoolingPublisher",
    "StoreBus",
    "open_backend",
    "open_bus",
]
