"""The signals part of ``SqlStore``: signal evaluations.

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``, ``_insert``, ``_upsert``, ``_select``) and is not meant to be used on its own.
"""

from __future__ import annotations

__all__ = ["SignalsStoreMixin"]


class SignalsStoreMixin:
    """Methods of ``SqlStore`` for signal evaluations."""
