"""The degraded path of ``observe()``: when the store or the bus cannot be used.

The producer's job must never break because Signal Factory is down (PRD O9). So every
failure inside the SDK ends here: one warning is logged per observed run (the error type,
never a message that could quote data), the run stops certifying anything, and the lifecycle
events the SDK can still vouch for (JobRunStarted / JobRunCompleted / JobRunFailed) go to a
spool instead of the store.

``EventSpool`` is the seam: by default events go to the bus spool under ``Settings.spool_dir``
(:class:`DiskSpool`) and stay visible on the observation (``Observation.unsent_events``); pass
``observe(spool=...)`` to send them elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import structlog

from signalfactory.core.observability import CloudEvent
from signalfactory.core.records import LifecycleEvent
from signalfactory.processing.bus.base import BusUnavailable, Delivery

log = structlog.get_logger("signalfactory.sdk")


class EventSpool(Protocol):
    """Where lifecycle events go while the store or bus is unreachable; must not raise."""

    def append(self, event: LifecycleEvent) -> None: ...


class MemorySpool:
    """The default spool: events kept on the observation, delivered by nobody."""

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []

    def append(self, event: LifecycleEvent) -> None:
        self.events.append(event)


class DiskSpool:
    """Events kept in memory *and* in the bus spool under ``spool_dir`` (``home/spool``), so
    the next process that publishes to the bus (any run, ``BusPublisher.flush``) delivers them;
    ids are kept, so a re-sent event is de-duplicated by consumers."""

    def __init__(self, memory: MemorySpool, spool_dir: Path) -> None:
        from signalfactory.processing.bus.spool import SpoolingPublisher

        self.memory = memory
        self.publisher = SpoolingPublisher(_Unreachable(), spool_dir)

    def append(self, event: LifecycleEvent) -> None:
        self.memory.append(event)
        self.publisher.spool(CloudEvent.of_lifecycle(event))


class _Unreachable:
    """The bus of a degraded observation: every publish fails, so events stay spooled."""

    name = "unreachable"

    def publish(self, event: CloudEvent) -> None:
        raise BusUnavailable("the store or bus of this observation is unreachable")

    def consume(
        self, group: str, consumer: str, *, max_count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        return []

    def ack(self, group: str, delivery: Delivery) -> None:
        return None

    def close(self) -> None:
        return None


class Degradation:
    """Whether an observation is degraded, and its single warning."""

    def __init__(self, dataset_urn: str, run_id: str, spool: EventSpool) -> None:
        self.dataset_urn = dataset_urn
        self.run_id = run_id
        self.spool = spool
        self.reason: str | None = None

    @property
    def active(self) -> bool:
        return self.reason is not None

    def trip(self, where: str, exc: BaseException) -> None:
        """Enter degraded mode (idempotent): log once, without values or messages."""
        if self.reason is not None:
            return
        self.reason = f"{where}: {type(exc).__name__}"
        log.warning(
            "observe_degraded",
            dataset_urn=self.dataset_urn,
            run_id=self.run_id,
            where=where,
            error_type=type(exc).__name__,
            effect="nothing is certified for this run; lifecycle events are spooled",
        )

    def spool_event(self, event: LifecycleEvent) -> None:
        try:
            self.spool.append(event)
        except Exception as exc:  # a spool must not break the producer either
            log.warning(
                "observe_spool_failed",
                dataset_urn=self.dataset_urn,
                run_id=self.run_id,
                error_type=type(exc).__name__,
            )
