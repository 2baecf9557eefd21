"""Workers benchmark: 3 `bcbridge worker` processes against 1 on one big upsert flow.

Run: .venv/bin/python -m bench.bench_workers [--items 60000] [--latency-ms 50] [--store URL]
A CSV file of new items is upserted into BC by a flow with `engine: procrastinate`, once with
1 worker and once with 3 (each round with its own item numbers and its own database), with the
emulator's limits and the client's limits raised (so that BC's per-app ceiling is not what
is measured: that is the shared budget's benchmark): the workers share a budget of 5 requests in
flight per worker of the larger round (15), where BC's 5 would be shared by all three.
Time: from the run's job deferred to its run ended `ok`. Without --store, a temporary
PostgreSQL server is started from the machine's binaries (as the tests do).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import sqlalchemy as sa
import yaml

from bcbridge.config import ENV_FIELDS
from bcbridge.engine import EngineClient
from bcbridge.store import Store
from bcbridge.testing import start_emulator

COMPANY = "CRONUS USA, Inc."
RAISED: dict[str, Any] = {"rate_limit": "1000000/300", "max_concurrent": 64, "max_queue": 1000}
ROUNDS = (1, 3)  # workers
IN_FLIGHT_PER_WORKER = 5  # BC's in-flight limit, given to each worker with the limits raised
BC_IN_FLIGHT, BC_RATE = 5, 6000 / 300  # BC's limits per app: in flight, requests a second


@contextmanager
def temporary_postgres() -> Iterator[str]:
    """A PostgreSQL server in a temporary folder; the URL of its `postgres` database."""
    from tests.pg_server import as_server_user, free_port, postgres_bin

    binaries, folder = postgres_bin(), Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data)]
    log = str(folder / "log")
    subprocess.run(
        as_server_user([*pg_ctl, "-o", options, "-l", log, "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_server_user([*pg_ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def new_database(server: str, name: str) -> str:
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server.rsplit("/", 1)[0] + f"/{name}"


def emulator_client(env: dict[str, str], raised: bool) -> dict[str, Any]:
    """The emulator's client (its BC_* variables); `raised`: with the client-side limits raised
    too, else BC's (6,000 requests per 5 minutes, 5 in flight), shared by the workers."""
    client: dict[str, Any] = {
        field: env[name] for name, field in ENV_FIELDS.items() if env.get(name)
    }
    if raised:
        client["rate_limit"] = {"requests": 1_000_000, "per_seconds": 300}
        client["max_concurrency"] = IN_FLIGHT_PER_WORKER * max(ROUNDS)
    return client


def project(folder: Path, store: str, prefix: str, items: int, client: dict[str, Any]) -> Path:
    source = folder / f"{prefix}.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "displayName"])
        writer.writerows([f"{prefix}{n:06d}", f"Bench item {n}"] for n in range(items))
    data = {
        "store": store,
        "engine": "procrastinate",
        "clients": {"bc": client},
        "outgoing": {
            "items": {
                "client": "bc",
                "entity": "items",
                "company": COMPANY,
                "action": "upsert",
                "key_field": "number",
                "batch_size": 100,
            }
        },
        "flows": {"load": {"from": str(source), "to": "items", "chunk_size": 500}},
    }
    path = folder / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def one_round(
    folder: Path,
    store_url: str,
    env: dict[str, str],
    workers: int,
    items: int,
    emulator_pid: int,
    client: dict[str, Any],
) -> tuple[float, float, float]:
    """Seconds from deferred to ok; the CPU seconds of the emulator and of the workers then."""
    path = project(folder, store_url, f"B{workers}", items, client)
    command = [sys.executable, "-m", "bcbridge", "worker", "--config", str(path)]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    store = Store(store_url)
    engine = EngineClient(store)
    try:
        time.sleep(3)  # the workers are up (imports, schema, registered)
        started = time.perf_counter()
        emulator_cpu = cpu_seconds(emulator_pid)
        workers_cpu = sum(cpu_seconds(process.pid) for process in processes)
        assert engine.defer_run("load")
        while True:
            runs = store.runs("load", limit=1)
            if runs and runs[0]["status"] not in ("running", "crashed", "interrupted"):
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        emulator_cpu = cpu_seconds(emulator_pid) - emulator_cpu
        workers_cpu = sum(cpu_seconds(process.pid) for process in processes) - workers_cpu
        assert runs[0]["status"] == "ok", runs[0]
        assert store.count_tasks("load") == {"done": items}, store.count_tasks("load")
        return elapsed, emulator_cpu, workers_cpu
    finally:
        engine.close()
        store.close()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=60_000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--store", help="a PostgreSQL server URL (default: a temporary one)")
    parser.add_argument(
        "--limits",
        choices=["raised", "bc"],
        default="raised",
        help="raised (default): 1 worker against 3; bc: BC's own limits at the emulator and "
        "the client (6,000 per 5 min, 5 in flight, shared by the workers), 3 workers",
    )
    args = parser.parse_args()
    raised = args.limits == "raised"
    with (
        start_emulator(latency_ms=args.latency_ms, **(RAISED if raised else {})) as emulator,
        tempfile.TemporaryDirectory() as tmp,
        nullcontext(args.store) if args.store else temporary_postgres() as server,
    ):
        env = {**os.environ, **emulator.info.env()}
        client = emulator_client(env, raised=raised)
        times = {}
        for workers in ROUNDS if raised else (3,):
            store_url = new_database(server, f"bench_workers_{workers}")
            before = emulator.stats()
            times[workers], emulator_cpu, workers_cpu = one_round(
                Path(tmp), store_url, env, workers, args.items, emulator.process.pid, client
            )
            after = emulator.stats()
            print(
                f"{workers} worker(s): {times[workers]:.1f} s; CPU: emulator {emulator_cpu:.0f} s"
                f" ({emulator_cpu / times[workers]:.0%} of one core), workers {workers_cpu:.0f} s;"
                f" machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
                flush=True,
            )
    limits = "raised" if raised else "BC's (6,000 per 5 min, 5 in flight)"
    print(f"{args.items} items, upsert, emulator latency {args.latency_ms} ms, limits {limits}")
    for workers, seconds in times.items():
        print(f"{workers} worker(s): {seconds:.1f} s  ({args.items / seconds:,.0f} records/s)")
    if raised:
        print(f"speed-up: {times[1] / times[3]:.2f}x (target >= 2.5x)")
        return
    requests = after["requests"] - before["requests"]
    throttled = after["throttled"] - before["throttled"]
    ceiling = BC_IN_FLIGHT + BC_RATE * times[3]  # the bucket's start plus its refill
    print(
        f"{requests} requests, {throttled} throttled (target 0), {requests / ceiling:.1%} of "
        f"the per-app ceiling (target >= 90%)"
    )


@contextmanager
def nullcontext(value: str) -> Iterator[str]:
    yield value


if __name__ == "__main__":
    main()
