"""Observability: incidents, alert deliveries and deployments.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 00:00:00

Hand-written like 0001: the schema never depends on the current models. Keep
``signalfactory.knowledge.models_incidents`` in step with it. Only new tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("incident_id", sa.String(), primary_key=True),
        sa.Column("dedup_key", sa.Text(), nullable=False),
        # The dedup key while OPEN, NULL once resolved: at most one open incident per key.
        sa.Column("open_key", sa.Text(), nullable=True),
        sa.Column("dataset_urn", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        _ts("opened_at"),
        _ts("updated_at"),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("signal_ids", sa.JSON(), nullable=False),
        sa.Column("partition_values", sa.String(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("owner_team", sa.String(), nullable=True),
        sa.Column("blast_radius", sa.JSON(), nullable=False),
        _ts("resolved_at", nullable=True),
        sa.UniqueConstraint("open_key", name="uq_incidents_open_key"),
    )
    op.create_index("ix_incidents_dedup_key", "incidents", ["dedup_key"])
    op.create_index("ix_incidents_status", "incidents", ["status"])
    op.create_index("ix_incidents_dataset_urn", "incidents", ["dataset_urn"])

    op.create_table(
        "alert_deliveries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("delivery_id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("sink", sa.String(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("at"),
        sa.UniqueConstraint("delivery_id", name="uq_alert_deliveries_delivery_id"),
    )
    op.create_index("ix_alert_deliveries_incident_id", "alert_deliveries", ["incident_id"])

    op.create_table(
        "deployments",
        sa.Column("deployment_id", sa.String(), primary_key=True),
        sa.Column("deploy_ref", sa.String(), nullable=False),
        sa.Column("pipeline", sa.String(), nullable=False),
        _ts("recorded_at"),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_deployments_pipeline", "deployments", ["pipeline"])
    op.create_index("ix_deployments_recorded_at", "deployments", ["recorded_at"])


def downgrade() -> None:
    for table in ("deployments", "alert_deliveries", "incidents"):
        op.drop_table(table)
