"""Dashboard benchmark: every page of `bcbridge serve` with 100,000 tasks in the store.

Run: .venv/bin/python -m bench.bench_dashboard [--tasks N] [--runs N]
Seeds a SQLite store (tasks of two flows, a tenth of them failed, and a history of runs),
starts `bcbridge serve --port 0 --json` on it, signs in through its login URL and times each
page over HTTP (median of 7 requests after one warm-up). Target: every page under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from bcbridge.store import Store, runs, tasks

TARGET = 0.200


def seed(folder: Path, count: int, run_count: int) -> None:
    (folder / "in.jsonl").write_text('{"id": "1"}\n')
    (folder / "bcbridge.yaml").write_text(
        "store: sqlite:///state.db\nflows:\n"
        "  copy: {from: in.jsonl, to: out.jsonl, schedule: 1h}\n"
        "  other: {from: in.jsonl, to: other.jsonl}\n"
    )
    store = Store(f"sqlite:///{folder / 'state.db'}")
    start = datetime.now(UTC) - timedelta(days=30)
    with store.engine.begin() as conn:
        conn.execute(
            runs.insert(),
            [
                {
                    "flow": "copy" if n % 2 else "other",
                    "started_at": start + timedelta(minutes=n),
                    "ended_at": start + timedelta(minutes=n, seconds=12),
                    "status": "failed" if n % 10 == 0 else "ok",
                    "counts": orjson.dumps({"read": 100, "done": 90, "failed": 10}).decode(),
                }
                for n in range(run_count)
            ],
        )
        for first in range(0, count, 10_000):
            conn.execute(
                tasks.insert(),
                [
                    {
                        "flow": "copy" if n % 2 else "other",
                        "run_id": n % run_count + 1,
                        "record_key": f"K{n:07}",
                        "hash": f"{n:064x}",
                        "status": "failed" if n % 10 == 0 else "done",
                        "attempts": 1,
                        "last_error": "400 BadRequest_InvalidValue bad value"
                        if n % 10 == 0
                        else None,
                        "payload": orjson.dumps({"number": f"K{n:07}", "name": "x" * 80}).decode(),
                        "stage": "send",
                        "created_at": start + timedelta(seconds=n * 20),
                        "updated_at": start + timedelta(seconds=n * 20),
                    }
                    for n in range(first, min(first + 10_000, count))
                ],
            )
    store.close()


def timed(client: httpx.Client, path: str, rounds: int = 7) -> float:
    assert client.get(path).status_code == 200, path
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - began)
        assert answer.status_code == 200, path
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        began = time.perf_counter()
        seed(folder, args.tasks, args.runs)
        took = time.perf_counter() - began
        print(f"seeded {args.tasks:,} tasks, {args.runs:,} runs in {took:.1f} s")
        middle = datetime.now(UTC) - timedelta(days=15)
        pages = [
            "/flows",
            "/runs",
            "/runs?flow=copy&page=10",
            "/runs/chart.json",
            "/tasks",
            "/tasks?flow=copy&status=failed",
            f"/tasks?page={args.tasks // 50 // 2}",
            "/tasks?key=K0050000",
            f"/tasks?since={middle.date()}&until={middle.date()}",
            f"/tasks/{args.tasks // 2}",
        ]
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bcbridge",
                "serve",
                "--config",
                str(folder / "bcbridge.yaml"),
                "--port",
                "0",
                "--json",
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=folder,
        )
        worst = 0.0
        try:
            assert process.stdout is not None
            announced = json.loads(process.stdout.readline())
            with httpx.Client(base_url=announced["url"]) as client:
                client.get(announced["login_url"])
                print("| page | median of 7 | target |\n|---|---|---|")
                for path in pages:
                    seconds = timed(client, path)
                    worst = max(worst, seconds)
                    print(f"| `{path}` | {seconds * 1000:.0f} ms | < {TARGET * 1000:.0f} ms |")
        finally:
            process.terminate()
            process.wait(30)
    return 0 if worst < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
