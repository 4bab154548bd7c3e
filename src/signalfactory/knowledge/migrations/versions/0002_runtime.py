"""Industrial runtime: checkpoints, run progress, dead letters and run leases.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01 00:00:00

Hand-written like 0001: the schema never depends on the current ``models.py``. Keep
``signalfactory.knowledge.models`` in step with it. Only new tables: existing rows are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _seq() -> sa.Column[int]:
    return sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        _seq(),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("chunk_index", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _ts("created_at"),
        # Its index serves lookups by run_id (ordered by chunk_index) as well.
        sa.UniqueConstraint("run_id", "chunk_index", name="uq_checkpoints_run_id_chunk_index"),
    )

    op.create_table(
        "run_progress",
        sa.Column("run_id", sa.String(), primary_key=True),
        sa.Column("chunks_done", sa.BigInteger(), nullable=False),
        sa.Column("chunks_total", sa.BigInteger(), nullable=True),
        sa.Column("rows_done", sa.BigInteger(), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), nullable=True),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("rows_per_s", sa.Double(), nullable=False),
        sa.Column("eta_s", sa.Double(), nullable=True),
        sa.Column("rss_mb", sa.Double(), nullable=False),
        sa.Column("cpu_pct", sa.Double(), nullable=False),
        sa.Column("phase", sa.String(), nullable=False),
        _ts("updated_at"),
    )

    op.create_table(
        "dead_letters",
        _seq(),
        sa.Column("dead_letter_id", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("dataset_urn", sa.String(), nullable=False),
        sa.Column("chunk_index", sa.BigInteger(), nullable=False),
        sa.Column("correlation_id", sa.String(), nullable=False),
        sa.Column("error_type", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("payload_sample", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("dead_letter_id", name="uq_dead_letters_dead_letter_id"),
    )
    op.create_index("ix_dead_letters_run_id", "dead_letters", ["run_id"])
    op.create_index("ix_dead_letters_dataset_urn", "dead_letters", ["dataset_urn"])
    op.create_index("ix_dead_letters_status", "dead_letters", ["status"])

    op.create_table(
        "run_leases",
        sa.Column("idempotency_key", sa.String(), primary_key=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        _ts("heartbeat_at"),
    )


def downgrade() -> None:
    for table in ("run_leases", "dead_letters", "run_progress", "checkpoints"):
        op.drop_table(table)
