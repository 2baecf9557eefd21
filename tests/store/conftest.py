"""The store on both backends we promise: SQLite (a file) and a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pg_server import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()
