"""Observability: the lineage graph (OpenLineage runs, datasets, jobs, edges).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 00:00:00

Hand-written like 0001: the schema never depends on the current models. Keep
``signalfactory.knowledge.models_lineage`` in step with it. Only new tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _key(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(), primary_key=True)


def _str(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "lineage_nodes",
        _key("node_id"),
        _str("kind"),
        _str("namespace"),
        _str("name"),
        _ts("first_seen"),
        _ts("last_seen"),
    )
    op.create_index("ix_lineage_nodes_name", "lineage_nodes", ["name"])

    op.create_table(
        "lineage_runs",
        _key("run_id"),
        _str("job_id"),
        _str("state"),
        _ts("event_time"),
        _ts("started_at", nullable=True),
        _ts("ended_at", nullable=True),
        _ts("nominal_start", nullable=True),
        _str("partition_key", nullable=True),
        _str("parent_run_id", nullable=True),
        _str("parent_job_id", nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        _str("producer"),
        sa.Column("facets", sa.JSON(), nullable=False),
    )
    op.create_index("ix_lineage_runs_job_id", "lineage_runs", ["job_id"])
    op.create_index("ix_lineage_runs_parent_run_id", "lineage_runs", ["parent_run_id"])

    op.create_table(
        "lineage_run_events",
        _key("event_key"),
        _str("run_id"),
        _str("event_type"),
        _ts("event_time"),
        _str("source"),
    )
    op.create_index("ix_lineage_run_events_run_id", "lineage_run_events", ["run_id"])

    op.create_table(
        "lineage_run_io",
        _key("run_id"),
        _key("dataset_id"),
        _key("direction"),
        sa.Column("stats", sa.JSON(), nullable=False),
    )
    op.create_index("ix_lineage_run_io_dataset_id", "lineage_run_io", ["dataset_id"])

    op.create_table(
        "lineage_edges",
        _key("src_id"),
        _key("dst_id"),
        _str("last_run_id"),
        _ts("updated_at"),
    )
    op.create_index("ix_lineage_edges_dst_id", "lineage_edges", ["dst_id"])

    op.create_table(
        "lineage_dataset_edges",
        _key("upstream"),
        _key("downstream"),
        _key("job_id"),
        _str("last_run_id"),
        _ts("updated_at"),
    )
    op.create_index("ix_lineage_dataset_edges_downstream", "lineage_dataset_edges", ["downstream"])

    op.create_table(
        "lineage_column_edges",
        _key("dataset_id"),
        _key("field"),
        _key("input_dataset_id"),
        _key("input_field"),
        sa.Column("transformation", sa.Text(), nullable=False),
        _str("last_run_id"),
    )
    op.create_index(
        "ix_lineage_column_edges_input_dataset_id", "lineage_column_edges", ["input_dataset_id"]
    )

    op.create_table(
        "lineage_run_signatures",
        _key("run_id"),
        _key("signature_id"),
        _str("dataset_id", nullable=True),
        _str("source"),
        _ts("at"),
    )
    op.create_index(
        "ix_lineage_run_signatures_signature_id", "lineage_run_signatures", ["signature_id"]
    )


def downgrade() -> None:
    for table in (
        "lineage_run_signatures",
        "lineage_column_edges",
        "lineage_dataset_edges",
        "lineage_edges",
        "lineage_run_io",
        "lineage_run_events",
        "lineage_runs",
        "lineage_nodes",
    ):
        op.drop_table(table)
