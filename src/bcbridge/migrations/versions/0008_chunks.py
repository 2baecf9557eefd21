"""The chunks table: which chunks of a run split over `bcbridge worker`s were delivered, so
that the run's cursor moves over the delivered prefix only (bcbridge.engine).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chunks",
        sa.Column("run_id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("chunks")
