"""The baselines part of ``SqlStore``: dataset profiles (baseline.json).

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``, ``_insert``, ``_upsert``, ``_select``) and is not meant to be used on its own.

Every stored baseline is a new version (1, 2, ...) of its dataset's baseline; nothing is
overwritten, so the history of a baseline is kept. The document is stored as it is written to
``baseline.json``; the knowledge plane does not interpret it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from signalfactory.core.errors import StoreError
from signalfactory.core.records import utcnow
from signalfactory.knowledge import models as m
from signalfactory.knowledge.models_baselines import baselines
from signalfactory.knowledge.plumbing import StorePlumbing

__all__ = ["BaselinesStoreMixin", "StoredBaseline"]

_VERSION_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class StoredBaseline:
    """One version of a dataset's baseline as stored.

    ``run_id`` names the certified run it was rolled forward from (``None`` for a profile
    taken by ``signalfactory profile``); ``changes`` holds what that run changed.
    """

    dataset_urn: str
    version: int
    document: Mapping[str, Any]
    schema_fingerprint: str
    row_count: int
    source: str
    run_id: str | None = None
    changes: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)


class BaselinesStoreMixin(StorePlumbing):
    """Methods of ``SqlStore`` for dataset profiles (baseline.json)."""

    def put_baseline(
        self,
        dataset_urn: str,
        document: Mapping[str, Any],
        *,
        schema_fingerprint: str,
        row_count: int,
        source: str,
        run_id: str | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> StoredBaseline:
        """Store ``document`` as the next version of ``dataset_urn``'s baseline; returns it.

        Two writers racing for the same version: the unique (dataset, version) key lets one
        win, the other takes the next version.
        """
        t = baselines
        for _ in range(_VERSION_ATTEMPTS):
            try:
                with self._conn(write=True) as conn:
                    latest = conn.execute(
                        select(func.max(t.c.version)).where(t.c.dataset_urn == dataset_urn)
                    ).scalar()
                    record = StoredBaseline(
                        dataset_urn=dataset_urn,
                        version=int(latest or 0) + 1,
                        document=document,
                        schema_fingerprint=schema_fingerprint,
                        row_count=row_count,
                        source=source,
                        run_id=run_id,
                        changes=dict(changes or {}),
                    )
                    conn.execute(insert(t).values(**m.to_row(record)))
                return record
            except IntegrityError:
                continue  # another writer took this version: take the next one
        raise StoreError(
            f"cannot store a baseline of {dataset_urn} in the metadata store at "
            f"{self.display_url}: its version was taken {_VERSION_ATTEMPTS} times in a row. "
            "Fix: check for a runaway loop of processes profiling this dataset, then retry."
        )

    def get_baseline(
        self, dataset_urn: str, at: datetime | None = None, *, below_version: int | None = None
    ) -> StoredBaseline | None:
        """The latest baseline of ``dataset_urn``, or ``None``: as of ``at`` and older than
        version ``below_version`` when they are given."""
        t = baselines
        where = [t.c.dataset_urn == dataset_urn]
        if at is not None:
            where.append(t.c.created_at <= at)
        if below_version is not None:
            where.append(t.c.version < below_version)
        rows = self._select(t, *where, order_by=(t.c.version.desc(),), limit=1)
        return m.from_row(StoredBaseline, rows[0]) if rows else None

    def list_baselines(self, dataset_urn: str) -> list[StoredBaseline]:
        """Every version of ``dataset_urn``'s baseline, oldest first."""
        t = baselines
        rows = self._select(t, t.c.dataset_urn == dataset_urn, order_by=(t.c.version,))
        return [m.from_row(StoredBaseline, r) for r in rows]

    def find_baseline_of_run(self, run_id: str) -> StoredBaseline | None:
        """The baseline version rolled forward from run ``run_id``, if any (the newest)."""
        t = baselines
        rows = self._select(t, t.c.run_id == run_id, order_by=(t.c.seq.desc(),), limit=1)
        return m.from_row(StoredBaseline, rows[0]) if rows else None
