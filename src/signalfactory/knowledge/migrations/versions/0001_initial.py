"""Initial knowledge-plane schema.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Hand-written: every table, column and index is spelled out here so the schema never depends
on the current ``models.py``. Keep ``signalfactory.knowledge.models`` in step with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
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
        "datasets",
        sa.Column("urn", sa.String(), primary_key=True),
        sa.Column("owner_team", sa.String(), nullable=False),
        sa.Column("tier", sa.String(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("source_files", sa.JSON(), nullable=False),
        _ts("registered_at"),
    )

    op.create_table(
        "runs",
        _seq(),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("pipeline", sa.String(), nullable=False),
        sa.Column("dataset_urn", sa.String(), nullable=False),
        sa.Column("partition_values", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("engine", sa.String(), nullable=False),
        sa.Column("chunk_size", sa.BigInteger(), nullable=False),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        sa.Column("certification_status", sa.String(), nullable=False),
        sa.Column("certified_version", sa.BigInteger(), nullable=True),
        sa.Column("rows_read", sa.BigInteger(), nullable=False),
        sa.Column("rows_written", sa.BigInteger(), nullable=False),
        sa.Column("rows_quarantined", sa.BigInteger(), nullable=False),
        sa.Column("rows_dropped", sa.BigInteger(), nullable=False),
        sa.Column("quarantine_table", sa.String(), nullable=True),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reconciliation", sa.JSON(), nullable=False),
        sa.UniqueConstraint("run_id", name="uq_runs_run_id"),
    )
    op.create_index("ix_runs_dataset_urn", "runs", ["dataset_urn"])
    op.create_index("ix_runs_idempotency_key", "runs", ["idempotency_key"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])

    op.create_table(
        "transitions",
        _seq(),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("from_status", sa.String(), nullable=True),
        sa.Column("to_status", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _ts("at"),
    )
    op.create_index("ix_transitions_subject", "transitions", ["subject"])

    op.create_table(
        "evidence",
        _seq(),
        sa.Column("evidence_id", sa.String(), nullable=False),
        sa.Column("dataset_urn", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("gate", sa.String(), nullable=False),
        sa.Column("result", sa.String(), nullable=False),
        sa.Column("failure_signature", sa.Text(), nullable=True),
        sa.Column("failure_signatures", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        _ts("timestamp"),
        sa.UniqueConstraint("evidence_id", name="uq_evidence_evidence_id"),
    )
    op.create_index("ix_evidence_run_id", "evidence", ["run_id"])
    op.create_index("ix_evidence_dataset_urn", "evidence", ["dataset_urn"])

    op.create_table(
        "lifecycle_events",
        _seq(),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("event_type", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("dataset_urn", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _ts("timestamp"),
        sa.UniqueConstraint("event_id", name="uq_lifecycle_events_event_id"),
    )
    op.create_index("ix_lifecycle_events_run_id", "lifecycle_events", ["run_id"])
    op.create_index("ix_lifecycle_events_dataset_urn", "lifecycle_events", ["dataset_urn"])

    op.create_table(
        "certification",
        sa.Column("dataset_urn", sa.String(), primary_key=True),
        sa.Column("certification_status", sa.String(), nullable=False),
        sa.Column("certified_version", sa.BigInteger(), nullable=True),
        _ts("last_certified_at", nullable=True),
        sa.Column("last_run_id", sa.String(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
    )

    op.create_table(
        "quarantine",
        _seq(),
        sa.Column("quarantine_id", sa.String(), nullable=False),
        sa.Column("dataset_urn", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("table_name", sa.String(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("batch_level", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("partition_values", sa.JSON(), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("quarantine_id", name="uq_quarantine_quarantine_id"),
    )
    op.create_index("ix_quarantine_dataset_urn", "quarantine", ["dataset_urn"])
    op.create_index("ix_quarantine_run_id", "quarantine", ["run_id"])


def downgrade() -> None:
    for table in (
        "quarantine",
        "certification",
        "lifecycle_events",
        "evidence",
        "transitions",
        "runs",
        "datasets",
    ):
        op.drop_table(table)
