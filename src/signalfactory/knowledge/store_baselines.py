"""The baselines part of ``SqlStore``: dataset profiles (baseline.json).

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``, ``_insert``, ``_upsert``, ``_select``) and is not meant to be used on its own.
"""

from __future__ import annotations

__all__ = ["BaselinesStoreMixin"]


class BaselinesStoreMixin:
    """Methods of ``SqlStore`` for dataset profiles (baseline.json)."""
