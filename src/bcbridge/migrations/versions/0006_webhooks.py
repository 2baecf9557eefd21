"""Webhooks: the subscription bcbridge holds in BC for each webhook incoming (its clientState
kept only as a SHA-256 digest), and the notifications received, one row per flow that reads
the incoming, de-duplicated on a key of their content, until a run of the flow processed them.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("incoming", sa.String(200), primary_key=True),
        sa.Column("subscription_id", sa.String(200), nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("notification_url", sa.Text, nullable=False),
        sa.Column("client_state_hash", sa.String(64), nullable=False),
        sa.Column("etag", sa.Text),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refused", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "webhook_notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("incoming", sa.String(200), nullable=False),
        sa.Column("dedup_key", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(200), nullable=False),
        sa.Column("change_type", sa.String(20), nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("last_modified", sa.String(40)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("flow", "dedup_key", name="uq_webhook_notifications_key"),
    )
    op.create_index(
        "ix_webhook_notifications_open", "webhook_notifications", ["flow", "processed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_notifications_open", table_name="webhook_notifications")
    op.drop_table("webhook_notifications")
    op.drop_table("webhook_subscriptions")
