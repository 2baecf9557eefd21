"""One run per flow at a time: `bcbridge run` of a flow that another process is running exits 4
naming the holder (or waits with --wait), a killed holder's flow is taken over, different flows
run side by side. And a run that fails before it starts is a one-line error, not a traceback."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
import yaml

from bcbridge.flowconfig import load_project
from bcbridge.flows import FlowRunner
from bcbridge.store import Store, leases, runs, sqlite_path
from bcbridge.testing import RunningEmulator, start_emulator
from tests.flows.conftest import BC, CRONUS, FABRIKAM, cli, start_run, store_of

pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`

FLOW = "copy_sales_orders"
ORDERS = 80


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    """Slow enough (latency) that a second process starts while the first still runs."""
    with start_emulator(latency_ms=30, scale=f"salesOrders={ORDERS}") as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_data(emulator: RunningEmulator) -> None:
    emulator.reset()


@pytest.fixture
def examples(examples: Path) -> Path:
    """The examples, their order copy in chunks of 20: a run is seen under way, then ends."""
    data = yaml.safe_load(examples.read_text())
    data["flows"][FLOW]["chunk_size"] = 20
    examples.write_text(yaml.safe_dump(data, sort_keys=False))
    return examples


def wait_until_running(project: Path, process: subprocess.Popen[str], flow: str = FLOW) -> None:
    """Until the run is recorded and has delivered something (so it is well under way)."""
    store = store_of(project)
    try:
        deadline = time.monotonic() + 60
        while not (
            store.runs(flow, limit=1)
            and store.runs(flow, limit=1)[0]["status"] == "running"
            and store.count_tasks(flow).get("done", 0) > 0
        ):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        store.close()


@contextmanager
def paused(process: subprocess.Popen[str], project: Path) -> Iterator[None]:
    """SIGSTOP the run for the length of the block: it keeps its lease (the TTL is far away),
    so the overlap with a second process does not depend on how fast this machine is.

    It is stopped only at a moment it holds no write lock on the SQLite store: frozen inside a
    transaction, it would keep every other process out of the store (as any process frozen in a
    transaction does to SQLite), which is not what these tests are about."""
    database = sqlite_path(load_project(project).store)
    assert database is not None
    deadline = time.monotonic() + 30
    while True:
        process.send_signal(signal.SIGSTOP)
        if _store_is_free(database):
            break
        process.send_signal(signal.SIGCONT)
        assert time.monotonic() < deadline, "the run never let go of the store"
        time.sleep(0.01)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def _store_is_free(database: Path) -> bool:
    connection = sqlite3.connect(database, timeout=0.2)
    try:
        connection.execute("BEGIN IMMEDIATE")  # fails while another process holds a write lock
        connection.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


def first_line_with(process: subprocess.Popen[str], text: str, within: float = 60) -> str:
    """Read the process's stderr until a line holds `text` (while it runs); that line."""
    assert process.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    stderr = process.stderr

    def pump() -> None:
        for line in stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + within
    while (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))) and text not in line:
        pass
    return line


def copies_in_fabrikam(bc: BC) -> Counter[str]:
    orders = bc.all(FABRIKAM, "salesOrders")
    return Counter(
        str(o["externalDocumentNumber"])
        for o in orders
        if str(o.get("externalDocumentNumber")).startswith("CRONUS-")
    )


def assert_each_order_copied_once(bc: BC) -> None:
    copies = copies_in_fabrikam(bc)
    assert len(copies) == len(bc.all(CRONUS, "salesOrders"))
    assert set(copies.values()) == {1}, [number for number, n in copies.items() if n > 1]


