"""`bcbridge push` keeps the promises of a flow: a push that stops (dropped connection, SIGKILL,
Ctrl-C) is resumed by the same command and BC gets each record once; failed records are written
as they fail, with payload and source record, and `--retry-failed FILE` alone replays them."""

from __future__ import annotations

import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bcbridge.cli._common import error_parts
from bcbridge.testing import RunningEmulator
from tests.flows.conftest import BC, BCBRIDGE, CRONUS, cli


@pytest.fixture
def bc(emulator: RunningEmulator) -> Iterator[BC]:
    view = BC(emulator)
    yield view
    view.close()


@pytest.fixture
def env(emulator: RunningEmulator) -> dict[str, str]:
    emulator.clear_faults()
    emulator.configure(latency_ms=0, rate_limit="6000/300")
    return {**os.environ, **emulator.info.env(), "BC_COMPANY": CRONUS}


def items_file(folder: Path, prefix: str, count: int, bad: Callable[[int], bool] = bool) -> Path:
    """`count` items as the input pushes them: No, Name, Price (bad(n): a price BC rejects)."""
    path = folder / f"{prefix}.jsonl"
    with path.open("w") as handle:
        for n in range(count):
            price: Any = "cheap" if bad is not bool and bad(n) else n
            handle.write(
                json.dumps({"ItemNo": f"{prefix}{n:05d}", "Name": f"Item {n}", "Price": price})
            )
            handle.write("\n")
    return path


def transform_file(folder: Path) -> Path:
    """Renames the input's columns; the `set` step fails on a payload (it has no Name), so a
    replay that transformed payloads again would fail."""
    path = folder / "steps.yaml"
    path.write_text(
        "- rename: {ItemNo: number, Price: unitPrice}\n"
        "- set: {displayName: '{record.Name} (imported)'}\n"
        "- drop: [Name]\n"
    )
    return path


def push_args(source: Path, *more: str) -> list[str]:
    """A create of the items in `source`, through the transformers of `transform_file`."""
    steps = transform_file(source.parent)
    args = ["push", "items", "--action", "create", "--key-field", "number"]
    return [*args, "--in", str(source), "--transform", str(steps), *more]


def in_bc(bc: BC, prefix: str) -> Counter[str]:
    return Counter(
        i["number"]
        for i in bc.all(CRONUS, "items", **{"$filter": f"startswith(number,'{prefix}')"})
    )


def assert_each_once(bc: BC, prefix: str, count: int) -> None:
    numbers = in_bc(bc, prefix)
    assert len(numbers) == count and max(numbers.values()) == 1, numbers.most_common(3)


