"""Observability: evidence bus: the embedded event log and consumer offsets.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 00:00:00

Hand-written like 0001: the schema never depends on the current models. Keep
``signalfactory.knowledge.models_bus`` in step with it. Only new tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "bus_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        _ts("time"),
        sa.Column("envelope", sa.JSON(), nullable=False),
        _ts("published_at"),
        sa.UniqueConstraint("event_id", name="uq_bus_events_event_id"),
        # SQLite AUTOINCREMENT: a seq is never reused after the newest rows are trimmed.
        sqlite_autoincrement=True,
    )
    op.create_table(
        "bus_offsets",
        sa.Column("group_name", sa.String(), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        _ts("updated_at"),
    )
    op.create_table(
        "bus_leases",
        sa.Column("group_name", sa.String(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("consumer", sa.String(), nullable=False),
        sa.Column("attempt", sa.BigInteger(), nullable=False),
        _ts("leased_until"),
    )
    op.create_index(
        "ix_bus_leases_group_name_leased_until", "bus_leases", ["group_name", "leased_until"]
    )


def downgrade() -> None:
    for table in ("bus_leases", "bus_offsets", "bus_events"):
        op.drop_table(table)
