"""Shared fixtures; the emulator fixtures come from the bcbridge.testing plugin."""

import signal

import pytest

from tests.pg_server import postgres

__all__ = ["postgres"]  # a session fixture: one PostgreSQL server for every test that asks


@pytest.fixture(autouse=True)
def _own_token_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The CLI keeps tokens in $XDG_CACHE_HOME/bcbridge: each test gets its own, so that no
    test takes a token another one (or the user) cached, and none writes to ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


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


def pytest_configure(config: pytest.Config) -> None:
    """pytest-xdist workers start with Ctrl-C ignored, and an ignored signal is inherited by the
    processes a test starts: a `bcbridge` process sent SIGINT would never see it. Give the
    worker Python's own handler, which children do not inherit."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