def done_tasks(folder: Path) -> int:
    database = folder / ".bcbridge" / "push.db"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=1) as conn:
            return int(conn.execute("select count(*) from tasks where status='done'").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is being created
        return 0


def start_push(env: dict[str, str], folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*BCBRIDGE, *args],
        env={**env, "COLUMNS": "250"},
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(process: subprocess.Popen[str], ready: Callable[[], bool], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not ready():
        assert process.poll() is None, "the push ended before the point the test waits for"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_push_stopped_by_dropped_batches_reports_and_a_rerun_sends_each_record_once(
    tmp_path: Path, env: dict[str, str], bc: BC, emulator: RunningEmulator
) -> None:
    source = items_file(tmp_path, "PJD", 300)
    # the first chunk lands but its answer is lost (delivered again: matched, unchanged); the
    # second chunk's $batch is dropped on every delivery: those records fail, the run goes on
    emulator.fault(kind="drop", path_contains="$batch", count=1, after=True)
    emulator.fault(kind="drop", path_contains="$batch", count=3)
    args = push_args(source, "--batch-size", "100")
    stopped = cli(env, *args, cwd=tmp_path)
    assert stopped.returncode == 1, stopped.stderr  # records failed
    assert "Outcome" in stopped.stderr, stopped.stderr
    assert "RemoteProtocolError" in stopped.stderr and "--retry-failed" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    kept = [orjson.loads(line) for line in (tmp_path / "failed.jsonl").read_bytes().splitlines()]
    assert len(kept) == 100 and {e["code"] for e in kept} == {"NotDelivered"}

    rerun = cli(env, *args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert_each_once(bc, "PJD", 300)
    assert (tmp_path / ".bcbridge" / "push.db").exists()  # the default store, in the folder
    again = cli(env, *args, cwd=tmp_path)  # a finished push sent again: matched, not created
    assert again.returncode == 0 and "unchanged" in again.stderr
    assert_each_once(bc, "PJD", 300)


def test_a_killed_push_resumes_where_it_stopped(
    tmp_path: Path, env: dict[str, str], bc: BC, emulator: RunningEmulator
) -> None:
    source = items_file(tmp_path, "PJK", 600)
    emulator.configure(latency_ms=15)
    args = push_args(source, "--batch-size", "50")
    process = start_push(env, tmp_path, *args)
    wait_for(process, lambda: done_tasks(tmp_path) >= 100)
    process.kill()
    process.wait()
    landed = len(in_bc(bc, "PJK"))
    assert 100 <= landed < 600
    emulator.configure(latency_ms=0)

    rerun = cli(env, *args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "skipped" in rerun.stderr  # done before the kill: not sent again
    assert_each_once(bc, "PJK", 600)


def test_failed_records_are_written_as_they_fail_and_retry_failed_alone_replays_payloads(
    tmp_path: Path, env: dict[str, str], bc: BC, emulator: RunningEmulator
) -> None:
    source = items_file(tmp_path, "PJF", 400, bad=lambda n: n % 50 == 7)  # 8 bad, 1 per chunk
    args = push_args(source, "--batch-size", "50")
    failed = tmp_path / "failed.jsonl"
    emulator.configure(latency_ms=15)
    process = start_push(env, tmp_path, *args)
    wait_for(process, failed.exists)  # written while the push runs, not at its end
    process.kill()
    process.wait()
    assert len(in_bc(bc, "PJF")) < 392
    emulator.configure(latency_ms=0)

    finished = cli(env, *args, cwd=tmp_path)
    assert finished.returncode == 1
    entries = [json.loads(line) for line in failed.read_text().splitlines()]
    bad = [f"PJF{n:05d}" for n in range(7, 400, 50)]
    assert sorted(e["record"]["ItemNo"] for e in entries) == bad
    entry = entries[0]
    assert {
        k: entry[k] for k in ("entity", "action", "key_field", "company", "status", "code")
    } == {
        "entity": "items",
        "action": "create",
        "key_field": "number",
        "company": CRONUS,
        "status": 400,
        "code": "BadRequest",
    }
    assert "unitPrice" in entry["message"] and entry["record_key"] == entry["record"]["ItemNo"]
    assert entry["payload"] == {
        "number": entry["record"]["ItemNo"],
        "unitPrice": "cheap",
        "displayName": f"{entry['record']['Name']} (imported)",
    }
    assert "8 record(s) not delivered" in finished.stderr and "BadRequest" in finished.stderr
    assert "bcbridge push --retry-failed failed.jsonl" in finished.stderr

    fixed = [{**e, "payload": {**e["payload"], "unitPrice": 1}} for e in entries]
    failed.write_text("".join(json.dumps(e) + "\n" for e in fixed))
    replay = cli(env, "push", "--retry-failed", "failed.jsonl", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert not failed.exists() and not list(tmp_path.glob("failed.replaying*"))
    assert_each_once(bc, "PJF", 400)
    names = {
        i["displayName"] for i in bc.all(CRONUS, "items", **{"$filter": "number eq 'PJF00007'"})
    }
    assert names == {"Item 7 (imported)"}  # the payload as kept, not transformed twice


def test_create_without_key_field_is_refused_unless_duplicates_are_allowed(
    tmp_path: Path, env: dict[str, str], bc: BC
) -> None:
    source = tmp_path / "cats.jsonl"
    source.write_text('{"code": "PJC1", "displayName": "One"}\n')
    args = ["push", "itemCategories", "--action", "create", "--in", str(source)]
    refused = cli(env, *args, cwd=tmp_path)
    assert refused.returncode == 2 and "idempotency" in refused.stderr
    assert "--key-field" in refused.stderr and "--allow-duplicates" in refused.stderr
    assert not bc.all(CRONUS, "itemCategories", **{"$filter": "code eq 'PJC1'"})
    other = {"entity": "items", "action": "upsert", "flow": "push:items:upsert:x.csv"}
    (tmp_path / "failed.jsonl").write_text(json.dumps(other) + "\n")
    kept = cli(env, *args, "--allow-duplicates", cwd=tmp_path)
    assert kept.returncode == 2 and "another push" in kept.stderr  # not replaced: not retried yet
    (tmp_path / "failed.jsonl").unlink()
    allowed = cli(env, *args, "--allow-duplicates", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert len(bc.all(CRONUS, "itemCategories", **{"$filter": "code eq 'PJC1'"})) == 1


def test_push_without_input_on_a_terminal_is_a_usage_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    leader, follower = pty.openpty()
    try:
        waited = subprocess.run(
            [*BCBRIDGE, "push", "items", "--action", "upsert", "--key-field", "number"],
            env=env,
            cwd=tmp_path,
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(leader)
        os.close(follower)
    assert waited.returncode == 2 and "--in FILE" in waited.stderr and "pipe" in waited.stderr


def test_ctrl_c_stops_after_the_chunk_in_flight_with_the_summary_and_exit_130(
    tmp_path: Path, env: dict[str, str], bc: BC, emulator: RunningEmulator
) -> None:
    source = items_file(tmp_path, "PJI", 600)
    emulator.configure(latency_ms=15)
    args = push_args(source, "--batch-size", "50")
    process = start_push(env, tmp_path, *args)
    wait_for(process, lambda: done_tasks(tmp_path) >= 50)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Outcome" in err and "interrupted" in err
    landed = len(in_bc(bc, "PJI"))
    assert landed % 50 == 0 and landed < 600  # whole chunks: the one in flight finished
    emulator.configure(latency_ms=0)
    rerun = cli(env, *args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert_each_once(bc, "PJI", 600)


MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_of_push(env: dict[str, str], folder: Path, count: int) -> int:
    """Peak RSS (KiB) of a push of `count` records of 4 KB each, of which one in twenty passes
    the transform and is upserted; the big field is dropped before sending.
    bench/bench_push_memory.py measures 5,000 against 50,000 records that are all sent."""
    source = folder / f"mem{count}.jsonl"
    padding = "x" * 4000
    with source.open("w") as handle:
        for n in range(count):
            record = {"number": f"PJM{count}-{n:06d}", "send": n % 20 == 0, "notes": padding}
            handle.write(json.dumps(record) + "\n")
    steps = folder / "mem.yaml"
    steps.write_text("- filter: send\n- drop: [notes, send]\n")
    args = [*BCBRIDGE, "push", "items", "--action", "upsert", "--key-field", "number"]
    args += ["--in", str(source), "--transform", str(steps), "--store", f"sqlite:///{folder}/m.db"]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *args], env=env, cwd=folder, capture_output=True, text=True
    )
    code, peak = out.stdout.split()
    assert code == "0", out.stderr
    return int(peak)


def test_memory_stays_flat_as_the_input_grows(tmp_path: Path, env: dict[str, str]) -> None:
    small = peak_rss_of_push(env, tmp_path, 2_000)
    large = peak_rss_of_push(env, tmp_path, 20_000)
    assert large / small < 1.3, (small, large)


@pytest.mark.parametrize(
    ("error", "parts"),
    [
        ("400 BadRequest Invalid unitPrice", (400, "BadRequest", "Invalid unitPrice")),
        (
            "404 Internal_RecordNotFound no items with number = X",
            (404, "Internal_RecordNotFound", "no items with number = X"),
        ),
        ("KeyMissing the record has no id", (None, "KeyMissing", "the record has no id")),
        ("The record was deleted", (None, None, "The record was deleted")),
        ("transform: step 'set': no Name", (None, "TransformError", "step 'set': no Name")),
    ],
)
def test_a_tasks_error_line_is_split_into_status_code_and_message(
    error: str, parts: tuple[int | None, str | None, str | None]
) -> None:
    assert error_parts(error) == parts


pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`
