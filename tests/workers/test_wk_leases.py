"""Leases on workers: a worker frozen (SIGSTOP) past its lease wakes up and writes nothing, while
another worker finished its run; a record BC refused in a split run is kept as read, and a retry
after the transform was fixed (in the project file, which the workers load again) sends it fixed.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bcbridge.engine import EngineClient
from bcbridge.store import Store, TaskStatus
from tests.flows.conftest import BC, CRONUS
from tests.flows.test_fl_refused_retry import FIRST, FIXED, RECORDS
from tests.pg_server import PostgresServer
from tests.workers.conftest import (
    UPSERT_ITEMS,
    engine_project,
    items_csv,
    wait_for_runs,
    worker_env,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
FROZEN_RECORDS = 400


def test_a_worker_frozen_past_its_lease_writes_nothing_when_it_wakes(
    tmp_path: Path, postgres: PostgresServer, bc_emulator_factory: Any, workers_of: Any
) -> None:
    emulator = bc_emulator_factory(latency_ms=100)
    store_url = postgres.new_database()
    project = engine_project(
        tmp_path,
        store_url,
        outgoing={"items": {**UPSERT_ITEMS, "batch_size": 10}},
        flows={
            "load": {
                "from": str(items_csv(tmp_path, FROZEN_RECORDS, "FZ")),
                "to": "items",
                "chunk_size": 100,
            }
        },
    )
    workers = workers_of(project, worker_env(emulator.info.env()))
    workers.start(1)  # alone: it runs the run and delivers its chunks
    store = Store(store_url)
    client = EngineClient(store)
    try:
        assert client.defer_run("load")
        _wait(lambda: store.count_tasks("load").get("done", 0) >= 20, workers, "first records")
        frozen = workers.running[0]
        frozen.send_signal(signal.SIGSTOP)  # mid-chunk: between two $batches, or in one
        workers.start(1)  # takes the stalled jobs over, once the lease is past its TTL
        wait_for_runs(store, ["load"], within=120, workers=workers)
        requests = emulator.stats()["requests"]
        frozen.send_signal(signal.SIGCONT)
        time.sleep(5)  # the woken worker's job goes on from where it stopped
        assert emulator.stats()["requests"] == requests, workers.logs()
        assert workers.stop_all() == [0, 0], workers.logs()
        assert "Traceback" not in workers.logs()  # its job taken over: one line in its log
    finally:
        client.close()
        store.close()
    bc = BC(emulator)
    numbers = Counter(i["number"] for i in bc.all(CRONUS, "items") if i["number"][:2] == "FZ")
    bc.close()
    assert len(numbers) == FROZEN_RECORDS and set(numbers.values()) == {1}


# the records and transforms of the one-process test, with numbers of their own
REFUSED_RECORDS = [{**record, "number": f"W{record['number']}"} for record in RECORDS]


def test_a_record_refused_in_a_split_run_is_fixed_by_fixing_the_transform(
    tmp_path: Path, postgres: PostgresServer, bc_emulator_factory: Any, workers_of: Any
) -> None:
    emulator = bc_emulator_factory()
    store_url = postgres.new_database()
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(record) + "\n" for record in REFUSED_RECORDS))

    def project(transform: list[dict[str, Any]]) -> Path:
        flow = {"from": str(source), "transform": transform, "to": "items", "chunk_size": 1}
        return engine_project(
            tmp_path, store_url, outgoing={"items": UPSERT_ITEMS}, flows={"items": flow}
        )

    workers = workers_of(project(FIRST), worker_env(emulator.info.env()))
    workers.start(2)
    store = Store(store_url)
    client = EngineClient(store)
    try:
        assert client.defer_run("items")
        _wait(lambda: _ended(store, "items"), workers, "the run")
        (refused,) = store.tasks("items", TaskStatus.FAILED)
        assert "StringExceededLength" in (refused.last_error or "")
        assert (refused.stage, refused.payload) == ("transform", REFUSED_RECORDS[1])  # as read

        project(FIXED)  # saved as the dashboard's flow form does; the workers load it again
        assert client.defer_retry("items", [refused.id])
        _wait(lambda: _status(store, refused.id) == TaskStatus.DONE, workers, "the retry")
        done = store.task(refused.id)
        assert done is not None and done.payload == {"number": "WRFX-2", "displayName": "Now short"}
        assert workers.stop_all() == [0, 0], workers.logs()
    finally:
        client.close()
        store.close()
    bc = BC(emulator)
    held = bc.all(CRONUS, "items", **{"$filter": "startswith(number,'WRFX-')"})
    bc.close()
    assert sorted((i["number"], i["displayName"]) for i in held) == [
        ("WRFX-1", "Short enough"),
        ("WRFX-2", "Now short"),
    ]


def _ended(store: Store, flow: str) -> bool:
    runs = store.runs(flow, limit=1)
    return bool(runs) and runs[0]["status"] not in ("running", "crashed", "interrupted")


def _status(store: Store, task_id: int) -> str | None:
    task = store.task(task_id)
    return task.status if task else None


def _wait(condition: Any, workers: Any, what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {within}s\n{workers.logs()}"
        time.sleep(0.2)
