"""PostgreSQL + 3 `bcbridge worker` processes, SIGKILLed at random while they run a 20,000-record
upsert flow (a file -> BC) and a 20,000-record BC -> SQL flow: every record ends exactly once
in BC and in the target table. The seed is printed (BCBRIDGE_CRASH_SEED replays it)."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bcbridge.engine import EngineClient
from bcbridge.store import Store
from bcbridge.testing import RunningEmulator, start_emulator
from tests.flows.conftest import BC, CRONUS, SEED
from tests.pg_server import PostgresServer
from tests.workers.conftest import (
    UPSERT_ITEMS,
    engine_project,
    items_csv,
    wait_for_runs,
    worker_env,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
RECORDS = int(os.environ.get("BCBRIDGE_WORKER_RECORDS", "20000"))
UNLIMITED: dict[str, Any] = {"rate_limit": "1000000/300", "max_concurrent": 64, "max_queue": 1000}


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with start_emulator(scale=f"customers={RECORDS}", **UNLIMITED) as running:
        yield running


def test_sigkill_workers_while_they_split_two_big_flows(
    tmp_path: Path, emulator: RunningEmulator, postgres: PostgresServer, workers_of: Any
) -> None:
    rng = random.Random(SEED)
    print(f"\nworker kill test seed: {SEED} (BCBRIDGE_CRASH_SEED={SEED} replays it)")
    store_url, target = postgres.new_database(), postgres.new_database()
    source = items_csv(tmp_path, RECORDS, prefix="W")
    project = engine_project(
        tmp_path,
        store_url,
        incoming={"customers": {"entity": "customers", "company": CRONUS, "page_size": 1000}},
        outgoing={"items": {**UPSERT_ITEMS, "batch_size": 100}},
        flows={
            "load": {"from": str(source), "to": "items", "chunk_size": 500},
            "mirror": {
                "from": "customers",
                "transform": [{"keep": ["id", "number", "displayName"]}],
                "to": {"writer": f"{target}#customers", "key": "id"},
                "chunk_size": 1000,
            },
        },
    )
    workers = workers_of(project, worker_env(emulator.info.env()))
    workers.start(3)
    store = Store(store_url)
    client = EngineClient(store)
    try:
        assert client.defer_run("load") and client.defer_run("mirror")
        kills = _kill_at_random(workers, store, rng, ["load", "mirror"])
        wait_for_runs(store, ["load", "mirror"], within=300, workers=workers)
        assert workers.stop_all() == [0] * 3
    finally:
        client.close()
        store.close()

    bc = BC(emulator)
    numbers = Counter(i["number"] for i in bc.all(CRONUS, "items") if i["number"][0] == "W")
    customers = {c["id"] for c in bc.all(CRONUS, "customers")}
    bc.close()
    assert len(numbers) == RECORDS and set(numbers.values()) == {1}, f"kills: {kills}"
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        ids = Counter(row[0] for row in conn.execute(sa.text("SELECT id FROM customers")))
    engine.dispose()
    assert set(ids) == customers and set(ids.values()) == {1}, f"kills: {kills}"
    assert kills >= 2


def _kill_at_random(workers: Any, store: Store, rng: random.Random, flows: list[str]) -> int:
    """SIGKILL a random worker now and then while the flows run (and start another in its
    place); how many were killed. Kills are aimed by progress (records done), not time."""
    kills = 0
    for _ in range(4):
        done = sum(store.count_tasks(flow).get("done", 0) for flow in flows)
        left = 2 * RECORDS - done
        if left < RECORDS // 5:
            break
        aim = done + rng.randint(RECORDS // 20, left // 3)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if sum(store.count_tasks(flow).get("done", 0) for flow in flows) >= aim:
                break
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 0.5))
        workers.kill(rng.randrange(len(workers.running)))
        kills += 1
        workers.start()
    return kills
