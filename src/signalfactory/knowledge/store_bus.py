"""The bus part of ``SqlStore``: the embedded evidence log, consumer offsets and leases.

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``) and is not meant to be used on its own. The processing plane's ``StoreBus``
(:mod:`signalfactory.processing.bus.store_bus`) is the only intended caller.

Delivery is at-least-once and safe across threads and processes on SQLite and PostgreSQL:

* ``bus_append`` inserts an envelope unless its ``event_id`` is already in the log; appends
  take turns (SQLite's write lock, a PostgreSQL advisory lock), so entries become visible
  in ``seq`` order and reading "everything after my offset" never skips one;
* ``bus_claim`` first takes over leases of its group whose visibility timeout has passed
  (a compare-and-set ``UPDATE`` on the lease's ``attempt``), then hands out new events after
  the group's offset (a compare-and-set ``UPDATE`` on ``last_seq``), so of two claimers of
  the same entry exactly one gets it;
* ``bus_ack`` deletes the lease; an entry acknowledged late (after it was handed out again)
  is simply acknowledged.

Bus times are wall-clock UTC (``datetime.now(UTC)``), not the simulated clock of
``records.utcnow``: visibility timeouts are real waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from signalfactory.core.errors import ConfigError
from signalfactory.knowledge import models_bus as mb
from signalfactory.knowledge.plumbing import StorePlumbing

__all__ = ["BusEntry", "BusStoreMixin"]

_CLAIM_ATTEMPTS = 5
_PG_APPEND_LOCK = 0x5F5F_4255  # pg_advisory_xact_lock key of bus_append


class BusEntry(NamedTuple):
    """One delivery handed out by :meth:`BusStoreMixin.bus_claim`."""

    seq: int
    attempt: int
    envelope: dict[str, Any]


class BusStoreMixin(StorePlumbing):
    """Methods of ``SqlStore`` for the embedded evidence bus (tables of ``models_bus``)."""

    def bus_append(self, envelope: Mapping[str, Any]) -> bool:
        """Append one CloudEvents envelope (``to_dict`` form); ``False`` if its id was there."""
        for key in ("id", "type", "time"):
            if key not in envelope:
                raise ConfigError(
                    f"cannot append to the evidence log: the envelope has no {key!r}; "
                    "pass CloudEvent.to_dict()"
                )
        row = {
            "event_id": str(envelope["id"]),
            "type": str(envelope["type"]),
            "subject": str(envelope.get("subject", "")),
            "time": datetime.fromisoformat(str(envelope["time"]).replace("Z", "+00:00")),
            "envelope": dict(envelope),
            "published_at": datetime.now(UTC),
        }
        t = mb.bus_events
        with self._conn(write=True) as conn:
            if conn.dialect.name == "postgresql":
                # Appends take turns, so seqs commit in order: a consumer that has seen seq N
                # never misses a smaller seq committed later.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_APPEND_LOCK})
                pg = pg_insert(t).values(**row).on_conflict_do_nothing(index_elements=["event_id"])
                return bool(conn.execute(pg).rowcount == 1)
            if conn.dialect.name == "sqlite":
                lite = sqlite_insert(t).values(**row)
                lite = lite.on_conflict_do_nothing(index_elements=["event_id"])
                return bool(conn.execute(lite).rowcount == 1)
            try:
                with conn.begin_nested():
                    conn.execute(insert(t).values(**row))
            except IntegrityError:
                return False
            return True

    def bus_claim(
        self, group: str, consumer: str, *, max_count: int, visibility_s: float
    ) -> list[BusEntry]:
        """Hand out up to ``max_count`` entries to ``consumer`` of ``group``, oldest first.

        Expired leases of the group come first (their ``attempt`` goes up by one), then
        entries the group has not seen yet (``attempt`` 1). A new group starts at the
        beginning of the log. Every entry handed out is leased for ``visibility_s`` seconds.
        """
        if max_count < 1:
            raise ConfigError(f"max_count must be at least 1, got {max_count!r}")
        now = datetime.now(UTC)
        until = now + timedelta(seconds=visibility_s)
        lt, et = mb.bus_leases, mb.bus_events
        with self._conn(write=True) as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # one claimer at a time (busy timeout)
            claimed: dict[int, int] = {}
            expired = conn.execute(
                select(lt.c.seq, lt.c.attempt)
                .where(lt.c.group_name == group, lt.c.leased_until <= now)
                .order_by(lt.c.seq)
                .limit(max_count)
            ).all()
            for seq, attempt in expired:
                take = (
                    update(lt)
                    .where(lt.c.group_name == group, lt.c.seq == seq, lt.c.attempt == attempt)
                    .values(consumer=consumer, attempt=attempt + 1, leased_until=until)
                )
                if conn.execute(take).rowcount == 1:
                    claimed[int(seq)] = int(attempt) + 1
            room = max_count - len(claimed)
            if room > 0:
                fresh = _claim_fresh(conn, group, consumer, room, now, until)
                claimed.update(dict.fromkeys(fresh, 1))
            if not claimed:
                return []
            rows = conn.execute(
                select(et.c.seq, et.c.envelope).where(et.c.seq.in_(list(claimed)))
            ).all()
        envelopes = {int(seq): dict(env) for seq, env in rows}
        return [
            BusEntry(seq, claimed[seq], envelopes[seq])
            for seq in sorted(claimed)
            if seq in envelopes
        ]

    def bus_ack(self, group: str, seq: int) -> bool:
        """Acknowledge entry ``seq`` for ``group``; ``False`` if it was not leased (any more)."""
        lt = mb.bus_leases
        with self._conn(write=True) as conn:
            done = conn.execute(delete(lt).where(lt.c.group_name == group, lt.c.seq == seq))
            return bool(done.rowcount == 1)

    def bus_pending(self, group: str) -> int:
        """How many entries ``group`` has been handed and not acknowledged yet."""
        lt = mb.bus_leases
        stmt = select(func.count()).select_from(lt).where(lt.c.group_name == group)
        with self._conn() as conn:
            return int(conn.execute(stmt).scalar_one())

    def bus_trim(self, before: datetime) -> int:
        """Delete log entries published before ``before`` (retention); how many went.

        Their leases go too: a trimmed entry is never handed out again.
        """
        et, lt = mb.bus_events, mb.bus_leases
        with self._conn(write=True) as conn:
            last = conn.execute(
                select(func.max(et.c.seq)).where(et.c.published_at < before)
            ).scalar_one_or_none()
            if last is None:
                return 0
            conn.execute(delete(lt).where(lt.c.seq <= last))
            return int(conn.execute(delete(et).where(et.c.seq <= last)).rowcount)


def _claim_fresh(
    conn: Connection, group: str, consumer: str, room: int, now: datetime, until: datetime
) -> list[int]:
    """Lease up to ``room`` entries after the group's offset and move the offset past them.

    On PostgreSQL another claimer may move the offset between our read and our
    compare-and-set; we then read again (each statement sees the latest commit).
    """
    lt, ot, et = mb.bus_leases, mb.bus_offsets, mb.bus_events
    for _ in range(_CLAIM_ATTEMPTS):
        offset = conn.execute(
            select(ot.c.last_seq).where(ot.c.group_name == group)
        ).scalar_one_or_none()
        if offset is None:
            offset = 0
            _insert_offset(conn, group, now)
        found = conn.execute(
            select(et.c.seq).where(et.c.seq > offset).order_by(et.c.seq).limit(room)
        ).scalars()
        seqs = [int(s) for s in found]
        if not seqs:
            return []
        advance = (
            update(ot)
            .where(ot.c.group_name == group, ot.c.last_seq == offset)
            .values(last_seq=seqs[-1], updated_at=now)
        )
        if conn.execute(advance).rowcount == 1:
            lease = {"group_name": group, "consumer": consumer, "attempt": 1, "leased_until": until}
            conn.execute(insert(lt), [{**lease, "seq": s} for s in seqs])
            return seqs
    return []  # busy: the caller's next consume tries again


def _insert_offset(conn: Connection, group: str, now: datetime) -> None:
    row = {"group_name": group, "last_seq": 0, "updated_at": now}
    t = mb.bus_offsets
    if conn.dialect.name == "postgresql":
        conn.execute(pg_insert(t).values(**row).on_conflict_do_nothing())
    elif conn.dialect.name == "sqlite":
        conn.execute(sqlite_insert(t).values(**row).on_conflict_do_nothing())
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported stores
        try:
            with conn.begin_nested():
                conn.execute(insert(t).values(**row))
        except IntegrityError:
            pass
