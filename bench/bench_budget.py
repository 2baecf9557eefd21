"""Three processes sharing one BC budget through PostgreSQL (issue 16): throttled answers and
the share of BC's ceiling they reach, and what the shared budget costs per request.

Run: .venv/bin/python -m bench.bench_budget [--seconds 60] [--store postgresql+psycopg://...]
Without --store a throw-away PostgreSQL server is started (the tests' way: initdb + pg_ctl).
1. BC's real limits (6,000 requests per 300 s, 5 in flight, 95 queued) on an emulator process;
   3 processes, each with 8 tasks sending GETs as fast as the shared budget lets them, for
   `--seconds`. Target: 0 throttled, >= 90% of the ceiling (20 requests/s, sustained).
2. The same rate over a 30-second window (600/30), where 3 processes each with their own
   in-process limiter must meet 429s: with and without the shared budget, for contrast.
3. The overhead: a slot of the shared budget (acquire + release, 2 round trips to PostgreSQL)
   against the in-process limiter's, with no limit reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio

from bcbridge._limits import Limiter
from bcbridge.budget import SharedBudget, shared_budget
from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.store import migrate
from bcbridge.testing import start_emulator

TASKS_PER_PROCESS = 8


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    from tests.pg_server import as_server_user, free_port, postgres_bin

    binaries, folder = postgres_bin(), Path(tempfile.mkdtemp(prefix="bcbridge-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data)]
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(as_server_user(initdb), check=True, capture_output=True, cwd=folder)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = [*pg_ctl, "-o", options, "-l", str(folder / "log"), "-w", "start"]
    subprocess.run(as_server_user(start), check=True, capture_output=True, cwd=folder)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        stop = [*pg_ctl, "-m", "immediate", "stop"]
        subprocess.run(as_server_user(stop), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def child(store: str | None, rate_limit: str, start_at: float, seconds: float) -> None:
    """One worker process: GETs until the deadline; prints how many were answered."""
    requests, per = rate_limit.split("/")
    limit = {"requests": int(requests), "per_seconds": float(per)}
    settings = ClientSettings.from_env(rate_limit=limit)
    budget = shared_budget(store, settings) if store else None
    done = 0

    async def main() -> None:
        nonlocal done
        async with BusinessCentralClient(settings, budget=budget) as bc:
            await bc.tokens.token()
            await anyio.sleep(max(0.0, start_at - time.time()))
            deadline = start_at + seconds  # the same end for every process

            async def sender() -> None:
                nonlocal done
                while time.time() < deadline:
                    await bc.get_json("companies")
                    done += 1

            async with anyio.create_task_group() as group:
                for _ in range(TASKS_PER_PROCESS):
                    group.start_soon(sender)

    anyio.run(main)
    print(json.dumps({"done": done, "ended": time.time()}))


def run_processes(
    store: str | None, rate_limit: str, seconds: float, processes: int = 3
) -> dict[str, float]:
    requests, per = (float(x) for x in rate_limit.split("/"))
    with start_emulator(rate_limit=rate_limit) as emulator:
        env = {**os.environ, **emulator.info.env()}
        start_at = time.time() + 5  # every process has its token before the clock starts
        command = [sys.executable, "-m", "bench.bench_budget", "--child", "--seconds"]
        command += [str(seconds), "--start-at", str(start_at), "--rate-limit", rate_limit]
        if store:
            command += ["--store", store]
        children = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(processes)
        ]
        answers = [json.loads(p.communicate()[0]) for p in children]
        stats = emulator.stats()
    done = sum(answer["done"] for answer in answers)
    # requests sent before the deadline end after it: the clock stops at the last answer
    elapsed = max(answer["ended"] for answer in answers) - start_at
    ceiling = requests / per * elapsed
    return {
        "done": done,
        "throttled": stats["throttled"],
        "max_in_flight": stats["max_in_flight"],
        "share": done / ceiling,
        "elapsed": elapsed,
    }


def overhead(store: str, rounds: int = 2000) -> tuple[float, float]:
    """Microseconds per slot: shared budget, in-process limiter (no limit reached)."""
    budget = SharedBudget(store, "bench-overhead", 5, 10**9, 300)
    limiter = Limiter(5, 10**9, 300)

    async def per_slot(gate: SharedBudget | Limiter) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            async with gate.slot():
                pass
        return (time.perf_counter() - started) / rounds * 1e6

    try:
        return anyio.run(per_slot, budget), anyio.run(per_slot, limiter)
    finally:
        budget.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--store")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--rate-limit", default="6000/300")
    args = parser.parse_args()
    if args.child:
        child(args.store, args.rate_limit, args.start_at, args.seconds)
        return
    with contextlib.ExitStack() as stack:
        store = args.store or stack.enter_context(throwaway_postgres())
        migrate(store)
        real = run_processes(store, "6000/300", args.seconds)
        print(
            f"BC's limits (6000/300, 5 in flight), 3 processes, shared budget, "
            f"{real['elapsed']:.1f} s: "
            f"{real['done']:.0f} requests, {real['throttled']:.0f} throttled, "
            f"max {real['max_in_flight']:.0f} in flight, {real['share']:.1%} of the ceiling "
            "(target: 0 throttled, >= 90%)"
        )
        short = min(args.seconds, 40.0)
        for label, shared in (("shared budget", store), ("one limiter per process", None)):
            result = run_processes(shared, "600/30", short)
            print(
                f"600/30, 3 processes, {label}, {result['elapsed']:.1f} s: "
                f"{result['done']:.0f} requests, "
                f"{result['throttled']:.0f} throttled, max {result['max_in_flight']:.0f} "
                f"in flight, {result['share']:.1%} of the ceiling"
            )
        shared_us, local_us = overhead(store)
        print(
            f"overhead per request: shared budget {shared_us:.0f} us, "
            f"in-process limiter {local_us:.0f} us"
        )


if __name__ == "__main__":
    main()
