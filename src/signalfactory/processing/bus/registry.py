"""Choose an evidence bus from a URL: ``store``, ``redis://…`` or ``nats://…``.

``open_bus`` is what producers use: the backend wrapped in a
:class:`~signalfactory.processing.bus.spool.SpoolingPublisher`, so publishing never fails.
``open_backend`` gives the bare backend (consumers, benchmarks, conformance tests).
Redis and NATS are imported only when their scheme is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from signalfactory.core.errors import ConfigError
from signalfactory.knowledge import SqlStore
from signalfactory.processing.bus.base import EvidenceBus
from signalfactory.processing.bus.spool import SpoolingPublisher
from signalfactory.processing.bus.store_bus import StoreBus

__all__ = ["BACKENDS", "BUS_URL_ENV", "open_backend", "open_bus"]

BUS_URL_ENV = "SIGNALFACTORY_BUS_URL"


def _store(url: str, store: SqlStore) -> EvidenceBus:
    return StoreBus(store)


def _redis(url: str, store: SqlStore) -> EvidenceBus:
    from signalfactory.processing.bus.redis_bus import RedisBus

    return RedisBus(url)


def _nats(url: str, store: SqlStore) -> EvidenceBus:
    from signalfactory.processing.bus.nats_bus import NatsBus

    return NatsBus(url)


#: URL scheme -> factory. ``store`` has no scheme: the whole URL is the word ``store``.
BACKENDS: dict[str, Callable[[str, SqlStore], EvidenceBus]] = {
    "store": _store,
    "redis": _redis,
    "rediss": _redis,
    "nats": _nats,
}


def _scheme(url: str) -> str:
    text = url.strip()
    if text == "store":
        return "store"
    return urlsplit(text).scheme.lower() if "://" in text else ""


def open_backend(url: str, *, store: SqlStore) -> EvidenceBus:
    """The bare bus backend named by ``url`` (no spool)."""
    scheme = _scheme(url)
    factory = BACKENDS.get(scheme) if scheme else None
    if factory is None or (scheme == "store" and url.strip() != "store"):
        raise ConfigError(
            f"unknown evidence bus URL {url!r}; expected 'store' (the metadata store, the "
            "default), redis://HOST:PORT/DB (Redis Streams) or nats://HOST:PORT (NATS "
            f"JetStream). Fix: set {BUS_URL_ENV} (or bus_url in the settings) to one of these"
        )
    return factory(url.strip(), store)


def open_bus(
    url: str, *, store: SqlStore, spool_dir: Path, flush_interval_s: float = 5.0
) -> SpoolingPublisher:
    """The bus for producers: ``open_backend(url)`` behind a spool in ``spool_dir``."""
    return SpoolingPublisher(
        open_backend(url, store=store), spool_dir, flush_interval_s=flush_interval_s
    )
