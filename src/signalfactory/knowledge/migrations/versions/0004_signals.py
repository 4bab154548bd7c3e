"""Observability: signal evaluations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 00:00:00

Hand-written like 0001: the schema never depends on the current models. Keep
``signalfactory.knowledge.models_signals`` in step with it. Only new tables.
"""

from __future__ import annotations

from collections.abc import Sequence

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
