"""`serve` with `engine: procrastinate`: Run now defers the run, a worker (here in a thread of
this process) runs it, and the Workers page and `bcbridge workers list` show the worker."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest
import sqlalchemy as sa

from bcbridge.cli import main
from bcbridge.dashboard import FlowService, Sessions, create_app
from bcbridge.engine import EngineClient, WorkerState, run_worker
from bcbridge.flowconfig import load_project
from bcbridge.store import Store
from tests.dashboard.conftest import LOGIN_TOKEN
from tests.pg_server import PostgresServer
from tests.workers.conftest import engine_project

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_run_now_goes_to_a_worker_and_the_workers_page_shows_it(
    tmp_path: Path, postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    store_url, target = postgres.new_database(), postgres.new_database()
    (tmp_path / "in.jsonl").write_text("".join(f'{{"id": "{n}"}}\n' for n in range(50)))
    project_file = engine_project(
        tmp_path,
        store_url,
        flows={"copy": {"from": "in.jsonl", "to": {"writer": f"{target}#rows", "key": "id"}}},
    )
    project = load_project(project_file)
    store = Store(store_url)
    engine = EngineClient(store)
    stop = threading.Event()
    worker_stop = threading.Event()
    service = FlowService(project, store, stop, engine=engine)
    app = create_app(service, Sessions(password=None, login_token=LOGIN_TOKEN))
    worker = threading.Thread(
        target=anyio.run, args=(_worker, WorkerState(project, Store(store_url), worker_stop))
    )
    worker.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await client.get(f"/login?token={LOGIN_TOKEN}")
            assert service.start("copy") is True  # what Run now does
            assert service.running("copy") is None  # not in this process
            await _until(
                lambda: bool(store.runs("copy")) and store.runs("copy")[0]["status"] == "ok"
            )
            page = await client.get("/workers")
            assert page.status_code == 200 and "Last heartbeat" in page.text
            assert "No workers" not in page.text
        assert main_json(["workers", "list", "--json", "--config", str(project_file)], capsys)
    finally:
        worker_stop.set()
        worker.join(30)
        stop.set()
        engine.close()
        store.close()
    rows = sa.create_engine(target)
    with rows.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM rows")).scalar() == 50
    rows.dispose()


async def _worker(state: WorkerState) -> None:
    await run_worker(state, stalled_after=3)


async def _until(ready: object, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not ready():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within time"
        await anyio.sleep(0.1)


def main_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code in (0, None)
    workers: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    assert workers and {"id", "heartbeat_age", "jobs"} <= set(workers[0])
    return workers
