"""A run on a PostgreSQL store takes BC's request budget from the store (`bcbridge.budget`), so
that serve, workers and CLI runs of one app share BC's limits; a SQLite store does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from bcbridge.budget import budget_name
from bcbridge.flowconfig import load_project
from bcbridge.flows import FlowRunner
from bcbridge.store import Store
from tests.flows.conftest import CRONUS, write_project
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.postgres


def project_on(folder: Path, store: str) -> Path:
    return write_project(
        folder / "bcbridge.yaml",
        {
            "store": store,
            "incoming": {"customers": {"entity": "customers", "company": CRONUS}},
            "flows": {"mirror": {"from": "customers", "to": "customers.jsonl"}},
        },
    )


def run(project: Path) -> tuple[str, str]:
    """The run's status, and the budget name of its client."""
    config = load_project(project)
    store = Store(config.store)
    try:
        result = anyio.run(FlowRunner(config, store).run, "mirror")
    finally:
        store.close()
    return result.status, budget_name(config.client_settings("default"))


def test_a_run_on_postgresql_spends_the_shared_budget(
    tmp_path: Path, postgres: PostgresServer, bc_emulator_factory: Any, monkeypatch: Any
) -> None:
    emulator = bc_emulator_factory()
    for name, value in emulator.info.env().items():
        monkeypatch.setenv(name, value)
    state = postgres.new_database()
    status, name = run(project_on(tmp_path, state))
    assert status == "ok"
    engine = sa.create_engine(state)
    with engine.connect() as conn:
        budgets = conn.execute(sa.text("SELECT budget FROM bc_budget")).scalars().all()
    engine.dispose()
    assert budgets == [name]


def test_a_run_on_sqlite_keeps_the_limits_in_its_process(
    tmp_path: Path, bc_emulator_factory: Any, monkeypatch: Any
) -> None:
    emulator = bc_emulator_factory()
    for name, value in emulator.info.env().items():
        monkeypatch.setenv(name, value)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    status, _ = run(project_on(tmp_path, state))
    assert status == "ok"
    engine = sa.create_engine(state)
    with engine.connect() as conn:
        assert not conn.execute(sa.text("SELECT count(*) FROM bc_budget")).scalar()
    engine.dispose()
