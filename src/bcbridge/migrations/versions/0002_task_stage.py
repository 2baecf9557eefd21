"""Tasks remember the stage they belong to: `transform` (the payload is the source record, which
the flow's transformers failed on) or `send` (the payload is what goes to the target).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:  # batch mode: SQLite cannot ALTER in place
        batch.add_column(sa.Column("stage", sa.String(20), nullable=False, server_default="send"))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("stage")
