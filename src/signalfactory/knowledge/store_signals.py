"""The signals part of ``SqlStore``: signal evaluations and time-window reads of run history.

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``, ``_insert``, ``_upsert``, ``_select``) and is not meant to be used on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement

from signalfactory.core.errors import ConfigError, Terminal
from signalfactory.core.observability import Signal, SignalKind, SignalState
from signalfactory.core.records import LifecycleEvent
from signalfactory.knowledge import models as m
from signalfactory.knowledge.models_signals import signals as _signals
from signalfactory.knowledge.plumbing import StorePlumbing

__all__ = ["SignalsStoreMixin"]

_MAX_LIMIT = 100_000


class SignalsStoreMixin(StorePlumbing):
    """Methods of ``SqlStore`` for signal evaluations."""

    # signals

    def add_signals(self, signals: Iterable[Signal]) -> None:
        """Store signals in one transaction (all or none); a ``signal_id`` is stored once."""
        rows = [m.to_row(s) for s in signals]
        if not rows:
            return
        try:
            with self._conn(write=True) as conn:
                conn.execute(insert(_signals), rows)
        except IntegrityError as exc:
            detail = (str(exc.orig or exc).strip().splitlines() or ["integrity error"])[0]
            raise Terminal(
                f"the metadata store at {self.display_url} refused {len(rows)} signal(s) "
                f"({detail}); signal ids are unique: store a new Signal instead"
            ) from None

    def list_signals(
        self,
        dataset_urn: str | None = None,
        kind: SignalKind | str | None = None,
        state: SignalState | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        signature: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[Signal]:
        """Stored signals filtered by every argument given, ``since <= evaluated_at <= until``.

        Oldest first (``newest_first`` reverses); at most ``limit`` rows (the newest ones when
        ``newest_first``, else the oldest).
        """
        if not 0 < limit <= _MAX_LIMIT:
            raise ConfigError(f"limit must be between 1 and {_MAX_LIMIT}, got {limit!r}")
        t = _signals
        where: list[ColumnElement[bool]] = []
        for column, value in (
            (t.c.dataset_urn, dataset_urn),
            (t.c.kind, kind),
            (t.c.state, state),
            (t.c.signature, signature),
        ):
            if value is not None:
                where.append(column == str(value))
        if since is not None:
            where.append(t.c.evaluated_at >= m.to_utc(since))
        if until is not None:
            where.append(t.c.evaluated_at <= m.to_utc(until))
        order = (
            (t.c.evaluated_at.desc(), t.c.seq.desc())
            if newest_first
            else (t.c.evaluated_at, t.c.seq)
        )
        rows = self._select(t, *where, order_by=order, limit=limit)
        return [m.from_row(Signal, r) for r in rows]

    def latest_signal(
        self, dataset_urn: str, kind: SignalKind | str, partition: str | None = None
    ) -> Signal | None:
        """The newest stored signal of one dataset, kind and partition (``None``: no partition)."""
        t = _signals
        part = (
            t.c.partition_values.is_(None)
            if partition is None
            else (t.c.partition_values == partition)
        )
        rows = self._select(
            t,
            t.c.dataset_urn == dataset_urn,
            t.c.kind == str(kind),
            part,
            order_by=(t.c.evaluated_at.desc(), t.c.seq.desc()),
            limit=1,
        )
        return m.from_row(Signal, rows[0]) if rows else None

    def latest_signals(self, dataset_urn: str | Iterable[str] | None = None) -> list[Signal]:
        """The newest stored signal per (dataset, kind, partition): the current state.

        ``dataset_urn`` limits it to one dataset or to several.
        """
        t = _signals
        newest = select(func.max(t.c.seq).label("seq")).group_by(
            t.c.dataset_urn, t.c.kind, t.c.partition_values
        )
        if isinstance(dataset_urn, str):
            newest = newest.where(t.c.dataset_urn == dataset_urn)
        elif dataset_urn is not None:
            newest = newest.where(t.c.dataset_urn.in_(sorted(set(dataset_urn))))
        stmt = (
            select(t)
            .where(t.c.seq.in_(newest.scalar_subquery()))
            .order_by(t.c.dataset_urn, t.c.kind, t.c.partition_values, t.c.seq)
        )
        with self._conn() as conn:
            rows = list(conn.execute(stmt).mappings())
        return [m.from_row(Signal, r) for r in rows]

    # run history in time windows (for the engines)

    def list_events_of(
        self,
        dataset_urns: Iterable[str],
        since: datetime | None = None,
        until: datetime | None = None,
        event_types: Iterable[str] | None = None,
    ) -> list[LifecycleEvent]:
        """Like :meth:`list_events_between` for many datasets at once (in batches of 500),
        oldest first: one query where a root-cause walk would otherwise make hundreds."""
        urns = sorted(set(dataset_urns))
        t = m.lifecycle_events
        found: list[LifecycleEvent] = []
        for i in range(0, len(urns), 500):
            where: list[ColumnElement[bool]] = [t.c.dataset_urn.in_(urns[i : i + 500])]
            if event_types is not None:
                where.append(t.c.event_type.in_([str(e) for e in event_types]))
            if since is not None:
                where.append(t.c.timestamp >= m.to_utc(since))
            if until is not None:
                where.append(t.c.timestamp <= m.to_utc(until))
            rows = self._select(t, *where, order_by=(t.c.timestamp, t.c.seq))
            found.extend(m.from_row(LifecycleEvent, r) for r in rows)
        return sorted(found, key=lambda e: e.timestamp)

    def list_events_between(
        self,
        dataset_urn: str,
        since: datetime | None = None,
        until: datetime | None = None,
        event_types: Iterable[str] | None = None,
    ) -> list[LifecycleEvent]:
        """Lifecycle events of one dataset with ``since <= timestamp <= until``, oldest first.

        ``event_types`` limits them to those types (``JobRunStarted``, ...). Ties in timestamp
        keep insertion order.
        """
        t = m.lifecycle_events
        where: list[ColumnElement[bool]] = [t.c.dataset_urn == dataset_urn]
        if event_types is not None:
            where.append(t.c.event_type.in_([str(e) for e in event_types]))
        if since is not None:
            where.append(t.c.timestamp >= m.to_utc(since))
        if until is not None:
            where.append(t.c.timestamp <= m.to_utc(until))
        rows = self._select(t, *where, order_by=(t.c.timestamp, t.c.seq))
        return [m.from_row(LifecycleEvent, r) for r in rows]
