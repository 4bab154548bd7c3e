"""``BusPublisher``: the run hook that publishes every evidence record and lifecycle event.

It has the methods of ``signalfactory.pipeline.hooks.RunHook`` (``on_event``,
``on_evidence``, ``on_alert``, ``on_run_end``) without importing the pipeline package (the
processing plane does not depend on it). Each record becomes a CloudEvents envelope whose id
is the record's id, published through a :class:`SpoolingPublisher`; nothing it does can
raise into the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from signalfactory.core.observability import CloudEvent
from signalfactory.core.records import Evidence, LifecycleEvent, RunRecord
from signalfactory.knowledge import SqlStore
from signalfactory.processing.bus.registry import open_bus
from signalfactory.processing.bus.spool import SpoolingPublisher

__all__ = ["BusPublisher"]

log = structlog.get_logger("signalfactory.bus.publisher")


class BusPublisher:
    """Publishes evidence and lifecycle events of a run to the evidence bus."""

    def __init__(self, publisher: SpoolingPublisher) -> None:
        self.publisher = publisher

    @classmethod
    def open(cls, url: str, *, store: SqlStore, spool_dir: Path) -> BusPublisher:
        """A publisher on the bus named by ``url`` (see ``registry.open_bus``)."""
        return cls(open_bus(url, store=store, spool_dir=spool_dir))

    def __repr__(self) -> str:
        return f"BusPublisher({self.publisher!r})"

    def _publish(self, make: Any, record: Any, what: str) -> None:
        try:
            self.publisher.publish(make(record))
        except Exception as exc:  # a hook never breaks the run
            log.error("bus_publish_failed", what=what, error=type(exc).__name__)

    def on_event(self, event: LifecycleEvent) -> None:
        self._publish(CloudEvent.of_lifecycle, event, "lifecycle event")

    def on_evidence(self, evidence: Evidence) -> None:
        self._publish(CloudEvent.of_evidence, evidence, "evidence")

    def on_alert(self, alert: Mapping[str, Any]) -> None:
        return None

    def on_run_end(self, run: RunRecord) -> None:
        """Nothing to publish; a chance to send what was spooled while the bus was down."""
        try:
            if self.publisher.pending():
                self.publisher.flush()
        except Exception as exc:  # a hook never breaks the run
            log.warning("bus_flush_failed", error=type(exc).__name__)

    def close(self) -> None:
        try:
            self.publisher.close()
        except Exception as exc:  # closing never breaks the caller
            log.warning("bus_close_failed", error=type(exc).__name__)
