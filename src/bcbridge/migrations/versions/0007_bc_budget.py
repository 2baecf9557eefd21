"""One BC request budget per app registration and environment, shared by every process of a
PostgreSQL store (`bcbridge.budget`): a token bucket row per budget, updated atomically. The
in-flight slots are PostgreSQL advisory locks, which need no table.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bc_budget",
        sa.Column("budget", sa.String(400), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("bc_budget")
