"""A store that never crashes or half-commits: flow leases (one runner per flow, on SQLite and
PostgreSQL), a new store opened by many processes at once, and a store that is read-only, full
or deleted under a run: a one-line error naming the store, never a traceback."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import sqlalchemy as sa

from bcbridge.errors import ConfigError
from bcbridge.flowconfig import load_project
from bcbridge.flows import FlowRunner
from bcbridge.store import (
    FlowBusy,
    LeaseKeeper,
    LeaseLost,
    RunStatus,
    Store,
    StoreError,
    TaskStatus,
    sqlite_path,
)
from tests.flows.conftest import BCBRIDGE, write_project

pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`

# --- leases ---------------------------------------------------------------------------------


@pytest.fixture
def stores(store_url: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database, as two processes would have; a short lease TTL."""
    first, second = Store(store_url, lease_ttl=0.6), Store(store_url, lease_ttl=0.6)
    yield first, second
    first.close()
    second.close()


def test_a_lease_is_exclusive_until_released(stores: tuple[Store, Store]) -> None:
    first, second = stores
    held = first.acquire_lease("orders")
    with pytest.raises(FlowBusy) as busy:
        second.acquire_lease("orders")
    message = str(busy.value)
    assert "'orders' is already running" in message and f"pid {os.getpid()}" in message
    assert "since" in message and "--wait" in message and "\n" not in message
    assert second.acquire_lease("customers").flow == "customers"  # other flows are free
    assert first.acquire_lease("orders", held.holder).holder == held.holder  # ours again: fine
    first.release_lease(held)
    assert second.lease("orders") is None
    assert second.acquire_lease("orders").holder != held.holder


def test_an_expired_lease_is_taken_over_and_its_old_holder_knows(
    stores: tuple[Store, Store],
) -> None:
    first, second = stores
    dead = first.acquire_lease("orders")
    assert first.renew_lease(dead)  # a live holder's heartbeat
    with pytest.raises(FlowBusy):
        second.acquire_lease("orders")
    time.sleep(0.7)  # no heartbeat for longer than the TTL: the holder is taken for dead
    taken = second.acquire_lease("orders")
    assert taken.holder != dead.holder
    assert not first.renew_lease(dead)  # the old holder learns it lost the flow
    first.release_lease(dead)  # and cannot free what is no longer its own
    lease = second.lease("orders")
    assert lease is not None and lease.holder == taken.holder


