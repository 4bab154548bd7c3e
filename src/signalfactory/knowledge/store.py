"""``SqlStore``: the knowledge plane on SQLAlchemy 2 + Alembic (SQLite default, PostgreSQL).

Every method opens its own short transaction, so one store may be shared by threads and one
SQLite file by several processes (WAL journal, busy timeout). Evidence, lifecycle events and
transitions have insert methods only. Checkpoints, progress, dead letters and run leases live in
:mod:`signalfactory.knowledge.store_runtime`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Table, create_engine, event, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, RowMapping, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.sql import ColumnElement

from signalfactory.core.errors import ConfigError, NotFoundError, StoreError, Terminal
from signalfactory.core.records import (
    CertificationState,
    DatasetRecord,
    Evidence,
    LifecycleEvent,
    QuarantineRecord,
    RunRecord,
    Transition,
)
from signalfactory.knowledge import models as m
from signalfactory.knowledge.store_baselines import BaselinesStoreMixin
from signalfactory.knowledge.store_bus import BusStoreMixin
from signalfactory.knowledge.store_incidents import IncidentsStoreMixin
from signalfactory.knowledge.store_lineage import LineageStoreMixin
from signalfactory.knowledge.store_runtime import RuntimeStoreMixin
from signalfactory.knowledge.store_signals import SignalsStoreMixin

__all__ = ["MIGRATIONS_DIR", "SqlStore", "normalize_url", "open_store"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_PG_MIGRATION_LOCK = 0x5F5F_4B50  # pg_advisory_xact_lock key of migrate()
_FIX_SERVER = (
    "start the database server, or set SIGNALFACTORY_DATABASE_URL to a reachable database "
    "(unset it to use the local SQLite file)"
)
_FIX_SQLITE = (
    "check that the file's directory is writable and no other process holds the database "
    "locked, or set SIGNALFACTORY_DATABASE_URL to another database"
)


def normalize_url(url: str) -> URL:
    """Parse ``url``; plain ``postgresql://``/``postgres://`` get the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "the metadata store URL is not a valid SQLAlchemy URL; expected e.g. "
            "sqlite:////abs/path/signalfactory.db or postgresql+psycopg://user@host:5432/db "
            "(check SIGNALFACTORY_DATABASE_URL)"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def open_store(url: str) -> SqlStore:
    """A ``SqlStore`` for ``url`` with its schema migrated to the latest revision."""
    store = SqlStore(url)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store


