"""The lineage part of ``SqlStore``: the lineage graph (OpenLineage runs, datasets, jobs, edges).

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``, ``_insert``, ``_upsert``, ``_select``) and is not meant to be used on its own.
"""

from __future__ import annotations

__all__ = ["LineageStoreMixin"]


class LineageStoreMixin:
    """Methods of ``SqlStore`` for the lineage graph (OpenLineage runs, datasets, jobs, edges)."""