def test_only_one_of_many_at_once_gets_the_lease(store_url: str) -> None:
    contenders = [Store(store_url, lease_ttl=30) for _ in range(6)]
    start = threading.Barrier(len(contenders))
    winners: list[str] = []
    busy: list[str] = []

    def contend(store: Store) -> None:
        start.wait()
        try:
            winners.append(store.acquire_lease("orders").holder)
        except FlowBusy as exc:
            busy.append(exc.lease.holder)

    threads = [threading.Thread(target=contend, args=(store,)) for store in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in contenders:
        store.close()
    assert len(winners) == 1 and len(busy) == len(contenders) - 1
    assert set(busy) == set(winners)  # every loser was told who won


def test_a_keeper_holds_the_lease_past_its_ttl_and_releases_it(
    stores: tuple[Store, Store],
) -> None:
    first, second = stores
    with LeaseKeeper(first, first.acquire_lease("orders")) as keeper:
        time.sleep(1.5)  # more than twice the TTL: only the heartbeat keeps it
        with pytest.raises(FlowBusy):
            second.acquire_lease("orders")
        keeper.check()
    assert second.lease("orders") is None  # released at the end


def test_a_keeper_whose_lease_was_taken_over_says_so(stores: tuple[Store, Store]) -> None:
    first, second = stores
    lease = first.acquire_lease("orders")
    first.release_lease(lease)  # as if it had expired and been taken over
    second.acquire_lease("orders")
    with LeaseKeeper(first, lease) as keeper:
        time.sleep(0.5)  # a heartbeat or two
        with pytest.raises(LeaseLost, match="taken over"):
            keeper.check()


def test_a_keeper_not_renewed_for_a_ttl_stops_at_once_and_recovers(
    stores: tuple[Store, Store], store_url: str
) -> None:
    """A heartbeat held up past the TTL (here by a lock on the leases table; in life a frozen
    process, a paused VM) makes `check()` refuse at once, before any renewal says whether the
    flow was taken: the caller must not write. Renewed again, the lease is usable."""
    first, _ = stores
    with LeaseKeeper(first, first.acquire_lease("orders")) as keeper:
        with _leases_locked(store_url):
            time.sleep(1.0)  # the heartbeat waits on the lock for longer than the 0.6 s TTL
            with pytest.raises(LeaseLost, match=r"not renewed for longer than its 0\.6 s TTL"):
                keeper.check()
        time.sleep(0.5)  # nobody took the flow meanwhile: the next heartbeat renews it
        keeper.check()


@contextmanager
def _leases_locked(store_url: str) -> Iterator[None]:
    """Another connection holds the leases table locked (SQLite: the whole database)."""
    path = sqlite_path(store_url)
    if path is not None:
        with closing(sqlite3.connect(path, isolation_level=None)) as lite:
            lite.execute("BEGIN EXCLUSIVE")
            yield
            lite.rollback()
        return
    url = sa.engine.make_url(store_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as pg:
        pg.execute("LOCK TABLE leases IN ACCESS EXCLUSIVE MODE")
        yield
        pg.rollback()


def test_only_the_lease_holder_recovers_the_flows_runs(stores: tuple[Store, Store]) -> None:
    first, second = stores
    live = first.acquire_lease("orders")
    running = first.start_run("orders", holder=live.holder)
    with pytest.raises(LeaseLost):  # not its lease: it must not mark the live run crashed
        second.start_run("orders", holder="somewhere:1:cafe")
    assert first.runs("orders")[0]["status"] == RunStatus.RUNNING
    first.release_lease(live)  # the holder died; its lease is free (or expired)
    mine = second.acquire_lease("orders")
    second.start_run("orders", holder=mine.holder)
    by_id = {run["id"]: run["status"] for run in second.runs("orders")}
    assert by_id[running] == RunStatus.CRASHED
    assert RunStatus.CRASHED.value == "crashed"  # stored as its plain value


def test_statuses_are_stored_as_their_plain_words(store_url: str) -> None:
    store = Store(store_url)
    run = store.start_run("orders")
    (task,) = store.register("orders", run, [("N1", {"number": "N1"})])
    store.mark([task.id], TaskStatus.UNKNOWN)
    store.end_run(run, RunStatus.FAILED, {})
    store.close()
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM tasks")).scalar() == "unknown"
        assert conn.execute(sa.text("SELECT status FROM runs")).scalar() == "failed"
    engine.dispose()


# --- a new store opened by many processes at once ---------------------------------------------


def _open_store(url: str, start: Any, done: Any) -> None:
    start.wait()
    try:
        Store(url).close()
        done.put("ok")
    except BaseException as exc:  # reported to the test, whatever it is
        done.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_store_at_once_all_succeed(
    store_url: str, request: pytest.FixtureRequest
) -> None:
    """Forked processes (fast to start) released by one barrier, 8 at a time, 5 times."""
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        url = store_url
        if attempt and url.startswith("sqlite"):
            url = store_url.replace("state.db", f"state{attempt}.db")
        elif attempt:
            url = request.getfixturevalue("postgres").new_database()
        start, done = context.Barrier(8), context.Queue()
        workers = [context.Process(target=_open_store, args=(url, start, done)) for _ in range(8)]
        for worker in workers:
            worker.start()
        outcomes = [done.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(30)
        assert outcomes == ["ok"] * 8, outcomes


# --- read-only, full, deleted ------------------------------------------------------------------


def test_a_read_only_store_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(f"sqlite:///{path}").close()
    # SQLite's read-only mode: root ignores file permissions, this refuses writes for anyone
    store = Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    assert store.runs() == []  # reading is fine
    with pytest.raises(StoreError) as error:
        store.start_run("orders")
    message = str(error.value)
    assert str(path) in message and "read-only" in message and "writable" in message
    assert "\n" not in message
    store.close()


def test_a_new_store_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open the store") as error:
        Store(f"sqlite:///file:{tmp_path / 'missing.db'}?mode=ro&uri=true")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "file:").exists()  # no stray folder named after the URI


def csv_to_file_project(folder: Path, count: int, store: str) -> Path:
    lines = ["number,displayName", *(f"N{n:05d},{'Record ' * 30}{n}" for n in range(count))]
    (folder / "records.csv").write_text("\n".join(lines) + "\n")
    return write_project(
        folder / "bcbridge.yaml",
        {
            "store": store,
            "flows": {
                "copy": {
                    "from": "records.csv",
                    "to": {"writer": "out.jsonl", "key": "number"},
                    "chunk_size": 50,
                }
            },
        },
    )


def test_a_full_store_ends_the_run_with_an_error_and_keeps_whole_chunks(tmp_path: Path) -> None:
    project = load_project(csv_to_file_project(tmp_path, 600, "sqlite:///state.db"))
    store = Store(project.store)
    with store.engine.connect() as conn:
        pages = int(conn.execute(sa.text("PRAGMA page_count")).scalar_one())

    @sa.event.listens_for(store.engine, "connect")
    def size_limit(connection: Any, record: Any) -> None:  # a disk with little room left
        connection.execute(f"PRAGMA max_page_count = {pages + 40}")

    store.engine.dispose()  # connections from now on have the limit
    result = anyio.run(FlowRunner(project, store).run, "copy")
    assert result.status == RunStatus.ERROR and result.run_id is not None
    assert result.error is not None and "\n" not in result.error
    assert "full" in result.error and "free some space" in result.error
    assert "state.db" in result.error
    assert 0 < result.counts["written"] < 600
    registered = sum(store.count_tasks("copy").values())
    assert registered % 50 == 0 and registered < 600  # a chunk's tasks are all there or none
    store.close()


def test_a_store_deleted_under_a_run_ends_it_with_an_error(tmp_path: Path) -> None:
    project = load_project(csv_to_file_project(tmp_path, 200, "sqlite:///state.db"))
    store = Store(project.store)
    database = tmp_path / "state.db"

    def delete_after_first_chunk(flow: str, counts: Any) -> None:
        database.unlink(missing_ok=True)

    runner = FlowRunner(project, store, progress=delete_after_first_chunk)
    result = anyio.run(runner.run, "copy")
    assert result.status == RunStatus.ERROR and result.counts["written"] == 50
    assert result.error is not None and "\n" not in result.error
    assert f"{database} is gone" in result.error and "run again" in result.error
    store.close()


def test_the_cli_reports_a_read_only_store_in_one_line_with_exit_2(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "state.db"
    Store(f"sqlite:///{path}").close()
    project = csv_to_file_project(tmp_path, 10, f"sqlite:///file:{path}?mode=ro&uri=true")
    done = subprocess.run(
        [*BCBRIDGE, "run", "copy", "--config", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "read-only" in line]
    assert line.startswith("copy: store sqlite:///file:") and "writable" in line


def _take_and_die(url: str) -> None:
    Store(url, lease_ttl=30).acquire_lease("orders")
    os._exit(0)  # no release, as if killed


def test_a_lease_whose_process_is_gone_is_taken_over_at_once(store_url: str) -> None:
    """A holder on this machine whose pid is gone need not be waited out for the TTL."""
    child = multiprocessing.get_context("fork").Process(target=_take_and_die, args=(store_url,))
    child.start()
    child.join(30)
    store = Store(store_url, lease_ttl=30)
    dead = store.lease("orders")
    assert dead is not None and dead.pid == child.pid and dead.expires_at > datetime.now(UTC)
    taken = store.acquire_lease("orders")
    assert taken.pid == os.getpid() and taken.holder != dead.holder
    store.close()


def test_the_lease_ttl_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BCBRIDGE_LEASE_TTL", "2.5")
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    assert store.lease_ttl == 2.5
    lease = store.acquire_lease("orders")
    assert (lease.expires_at - lease.heartbeat_at).total_seconds() == 2.5
    store.close()
    monkeypatch.setenv("BCBRIDGE_LEASE_TTL", "soon")
    with pytest.raises(ConfigError, match="BCBRIDGE_LEASE_TTL: 'soon' is not a lease TTL"):
        Store(f"sqlite:///{tmp_path / 'state.db'}")
