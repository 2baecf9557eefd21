"""PostgreSQL restarted under 2 busy workers: they reconnect and the run ends ok, every
record once in BC."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bcbridge.engine import EngineClient
from bcbridge.store import Store
from tests.flows.conftest import BC, CRONUS
from tests.workers.conftest import (
    UPSERT_ITEMS,
    PrivatePostgres,
    engine_project,
    items_csv,
    wait_for_runs,
    worker_env,
)

pytestmark = pytest.mark.slow
RECORDS = 3000


def test_workers_reconnect_after_postgresql_restarts(
    tmp_path: Path, private_postgres: PrivatePostgres, bc_emulator_factory: Any, workers_of: Any
) -> None:
    emulator = bc_emulator_factory(latency_ms=20)
    store_url = private_postgres.url()
    project = engine_project(
        tmp_path,
        store_url,
        outgoing={"items": {**UPSERT_ITEMS, "batch_size": 50}},
        flows={
            "load": {
                "from": str(items_csv(tmp_path, RECORDS, "R")),
                "to": "items",
                "chunk_size": 100,
            }
        },
    )
    workers = workers_of(project, worker_env(emulator.info.env()))
    workers.start(2)
    store = Store(store_url)
    client = EngineClient(store)
    assert client.defer_run("load")
    client.close()
    deadline = time.monotonic() + 120
    while store.count_tasks("load").get("done", 0) < RECORDS // 5:
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.1)
    store.close()
    private_postgres.stop("fast")  # cuts every connection
    time.sleep(2)
    private_postgres.start()
    store = Store(store_url)
    try:
        wait_for_runs(store, ["load"], within=180, workers=workers)
        assert workers.stop_all() == [0, 0]
    finally:
        store.close()
    bc = BC(emulator)
    numbers = Counter(i["number"] for i in bc.all(CRONUS, "items") if i["number"][0] == "R")
    bc.close()
    assert len(numbers) == RECORDS and set(numbers.values()) == {1}
