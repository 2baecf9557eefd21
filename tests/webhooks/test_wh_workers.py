"""Webhooks with `engine: procrastinate`: serve receives BC's notifications and keeps them in the
PostgreSQL store; a worker runs the flow over them (serve runs nothing itself)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import httpx
import pytest

from bcbridge.engine import WorkerState, run_worker
from bcbridge.store import Store
from bcbridge.testing import InProcessEmulator
from tests.pg_server import PostgresServer
from tests.webhooks.conftest import Serving, company_path, wait_for

pytestmark = pytest.mark.postgres


def test_notifications_are_processed_by_a_worker_not_by_serve(
    serving: Callable[..., Serving],
    emulator: InProcessEmulator,
    api: httpx.Client,
    postgres: PostgresServer,
) -> None:
    running = serving(store=postgres.new_database(), engine="procrastinate")
    project = running.service.project
    stop = threading.Event()
    state = WorkerState(project, Store(project.store), stop, client_factory=running.client_factory)
    worker = threading.Thread(target=anyio.run, args=(_work, state))
    worker.start()
    try:
        wait_for(lambda: _subscription_id(running), what="a subscription")
        created = api.post(f"{company_path(emulator)}/customers", json={"displayName": "Hooked"})
        assert created.status_code == 201, created.text
        record_id = created.json()["id"]
        wait_for(lambda: running.versions()[(record_id, "Hooked")], what="the new customer")
        wait_for(lambda: running.store.counts()["processed"] >= 1, what="processed")
        assert running.service.finished == {}  # every run was a worker's, none serve's
    finally:
        stop.set()
        worker.join(30)
        state.store.close()
    assert running.versions()[(record_id, "Hooked")] == 1


async def _work(state: WorkerState) -> None:
    await run_worker(state, stalled_after=3)


def _subscription_id(running: Serving) -> str | None:
    row = running.store.subscription("customers")
    return row.subscription_id if row else None