class SqlStore(
    RuntimeStoreMixin,
    BusStoreMixin,
    SignalsStoreMixin,
    IncidentsStoreMixin,
    LineageStoreMixin,
    BaselinesStoreMixin,
):
    """The ``MetadataStore`` protocol over any SQLAlchemy URL (tested: SQLite, PostgreSQL).

    ``url`` is the normalised URL including any password (so another process can open the
    same store); show ``display_url`` to people instead.
    """

    def __init__(self, url: str) -> None:
        parsed = normalize_url(url)
        self.url: str = parsed.render_as_string(hide_password=False)
        self.display_url: str = parsed.render_as_string(hide_password=True)
        self._password = parsed.password
        self._closed = False
        is_sqlite = parsed.get_backend_name() == "sqlite"
        self._fix = _FIX_SQLITE if is_sqlite else _FIX_SERVER
        if is_sqlite:
            _ensure_sqlite_parent(parsed)
        serializer = functools.partial(json.dumps, ensure_ascii=False, allow_nan=False)
        try:
            self._engine = create_engine(
                parsed, json_serializer=serializer, pool_pre_ping=not is_sqlite
            )
        except (ArgumentError, ImportError) as exc:
            raise ConfigError(
                f"cannot use the metadata store URL {self.display_url}: {exc}. Supported: "
                "sqlite:///PATH and postgresql+psycopg://... "
                "(pip install 'signalfactory[postgres]')"
            ) from None
        if is_sqlite:
            event.listen(self._engine, "connect", _sqlite_on_connect)

    def __repr__(self) -> str:
        return f"SqlStore({self.display_url!r})"

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # plumbing

    @contextmanager
    def _conn(self, *, write: bool = False) -> Iterator[Connection]:
        if self._closed:
            raise StoreError(f"the metadata store at {self.display_url} is closed; open a new one")
        try:
            with self._engine.begin() if write else self._engine.connect() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            detail = (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
            if self._password:
                detail = detail.replace(self._password, "***")
            raise StoreError(
                f"cannot use the metadata store at {self.display_url}: {detail}. Fix: {self._fix}."
            ) from None

    def _insert(
        self,
        table: Table,
        row: dict[str, Any],
        what: str,
        fix: str = "ids are unique and recorded rows cannot be overwritten: "
        "record it under a new id",
    ) -> None:
        try:
            with self._conn(write=True) as conn:
                conn.execute(insert(table).values(**row))
        except IntegrityError as exc:
            detail = (str(exc.orig or exc).strip().splitlines() or ["integrity error"])[0]
            raise Terminal(
                f"the metadata store at {self.display_url} refused {what} ({detail}); {fix}"
            ) from None

    def _upsert(self, table: Table, row: dict[str, Any], key: str) -> None:
        changes = {k: v for k, v in row.items() if k != key}
        with self._conn(write=True) as conn:
            if conn.dialect.name == "postgresql":
                pg = pg_insert(table).values(**row)
                conn.execute(pg.on_conflict_do_update(index_elements=[key], set_=changes))
            elif conn.dialect.name == "sqlite":
                lite = sqlite_insert(table).values(**row)
                conn.execute(lite.on_conflict_do_update(index_elements=[key], set_=changes))
            else:
                done = conn.execute(update(table).where(table.c[key] == row[key]).values(changes))
                if done.rowcount == 0:
                    conn.execute(insert(table).values(**row))

    def _select(
        self,
        table: Table,
        *where: ColumnElement[bool],
        newest_first: bool = False,
        limit: int = 0,
        order_by: Sequence[ColumnElement[Any]] = (),
    ) -> list[RowMapping]:
        stmt = select(table).where(*where)
        if newest_first:
            stmt = stmt.order_by(table.c.started_at.desc(), table.c.seq.desc())
        elif order_by:
            stmt = stmt.order_by(*order_by)
        else:
            stmt = stmt.order_by(*table.primary_key.columns)
        if limit:
            stmt = stmt.limit(limit)
        with self._conn() as conn:
            return list(conn.execute(stmt).mappings())

    # lifecycle

    def migrate(self) -> None:
        """Bring the schema to the latest revision; a no-op when it is already there."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        with self._conn(write=True) as conn:
            # One migrator at a time: the others wait, then find the schema up to date.
            if conn.dialect.name == "postgresql":
                lock = text("SELECT pg_advisory_xact_lock(:key)")
                conn.execute(lock, {"key": _PG_MIGRATION_LOCK})
            elif conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # takes the write lock (busy timeout)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        """Release every pooled connection. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    # datasets

    def put_dataset(self, record: DatasetRecord) -> None:
        self._upsert(m.datasets, m.to_row(record), "urn")

    def get_dataset(self, urn: str) -> DatasetRecord | None:
        rows = self._select(m.datasets, m.datasets.c.urn == urn)
        return m.from_row(DatasetRecord, rows[0]) if rows else None

    def list_datasets(self) -> list[DatasetRecord]:
        return [m.from_row(DatasetRecord, r) for r in self._select(m.datasets)]

    # runs and the audit trail

    def create_run(self, record: RunRecord) -> None:
        self._insert(m.runs, m.to_row(record), f"run {record.run_id!r}")

    def update_run(self, record: RunRecord) -> None:
        t = m.runs
        stmt = update(t).where(t.c.run_id == record.run_id).values(**m.to_row(record))
        with self._conn(write=True) as conn:
            found = conn.execute(stmt).rowcount
        if not found:
            raise NotFoundError(
                f"cannot update run {record.run_id!r}: no such run in the metadata store at "
                f"{self.display_url}; create it with create_run first"
            )

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._select(m.runs, m.runs.c.run_id == run_id)
        return m.from_row(RunRecord, rows[0]) if rows else None

    def list_runs(self, dataset_urn: str | None = None, limit: int = 100) -> list[RunRecord]:
        if limit < 1:
            raise ConfigError(f"limit must be a positive number of runs, got {limit}")
        where = _filters((m.runs.c.dataset_urn, dataset_urn))
        rows = self._select(m.runs, *where, newest_first=True, limit=limit)
        return [m.from_row(RunRecord, r) for r in rows]

    def find_runs_by_key(self, idempotency_key: str) -> list[RunRecord]:
        rows = self._select(m.runs, m.runs.c.idempotency_key == idempotency_key, newest_first=True)
        return [m.from_row(RunRecord, r) for r in rows]

    def append_transition(self, transition: Transition) -> None:
        self._insert(m.transitions, m.to_row(transition), "transition")

    def list_transitions(self, subject: str | None = None) -> list[Transition]:
        rows = self._select(m.transitions, *_filters((m.transitions.c.subject, subject)))
        return [m.from_row(Transition, r) for r in rows]

    # evidence and lifecycle events (append-only)

    def add_evidence(self, evidence: Evidence) -> None:
        self._insert(m.evidence, m.to_row(evidence), f"evidence {evidence.evidence_id!r}")

    def list_evidence(
        self, run_id: str | None = None, dataset_urn: str | None = None
    ) -> list[Evidence]:
        t = m.evidence
        rows = self._select(t, *_filters((t.c.run_id, run_id), (t.c.dataset_urn, dataset_urn)))
        return [m.from_row(Evidence, r) for r in rows]

    def add_event(self, event: LifecycleEvent) -> None:
        self._insert(m.lifecycle_events, m.to_row(event), f"lifecycle event {event.event_id!r}")

    def list_events(
        self,
        run_id: str | None = None,
        dataset_urn: str | None = None,
        event_type: str | None = None,
    ) -> list[LifecycleEvent]:
        t = m.lifecycle_events
        where = _filters(
            (t.c.run_id, run_id),
            (t.c.dataset_urn, dataset_urn),
            (t.c.event_type, None if event_type is None else str(event_type)),
        )
        return [m.from_row(LifecycleEvent, r) for r in self._select(t, *where)]

    # certification and quarantine

    def get_certification(self, dataset_urn: str) -> CertificationState | None:
        rows = self._select(m.certification, m.certification.c.dataset_urn == dataset_urn)
        return m.from_row(CertificationState, rows[0]) if rows else None

    def put_certification(self, state: CertificationState) -> None:
        self._upsert(m.certification, m.to_row(state), "dataset_urn")

    def add_quarantine(self, record: QuarantineRecord) -> None:
        what = f"quarantine record {record.quarantine_id!r}"
        self._insert(m.quarantine, m.to_row(record), what)

    def list_quarantine(self, dataset_urn: str | None = None) -> list[QuarantineRecord]:
        rows = self._select(m.quarantine, *_filters((m.quarantine.c.dataset_urn, dataset_urn)))
        return [m.from_row(QuarantineRecord, r) for r in rows]


# connection setup


def _ensure_sqlite_parent(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _filters(*pairs: tuple[Any, str | None]) -> list[ColumnElement[bool]]:
    return [column == value for column, value in pairs if value is not None]
