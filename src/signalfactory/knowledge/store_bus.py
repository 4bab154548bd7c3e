"""The bus part of ``SqlStore``: evidence bus: the embedded event log and consumer offsets.

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``, ``_insert``, ``_upsert``, ``_select``) and is not meant to be used on its own.
"""

from __future__ import annotations

__all__ = ["BusStoreMixin"]


class BusStoreMixin:
    """Methods of ``SqlStore`` for evidence bus: the embedded event log and consumer offsets."""
