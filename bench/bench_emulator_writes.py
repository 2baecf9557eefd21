"""Emulator writes benchmark: the emulator's CPU per record upserted by the Publisher.

Run: .venv/bin/python -m bench.bench_emulator_writes [--items N] [--rounds N]
The emulator runs as its own process (no latency, limits raised); the Publisher upserts N new
items (lookups by number, then `$batch` POSTs of 100) and then the same N items changed
(lookups, then `$batch` PATCHes with If-Match). The emulator process's CPU time (psutil) is
divided by N. The yardstick, measured in the same run against the same process: the CPU per row
of reading those items back in pages of 1,000 (plain GETs), so the ratio "write / read row"
compares machines and loads. Issue 16's workers benchmark found ~1.5 ms of emulator CPU a
record. With --profile-seconds S the emulator is sampled by py-spy (if installed) during the
first upsert and the top functions are printed.
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil

from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.publisher import Outcome, Publisher
from bcbridge.testing import bc_token, start_emulator

RAISED = {"rate_limit": "1000000/300", "max_concurrent": 64, "max_queue": 1000}


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def records(prefix: str, count: int, bump: float = 0.0) -> list[dict[str, Any]]:
    return [
        {
            "number": f"{prefix}{i:06d}",
            "displayName": f"Bench item {i}",
            "unitPrice": float(i % 97) + bump,
        }
        for i in range(count)
    ]


async def upsert(settings: ClientSettings, rows: list[dict[str, Any]]) -> None:
    async with BusinessCentralClient(settings) as bc:
        publisher = Publisher(bc, "items", "upsert", key_field="number")
        done = [r async for r in publisher.publish(rows)]
    failed = [r for r in done if r.outcome is Outcome.FAILED]
    assert not failed, failed[:3]
    assert len(done) == len(rows)


def read_rows(info: Any, prefix: str) -> int:
    """Read the benchmark's items back in pages of 1,000 (the yardstick); the rows read."""
    token = bc_token(info)["access_token"]
    client = httpx.Client(
        verify=ssl.create_default_context(cafile=info.ca_bundle),
        headers={"Authorization": f"Bearer {token}", "Prefer": "odata.maxpagesize=1000"},
        timeout=120,
    )
    url: str | None = f"{info.api_root}/companies({info.company_id()})/items"
    params: dict[str, str] | None = {"$filter": f"startswith(number,'{prefix}')"}
    rows = 0
    with client:
        while url:
            body = client.get(url, params=params).json()
            rows += len(body["value"])
            url, params = body.get("@odata.nextLink"), None
    return rows


def measured(pid: int, work: Any, *args: Any) -> tuple[float, Any]:
    """The emulator's CPU seconds while `work(*args)` ran, and what it returned."""
    before = cpu_seconds(pid)
    result = work(*args)
    return cpu_seconds(pid) - before, result


def profiled(pid: int, seconds: float, folder: Path) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("py-spy not found: no profile")
        return None
    out = folder / "profile.txt"
    options = ["--duration", str(int(seconds)), "--format", "raw", "--output", str(out)]
    sampling = ["--nonblocking", "--function", "--rate", "400"]
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), *options, *sampling],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def print_profile(path: Path, top: int = 25) -> None:
    """Self and inclusive samples per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    print(f"profile: {total} samples; top by own samples")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {count / total:6.1%}  {frame}")
    print("top by inclusive samples (bcbridge frames)")
    ours = {k: v for k, v in inclusive.items() if "bcbridge" in k}
    for frame, count in sorted(ours.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {count / total:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=2, help="best of N (each new items)")
    parser.add_argument("--profile-seconds", type=float, default=0)
    args = parser.parse_args()
    best: dict[str, float] = {}
    with start_emulator(**RAISED) as emulator, tempfile.TemporaryDirectory() as tmp:
        info, pid = emulator.info, emulator.process.pid
        settings = ClientSettings.from_env({**info.env(), "BC_COMPANY": info.company_id()})
        for round_number in range(args.rounds):
            prefix = f"EW{round_number}"
            spy = None
            if round_number == 0 and args.profile_seconds:
                spy = profiled(pid, args.profile_seconds, Path(tmp))
                time.sleep(1)
            created, _ = measured(pid, anyio.run, upsert, settings, records(prefix, args.items))
            if spy is not None:
                spy.wait()
                print_profile(Path(tmp) / "profile.txt")
            changed = records(prefix, args.items, bump=1.0)
            updated, _ = measured(pid, anyio.run, upsert, settings, changed)
            read, rows = measured(pid, read_rows, info, prefix)
            assert rows == args.items, rows
            figures = {
                "new": created / args.items,
                "changed": updated / args.items,
                "read": read / rows,
            }
            print(
                f"round {round_number + 1}: emulator CPU per record: new {figures['new'] * 1e3:.3f}"
                f" ms, changed {figures['changed'] * 1e3:.3f} ms;"
                f" per row read {figures['read'] * 1e3:.4f} ms",
                flush=True,
            )
            for what, value in figures.items():
                best[what] = min(best.get(what, value), value)
    print(f"{args.items} items upserted by the Publisher ($batch of 100), best of {args.rounds}")
    for what in ("new", "changed"):
        print(
            f"emulator CPU per {what} record: {best[what] * 1e3:.3f} ms"
            f" ({best[what] / best['read']:.0f}x a row read in pages of 1,000)"
        )
    print(f"emulator CPU per row read: {best['read'] * 1e3:.4f} ms (yardstick)")


if __name__ == "__main__":
    main()
