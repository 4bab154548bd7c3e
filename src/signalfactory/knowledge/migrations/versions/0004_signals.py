"""Observability: signal evaluations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 00:00:00

Hand-written like 0001: the schema never depends on the current models. Keep
``signalfactory.knowledge.models_signals`` in step with it. Only new tables, plus one new index
on ``lifecycle_events`` for the signal engines' time-window reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EVENTS_INDEX = "ix_lifecycle_events_dataset_urn_event_type_timestamp"


def upgrade() -> None:
    op.create_table(
        "signals",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("signal_id", sa.String(), nullable=False),
        sa.Column("dataset_urn", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("partition_values", sa.String(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.UniqueConstraint("signal_id", name="uq_signals_signal_id"),
    )
    op.create_index(
        "ix_signals_dataset_urn_kind_evaluated_at",
        "signals",
        ["dataset_urn", "kind", "evaluated_at"],
    )
    op.create_index("ix_signals_evaluated_at", "signals", ["evaluated_at"])
    op.create_index(_EVENTS_INDEX, "lifecycle_events", ["dataset_urn", "event_type", "timestamp"])


def downgrade() -> None:
    op.drop_index(_EVENTS_INDEX, table_name="lifecycle_events")
    op.drop_table("signals")