def test_a_second_run_of_a_running_flow_exits_4_naming_the_holder(
    examples: Path, bc_env: dict[str, str], bc: BC
) -> None:
    first = start_run(bc_env, examples, FLOW)
    wait_until_running(examples, first)
    with paused(first, examples):
        second = cli(bc_env, "run", FLOW, "--config", str(examples))
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert second.returncode == 4, second.stderr
    assert "Traceback" not in second.stderr
    (line,) = [line for line in second.stderr.splitlines() if "already running" in line]
    assert f"flow '{FLOW}' is already running: held by pid {first.pid} on " in line
    assert "since" in line and "--wait" in line
    assert_each_order_copied_once(bc)


def test_with_wait_the_second_run_follows_the_first(
    examples: Path, bc_env: dict[str, str], bc: BC
) -> None:
    first = start_run(bc_env, examples, FLOW)
    wait_until_running(examples, first)
    with paused(first, examples):
        second = start_run(bc_env, examples, FLOW, "--wait", "--wait-timeout", "120")
        said = first_line_with(second, "waiting for the run held by pid")
        assert f"{FLOW}: waiting for the run held by pid {first.pid} on " in said
        assert second.poll() is None
    _, first_err = first.communicate(timeout=120)
    _, second_err = second.communicate(timeout=120)
    assert (first.returncode, second.returncode) == (0, 0), first_err + second_err
    store = store_of(examples)
    later, earlier = store.runs(FLOW, limit=2)
    store.close()
    assert earlier["status"] == later["status"] == "ok"
    assert later["started_at"] >= earlier["ended_at"]  # one after the other, never together
    assert later["counts"].get("read", 0) == 0  # the first saved the cursor past every order
    assert_each_order_copied_once(bc)


def test_wait_gives_up_after_its_timeout(examples: Path, bc_env: dict[str, str]) -> None:
    store = store_of(examples)
    store.acquire_lease(FLOW)  # held by this test process, alive
    started = time.monotonic()
    waited = cli(bc_env, "run", FLOW, "--wait", "--wait-timeout", "1", "--config", str(examples))
    store.close()
    assert waited.returncode == 4, waited.stderr
    assert f"held by pid {os.getpid()}" in waited.stderr
    assert time.monotonic() - started >= 1


