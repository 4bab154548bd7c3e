"""Knowledge plane: runs, audit trail, evidence, events, certification, quarantine and runtime.

``open_store(url)`` gives a migrated :class:`SqlStore` (SQLite by default, PostgreSQL via
``postgresql+psycopg://``) implementing ``signalfactory.core.protocols.MetadataStore``.
"""

from signalfactory.knowledge.store import SqlStore, open_store

__all__ = ["SqlStore", "open_store"]
