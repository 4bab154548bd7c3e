"""Event-driven evaluation: signals seconds after the evidence, not at the next tick.

``signalfactory watch --follow`` reads the evidence bus as a consumer group. Every batch of
envelopes it receives re-evaluates the datasets they concern (``subject`` is the dataset URN)
right away; every ``interval_s`` all datasets are evaluated anyway, because some breaches
(``JOB_NOT_TRIGGERED``) are the *absence* of events. Deliveries are acknowledged only after
their evaluation was stored, so a crash re-delivers them (at-least-once; evaluation is
idempotent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from signalfactory.core.records import utcnow
from signalfactory.knowledge.store import SqlStore
from signalfactory.processing.alerting import AlertSink
from signalfactory.processing.bus.base import EvidenceBus
from signalfactory.processing.service import EvaluationReport, evaluate_once

__all__ = ["WATCH_GROUP", "follow"]

WATCH_GROUP = "signalfactory-watch"


def follow(
    store: SqlStore,
    bus: EvidenceBus,
    sinks: Sequence[AlertSink] = (),
    *,
    interval_s: float = 30.0,
    group: str = WATCH_GROUP,
    consumer: str = "watch-1",
    stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[EvaluationReport]:
    """Yield one report per evaluation: of the datasets new events concern, or of all."""
    next_full = clock()
    while not stop():
        now = clock()
        if now >= next_full:
            yield evaluate_once(store, utcnow(), sinks)
            next_full = now + interval_s
            continue
        wait_ms = max(1, int((next_full - now) * 1000))
        deliveries = bus.consume(group, consumer, max_count=500, block_ms=min(wait_ms, 1000))
        if not deliveries:
            continue
        registered = {d.urn for d in store.list_datasets()}
        touched = sorted({d.event.subject for d in deliveries} & registered)
        if touched:
            yield evaluate_once(store, utcnow(), sinks, datasets=touched)
        for delivery in deliveries:
            bus.ack(group, delivery)