def test_a_killed_run_is_taken_over_by_the_next(
    examples: Path, bc_env: dict[str, str], bc: BC
) -> None:
    killed = start_run(bc_env, examples, FLOW)
    wait_until_running(examples, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    store = store_of(examples)
    lease = store.lease(FLOW)
    assert lease is not None and lease.pid == killed.pid  # left behind, not released
    assert lease.expires_at > datetime.now(UTC)
    # its process is gone and was on this machine: no need to wait out the TTL
    again = cli(bc_env, "run", FLOW, "--config", str(examples))
    assert again.returncode == 0, again.stderr
    assert [run["status"] for run in store.runs(FLOW)] == ["ok", "crashed"]
    assert store.lease(FLOW) is None  # released at the end
    store.close()
    assert_each_order_copied_once(bc)


def test_a_lease_from_another_machine_is_taken_over_once_expired(
    examples: Path, bc_env: dict[str, str], bc: BC
) -> None:
    """A holder elsewhere cannot be asked whether it lives: its heartbeat must be TTL old."""
    store = store_of(examples)
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(
            leases.insert().values(
                flow=FLOW,
                holder="elsewhere:4242:0123456789ab:cafe",
                host="elsewhere",
                pid=4242,
                acquired_at=now - timedelta(minutes=5),
                heartbeat_at=now,
                expires_at=now + timedelta(minutes=1),  # long enough for a slow machine
            )
        )
        stale_key = conn.execute(
            runs.insert().values(flow=FLOW, started_at=now, status="running", counts="{}")
        ).inserted_primary_key
        assert stale_key is not None
        stale_run = stale_key[0]
    busy = cli(bc_env, "run", FLOW, "--config", str(examples))
    assert busy.returncode == 4 and "held by pid 4242 on elsewhere since" in busy.stderr
    assert store.runs(FLOW)[0]["status"] == "running"  # a live run is never marked crashed
    last_beat = datetime.now(UTC)  # its last heartbeat, on a 3 s TTL: then it goes silent
    with store.engine.begin() as conn:
        conn.execute(
            leases.update()
            .where(leases.c.flow == FLOW)
            .values(heartbeat_at=last_beat, expires_at=last_beat + timedelta(seconds=3))
        )
    waited = cli(bc_env, "run", FLOW, "--wait", "--config", str(examples))
    assert waited.returncode == 0, waited.stderr
    assert datetime.now(UTC) >= last_beat + timedelta(seconds=3)
    statuses = {run["id"]: run["status"] for run in store.runs(FLOW)}
    assert statuses[stale_run] == "crashed" and max(statuses.items())[1] == "ok"
    store.close()
    assert_each_order_copied_once(bc)


def test_two_different_flows_run_side_by_side(
    examples: Path, bc_env: dict[str, str], bc: BC
) -> None:
    orders = start_run(bc_env, examples, FLOW)
    wait_until_running(examples, orders)
    with paused(orders, examples):  # holds its flow's lease all along
        items = cli(bc_env, "run", "items_from_csv", "--config", str(examples))
    _, orders_err = orders.communicate(timeout=120)
    assert (orders.returncode, items.returncode) == (0, 0), orders_err + items.stderr
    store = store_of(examples)
    assert store.runs(FLOW, limit=1)[0]["status"] == "ok"
    assert store.runs("items_from_csv", limit=1)[0]["status"] == "ok"
    store.close()
    assert_each_order_copied_once(bc)


def test_tasks_retry_takes_the_flows_lease(examples: Path, bc_env: dict[str, str]) -> None:
    store = store_of(examples)
    run = store.start_run("items_from_csv")
    (task,) = store.register("items_from_csv", run, [("I1", {"number": "I1"})])
    store.end_run(run, "failed", {})
    store.acquire_lease("items_from_csv")
    retried = cli(bc_env, "tasks", "retry", str(task.id), "--config", str(examples))
    store.close()
    assert retried.returncode == 4, retried.stderr + retried.stdout
    assert "'items_from_csv' is already running" in retried.stderr


# --- a run that fails before its first chunk ---------------------------------------------------


def break_the_transformers(project: Path) -> None:
    data = yaml.safe_load(project.read_text())
    data["flows"]["items_from_csv"]["transform"].append({"convert": {"unitPrice": "money"}})
    project.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_run_failing_before_it_starts_on_a_fresh_store_is_one_line(
    examples: Path, bc_env: dict[str, str]
) -> None:
    break_the_transformers(examples)
    done = cli(bc_env, "run", "items_from_csv", "--config", str(examples))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "IndexError" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "unknown type 'money'" in line]
    # refused when the project is loaded, before any run: file:line and the step's path
    assert line.startswith(f"error: {examples}:") and "flows.items_from_csv.transform[" in line


def test_a_run_failing_before_it_starts_is_not_reported_as_the_previous_run(
    examples: Path, bc_env: dict[str, str]
) -> None:
    project = load_project(examples)
    store = Store(project.store)
    previous = anyio.run(FlowRunner(project, store).run, "items_from_csv")
    assert previous.status == "ok" and previous.run_id is not None
    # a project built in code skips the load-time checks: the runner must fail it by itself
    project.flows["items_from_csv"].transform.append({"convert": {"unitPrice": "money"}})
    result = anyio.run(FlowRunner(project, store).run, "items_from_csv")
    assert (result.status, result.run_id) == ("error", None)
    assert result.error is not None and "unknown type 'money'" in result.error
    assert [run["status"] for run in store.runs("items_from_csv")] == ["ok"]  # untouched
    store.close()


def test_ctrl_c_releases_the_lease(examples: Path, bc_env: dict[str, str]) -> None:
    process = start_run(bc_env, examples, FLOW)
    wait_until_running(examples, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    store = store_of(examples)
    assert store.lease(FLOW) is None
    assert store.runs(FLOW, limit=1)[0]["status"] == "interrupted"
    store.close()
