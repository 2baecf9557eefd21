"""The engine's parts one by one: the project setting, Procrastinate's schema, deferring (one
run per flow queued, a scheduled time fired once), commit in order, `bcbridge workers list`."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import procrastinate
import pytest
import sqlalchemy as sa
from procrastinate.testing import InMemoryConnector

from bcbridge.cli import main
from bcbridge.engine import (
    EngineClient,
    SplitRunner,
    WorkerState,
    _Chunk,
    ensure_schema,
    list_workers,
)
from bcbridge.errors import ConfigError
from bcbridge.flowconfig import load_project
from bcbridge.flows import RunResult
from bcbridge.store import LeaseKeeper, RunStatus, Store
from tests.pg_server import PostgresServer
from tests.workers.conftest import engine_project


def test_engine_procrastinate_needs_a_postgresql_store(tmp_path: Path) -> None:
    project = engine_project(tmp_path, "sqlite:///state.db", flows={})
    with pytest.raises(ConfigError) as failure:
        load_project(project)
    (line,) = str(failure.value).splitlines()
    assert line.startswith(f"{project}:2: engine: procrastinate needs a PostgreSQL `store:`")


def test_workers_refuse_a_project_without_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bcbridge.yaml").write_text("flows: {}\n")
    with pytest.raises(SystemExit) as stop:
        main(["workers", "list", "--config", str(tmp_path / "bcbridge.yaml")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "engine: inline: workers run the flows of a project with `engine: procrastinate`" in (
        " ".join(err.split())
    )


@pytest.mark.postgres
def test_the_schema_is_applied_once_by_processes_starting_together(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    errors: list[BaseException] = []

    def apply() -> None:
        try:
            ensure_schema(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=apply) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ensure_schema(url)  # and again later: nothing to do
    assert errors == []
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'procrastinate_%'")
        ).scalar()
    engine.dispose()
    assert tables == 4


@pytest.mark.postgres
def test_one_run_per_flow_is_queued_and_a_scheduled_time_fires_once(
    postgres: PostgresServer,
) -> None:
    store = Store(postgres.new_database())
    first, second = EngineClient(store), EngineClient(store)  # two serves of one project
    try:
        assert first.defer_run("load") is True
        assert second.defer_run("load") is False  # queued already, not started
        assert first.defer_run("other") is True
        due = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert first.fire_once("load", due) is True
        assert second.fire_once("load", due) is False
        assert second.fire_once("load", due + timedelta(minutes=5)) is True
        assert first.fire_once("load", due + timedelta(minutes=5)) is False
        assert list_workers(store) == []
    finally:
        first.close()
        second.close()
        store.close()


class _Source:
    """The records a run's cursor was moved over, in order (a stand-in for an incoming)."""

    def __init__(self) -> None:
        self.committed: list[int] = []

    def commit(self, records: Iterable[dict[str, Any]]) -> None:
        self.committed += [record["n"] for record in records]


@pytest.mark.postgres
def test_the_cursor_moves_over_the_delivered_prefix_only(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Chunk 2 delivered before chunk 1: the cursor waits; then it moves over both."""
    url = postgres.new_database()
    project = load_project(engine_project(tmp_path, url, flows={}))
    store = Store(url)
    runner = SplitRunner(project, store, procrastinate.App(connector=InMemoryConnector()))
    chunks = deque(_Chunk(seq, [{"n": seq}], [], None) for seq in (1, 2, 3))
    source, result = _Source(), RunResult("f", 1, RunStatus.RUNNING, Counter())
    lease = store.acquire_lease("f")

    async def commit(keeper: LeaseKeeper) -> bool:
        return await runner._commit_delivered("f", 1, keeper, chunks, source, result)

    try:
        with LeaseKeeper(store, lease) as keeper:
            store.chunk_done("f", 1, 2, {"created": 5})  # the second chunk first
            assert anyio.run(commit, keeper) is False
            assert source.committed == [] and len(chunks) == 3
            store.chunk_done("f", 1, 1, {"created": 4})
            store.chunk_done("f", 1, 1, {"created": 4})  # a repeat is ignored
            assert anyio.run(commit, keeper) is True
            assert source.committed == [1, 2] and [c.seq for c in chunks] == [3]
            assert result.counts == Counter(created=9)
    finally:
        store.close()


@pytest.mark.postgres
def test_a_chunk_of_a_run_that_lost_the_flow_is_not_delivered(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """A chunk job whose run no longer holds the flow's lease (it died and another run took
    the flow) writes nothing; the run holding it delivers the chunk."""
    url, target = postgres.new_database(), postgres.new_database()
    flows = {"copy": {"from": "in.jsonl", "to": {"writer": f"{target}#rows", "key": "id"}}}
    project = load_project(engine_project(tmp_path, url, flows=flows))
    store = Store(url)
    runner = SplitRunner(project, store, procrastinate.App(connector=InMemoryConnector()))
    lease = store.acquire_lease("copy")
    run_id = store.start_run("copy", holder=lease.holder)
    tasks = store.register("copy", run_id, [(str(n), {"id": str(n)}) for n in range(5)])
    ids = [task.id for task in tasks]
    try:
        anyio.run(runner.deliver_chunk, "copy", run_id, "a-dead-run", 1, ids)
        assert store.count_tasks("copy") == {"pending": 5}
        assert store.chunks_done(run_id) == {}
        anyio.run(runner.deliver_chunk, "copy", run_id, lease.holder, 1, ids)
        assert store.count_tasks("copy") == {"done": 5}
        assert store.chunks_done(run_id) == {1: {"written": 5}}
        assert store.live_leases("copy#") == []  # the chunk's lease is given back
    finally:
        store.release_lease(lease)
        store.close()


@pytest.mark.postgres
def test_a_worker_follows_its_project_file_and_keeps_the_last_good_one(
    tmp_path: Path, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A job takes the project as its file says now (the dashboard saved a fix); a file that
    does not load leaves the last good project in use, with one warning."""
    url = postgres.new_database()
    path = engine_project(tmp_path, url, flows={"a": {"from": "in.jsonl", "to": "out.jsonl"}})
    store = Store(url)
    state = WorkerState(load_project(path), store)
    app = procrastinate.App(connector=InMemoryConnector())
    try:
        engine_project(tmp_path, url, flows={"b": {"from": "in.jsonl", "to": "out.jsonl"}})
        assert list(state.runner(app).project.flows) == ["b"]
        path.write_text(path.read_text() + "flows: [not, a, mapping\n")
        assert list(state.runner(app).project.flows) == ["b"]
        assert "changed but does not load; jobs keep the last good one" in caplog.text
    finally:
        store.close()
