"""Alembic environment for the bcbridge store (run through `bcbridge.store.migrate`)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from bcbridge.store import metadata

url = context.config.get_main_option("sqlalchemy.url")
engine = sa.create_engine(str(url), poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
