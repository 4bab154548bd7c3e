"""Tables of dataset profiles (baseline.json) (migration 0007).

Defined on the shared :data:`signalfactory.knowledge.models.metadata`; imported at the end of
``models.py`` so the metadata always holds every table.

``baselines`` keeps every version of every dataset's baseline (append-only, version 1, 2, ...
per dataset): the latest is the current baseline, the older ones are its history. A version
rolled forward from a certified run names that run and what the run changed (``changes``:
new enum values, added/removed/retyped fields, the partition's null rates), which is what the
drift and data-quality signal engines read.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from signalfactory.knowledge.models import UTCDateTime, metadata

baselines = Table(
    "baselines",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("dataset_urn", String, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("document", JSON, nullable=False),
    Column("schema_fingerprint", String, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("run_id", String, nullable=True),
    Column("changes", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("dataset_urn", "version", name="uq_baselines_dataset_urn_version"),
    Index("ix_baselines_run_id", "run_id"),
)

#: The names of the tables this module defines (the store conformance test checks them all).
TABLE_NAMES: frozenset[str] = frozenset({"baselines"})
