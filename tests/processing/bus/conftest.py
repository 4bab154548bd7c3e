"""Fixtures of the evidence bus suites: one isolated bus per backend and test.

Redis and NATS run against the real local servers (``SIGNALFACTORY_TEST_REDIS_URL``, default
redis://127.0.0.1:6379/0; ``SIGNALFACTORY_TEST_NATS_URL``, default nats://127.0.0.1:4222 with
JetStream); each test gets its own stream, subject and groups, deleted afterwards. Without a
server the test is skipped (failed under ``SIGNALFACTORY_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from conftest import require_service
from processing.bus.buskit import (
    NATS_URL,
    REDELIVER_S,
    REDIS_URL,
    BusFactory,
    backend_url,
)
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.processing.bus import BusUnavailable, EvidenceBus, StoreBus

BACKENDS = (
    "store",
    pytest.param("store-postgres", marks=pytest.mark.postgres),
    "redis",
    "nats",
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'sf.db'}")
    try:
        yield opened
    finally:
        opened.close()


def _probe(bus: Any, backend: str) -> None:
    try:
        bus.consume("probe", "probe", max_count=1)
    except BusUnavailable as exc:
        bus.close()
        where = REDIS_URL if backend == "redis" else NATS_URL
        env = f"SIGNALFACTORY_TEST_{backend.upper()}_URL"
        require_service(backend, f"{where}: {exc.message[:200]}. Start it or set {env}")


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[SqlStore]:
    """A store in a new PostgreSQL schema of this module's test database (dropped after)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    opened = open_store(url.render_as_string(hide_password=False))
    try:
        yield opened
    finally:
        opened.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def bus_factory(request: pytest.FixtureRequest, store: SqlStore) -> Iterator[BusFactory]:
    """Opens buses on one isolated stream of the backend; every bus opened is closed after."""
    backend: str = request.param
    if backend == "store-postgres":
        store = request.getfixturevalue("postgres_store")
        backend = "store"
    tag = uuid.uuid4().hex[:12]
    opened: list[Any] = []

    def make() -> EvidenceBus:
        bus: Any
        if backend == "store":
            bus = StoreBus(store, visibility_s=REDELIVER_S)
        elif backend == "redis":
            from signalfactory.processing.bus.redis_bus import RedisBus

            bus = RedisBus(backend_url(backend, tag))
        else:
            from signalfactory.processing.bus.nats_bus import NatsBus

            bus = NatsBus(backend_url(backend, tag))
        if not opened and backend != "store":
            _probe(bus, backend)
        opened.append(bus)
        return bus

    try:
        yield make
    finally:
        if opened and backend != "store":
            opened[0].delete_stream()
        for bus in opened:
            bus.close()
