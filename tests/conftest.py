"""Shared fixtures; the emulator fixtures come from the bcbridge.testing plugin."""

from tests.pg_server import postgres

__all__ = ["postgres"]  # a session fixture: one PostgreSQL server for every test that asks
