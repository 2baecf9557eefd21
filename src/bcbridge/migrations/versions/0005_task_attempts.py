"""Every attempt of a task, and the request-log lines of the delivery it was part of: the
dashboard's task page shows them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("requests", sa.Text, nullable=False),
    )
    op.create_table(
        "task_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("delivery_id", sa.Integer),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("method", sa.String(10)),
        sa.Column("http_status", sa.Integer),
        sa.Column("error_code", sa.String(200)),
        sa.Column("error_message", sa.Text),
        sa.Column("request_id", sa.String(200)),
    )
    op.create_index("ix_task_attempts_task", "task_attempts", ["task_id", "attempt"])


def downgrade() -> None:
    op.drop_index("ix_task_attempts_task", table_name="task_attempts")
    op.drop_table("task_attempts")
    op.drop_table("task_deliveries")
