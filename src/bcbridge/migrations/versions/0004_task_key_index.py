"""An index on tasks.record_key: the dashboard searches tasks by their record's identifier.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_record_key", "tasks", ["record_key"])


def downgrade() -> None:
    op.drop_index("ix_tasks_record_key", table_name="tasks")
