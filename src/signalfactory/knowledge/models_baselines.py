"""Tables of dataset profiles (baseline.json) (migration 0007).

Defined on the shared :data:`signalfactory.knowledge.models.metadata`; imported at the end of
``models.py`` so the metadata always holds every table.
"""

from __future__ import annotations

#: The names of the tables this module defines (the store conformance test checks them all).
TABLE_NAMES: frozenset[str] = frozenset()
