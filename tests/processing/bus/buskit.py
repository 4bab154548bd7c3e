"""Helpers of the evidence bus suites: envelopes made in code and backend URLs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from signalfactory.core.observability import CloudEvent
from signalfactory.processing.bus import EvidenceBus

REDIS_URL = os.environ.get("SIGNALFACTORY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("SIGNALFACTORY_TEST_NATS_URL", "nats://127.0.0.1:4222")
#: Redelivery waits in the suites: short, so tests stay quick.
REDELIVER_S = 0.5

BusFactory = Callable[[], EvidenceBus]


def make_event(n: int, *, event_id: str | None = None) -> CloudEvent:
    """An evidence-like envelope numbered ``n`` (the number is in ``data``)."""
    at = datetime(2026, 2, 15, 2, 0, tzinfo=UTC) + timedelta(seconds=n)
    return CloudEvent(
        id=event_id or f"ev-{uuid.uuid4().hex}",
        source="urn:signalfactory:run:run-test",
        type="io.signalfactory.evidence.v1",
        subject="ds://curated/orders_enriched",
        time=at,
        data={"n": n, "gate": "G3_SCHEMA", "result": "PASS"},
    )


def backend_url(backend: str, tag: str) -> str:
    """The URL of an isolated stream ``tag`` on the test server of ``backend``."""
    if backend == "redis":
        return f"{REDIS_URL}?stream=sf-test-{tag}&min_idle_ms={int(REDELIVER_S * 1000)}"
    return f"{NATS_URL}?stream=SF_TEST_{tag}&subject=sf.test.{tag}&ack_wait_s={REDELIVER_S}"
