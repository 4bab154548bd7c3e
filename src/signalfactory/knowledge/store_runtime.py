"""The runtime half of ``SqlStore``: checkpoints, live progress, dead letters and run leases.

:class:`RuntimeStoreMixin` relies on the plumbing of ``SqlStore`` (``_conn``, ``_insert``,
``_upsert``, ``_select``); it is not meant to be used on its own.

Run leases give one winner per idempotency key across threads and processes, on SQLite and on
PostgreSQL alike: the first taker inserts the row (``INSERT ... ON CONFLICT DO NOTHING``), and a
stale lease is taken over by a compare-and-set ``UPDATE`` that only matches while the row still
holds the stale values, so of two takers exactly one changes it.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from signalfactory.core.errors import ConfigError, NotFoundError, StoreError
from signalfactory.core.records import (
    Checkpoint,
    DeadLetter,
    DeadLetterStatus,
    RunLease,
    RunProgress,
    utcnow,
)
from signalfactory.knowledge import models as m
from signalfactory.knowledge.plumbing import StorePlumbing

__all__ = ["RuntimeStoreMixin"]

# A lease row can vanish (released) or change hands between our statements on PostgreSQL;
# each such loss costs one more short transaction. More than this many means something is wrong.
_LEASE_ATTEMPTS = 20
_PROGRESS_FLOATS = ("rows_per_s", "rss_mb", "cpu_pct")


class RuntimeStoreMixin(StorePlumbing):
    """Checkpoints, progress, dead letters and leases of the ``MetadataStore`` protocol."""

    # checkpoints

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Record one completed chunk; a chunk is checkpointed once per run (else ``Terminal``)."""
        what = f"checkpoint of chunk {checkpoint.chunk_index} of run {checkpoint.run_id!r}"
        fix = "a chunk is checkpointed once per run: skip the chunks list_checkpoints returns"
        self._insert(m.checkpoints, m.to_row(checkpoint), what, fix)

    def list_checkpoints(self, run_id: str) -> list[Checkpoint]:
        t = m.checkpoints
        rows = self._select(t, t.c.run_id == run_id, order_by=(t.c.chunk_index,))
        return [m.from_row(Checkpoint, r) for r in rows]

    # live progress

    def put_progress(self, progress: RunProgress) -> None:
        """Insert or overwrite the progress of ``progress.run_id``: one short statement.

        Non-finite floats cannot be stored everywhere (SQLite turns NaN into NULL): a
        non-finite ``eta_s`` is stored as ``None`` (unknown), the other figures as ``0.0``.
        """
        row = m.to_row(progress)
        for name in _PROGRESS_FLOATS:
            if not math.isfinite(row[name]):
                row[name] = 0.0
        if row["eta_s"] is not None and not math.isfinite(row["eta_s"]):
            row["eta_s"] = None
        self._upsert(m.run_progress, row, "run_id")

    def get_progress(self, run_id: str) -> RunProgress | None:
        rows = self._select(m.run_progress, m.run_progress.c.run_id == run_id)
        return m.from_row(RunProgress, rows[0]) if rows else None

    # dead letters

    def add_dead_letter(self, letter: DeadLetter) -> None:
        what = f"dead letter {letter.dead_letter_id!r}"
        self._insert(m.dead_letters, m.to_row(letter), what)

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        t = m.dead_letters
        rows = self._select(t, t.c.dead_letter_id == dead_letter_id)
        return m.from_row(DeadLetter, rows[0]) if rows else None

    def list_dead_letters(
        self,
        run_id: str | None = None,
        dataset_urn: str | None = None,
        status: DeadLetterStatus | None = None,
    ) -> list[DeadLetter]:
        """Dead letters in insertion order, filtered by every argument that is not ``None``."""
        t = m.dead_letters
        pairs = (
            (t.c.run_id, run_id),
            (t.c.dataset_urn, dataset_urn),
            (t.c.status, None if status is None else str(_status(status))),
        )
        where = [column == value for column, value in pairs if value is not None]
        return [m.from_row(DeadLetter, r) for r in self._select(t, *where)]

    def set_dead_letter_status(self, dead_letter_id: str, status: DeadLetterStatus) -> None:
        """Move a dead letter to ``status`` and stamp its ``updated_at`` with the current time."""
        t = m.dead_letters
        stmt = (
            update(t)
            .where(t.c.dead_letter_id == dead_letter_id)
            .values(status=str(_status(status)), updated_at=utcnow())
        )
        with self._conn(write=True) as conn:
            found = conn.execute(stmt).rowcount
        if not found:
            raise NotFoundError(
                f"cannot set the status of dead letter {dead_letter_id!r}: no such dead letter "
                f"in the metadata store at {self.display_url}; list_dead_letters shows the "
                "recorded ones"
            )

    # run leases

    def acquire_lease(self, lease: RunLease, stale_after_s: float) -> RunLease:
        """Take the lease of ``lease.idempotency_key``, or return the lease that holds it.

        ``lease`` is returned when there was no lease for the key, or when the existing one's
        heartbeat is older than ``stale_after_s`` seconds (it is taken over). Otherwise the
        existing lease comes back: the caller won if and only if its ``run_id`` matches.
        """
        if not (math.isfinite(stale_after_s) and stale_after_s > 0):
            raise ConfigError(
                f"stale_after_s must be a positive number of seconds, got {stale_after_s!r}"
            )
        t = m.run_leases
        key = lease.idempotency_key
        for _ in range(_LEASE_ATTEMPTS):
            with self._conn(write=True) as conn:
                # On SQLite this write takes the database lock for the rest of the transaction.
                if _insert_if_absent(conn, t, m.to_row(lease)):
                    return lease
                found = conn.execute(select(t).where(t.c.idempotency_key == key)).mappings()
                row = found.first()
                if row is None:
                    continue  # released since our insert: try again
                held = m.from_row(RunLease, row)
                if held.heartbeat_at >= utcnow() - timedelta(seconds=stale_after_s):
                    return held
                take_over = (
                    update(t)
                    .where(
                        t.c.idempotency_key == key,
                        t.c.run_id == held.run_id,
                        t.c.heartbeat_at == held.heartbeat_at,
                    )
                    .values(run_id=lease.run_id, owner=lease.owner, heartbeat_at=lease.heartbeat_at)
                )
                if conn.execute(take_over).rowcount == 1:
                    return lease
            # another taker changed the row first: read the new holder on the next attempt
        raise StoreError(
            f"cannot acquire the lease of idempotency key {key!r} in the metadata store at "
            f"{self.display_url}: it changed hands {_LEASE_ATTEMPTS} times while trying. "
            "Fix: check for a runaway loop of processes starting runs of this key, then retry."
        )

    def heartbeat_lease(self, idempotency_key: str, run_id: str) -> None:
        """Refresh the lease's heartbeat; a no-op when ``run_id`` no longer holds it."""
        t = m.run_leases
        stmt = (
            update(t)
            .where(t.c.idempotency_key == idempotency_key, t.c.run_id == run_id)
            .values(heartbeat_at=utcnow())
        )
        with self._conn(write=True) as conn:
            conn.execute(stmt)

    def release_lease(self, idempotency_key: str, run_id: str) -> None:
        """Drop the lease if ``run_id`` holds it; a no-op otherwise."""
        t = m.run_leases
        stmt = delete(t).where(t.c.idempotency_key == idempotency_key, t.c.run_id == run_id)
        with self._conn(write=True) as conn:
            conn.execute(stmt)


def _status(status: DeadLetterStatus | str) -> DeadLetterStatus:
    try:
        return DeadLetterStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in DeadLetterStatus)
        raise ConfigError(
            f"unknown dead letter status {status!r}; expected one of {allowed}"
        ) from None


def _insert_if_absent(conn: Connection, table: Table, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless its primary key exists; whether it was inserted."""
    key = list(table.primary_key.columns)
    if conn.dialect.name == "postgresql":
        pg = pg_insert(table).values(**row).on_conflict_do_nothing(index_elements=key)
        return conn.execute(pg).rowcount == 1
    if conn.dialect.name == "sqlite":
        lite = sqlite_insert(table).values(**row).on_conflict_do_nothing(index_elements=key)
        return conn.execute(lite).rowcount == 1
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(**row))
    except IntegrityError:
        return False
    return True
