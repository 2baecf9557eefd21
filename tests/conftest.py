"""Shared fixtures; the emulator fixtures come from the bcbridge.testing plugin."""

import pytest

from tests.pg_server import postgres

__all__ = ["postgres"]  # a session fixture: one PostgreSQL server for every test that asks


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `postgres` every test that starts the server: it asks for the fixture, or runs on
    the "postgresql" side of a backend parameter (`store_url`, `db_url`, `backend`), so
    `make test-fast` can leave them out without a list to keep up."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if "postgres" in fixtures or "postgresql" in params.values():
            item.add_marker(pytest.mark.postgres)
