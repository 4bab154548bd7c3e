"""The incidents part of ``SqlStore``: incidents, alert deliveries and deployments.

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``, ``_insert``, ``_upsert``, ``_select``) and is not meant to be used on its own.
"""

from __future__ import annotations

__all__ = ["IncidentsStoreMixin"]


class IncidentsStoreMixin:
    """Methods of ``SqlStore`` for incidents, alert deliveries and deployments."""
