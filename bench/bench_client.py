"""Client benchmark: pull 100,000 customers with our pager vs a bare httpx + json loop.

Run: .venv/bin/python -m bench.bench_client [--customers N] [--page-size N] [--rounds N]
Both read the same pages from the same emulator in the same run, alternating, best of N rounds.
Wall time and this process's CPU time (the emulator runs in its own process) are compared.
Target (issue #3): our client at most 1.3x the bare loop.
"""

from __future__ import annotations

import argparse
import json
import ssl
import time
from collections.abc import Awaitable, Callable

import anyio
import httpx

from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.testing import EmulatorInfo, bc_token, start_emulator


async def bare_loop(info: EmulatorInfo, token: str, page_size: int) -> int:
    headers = {"Authorization": f"Bearer {token}", "Prefer": f"odata.maxpagesize={page_size}"}
    context = ssl.create_default_context(cafile=info.ca_bundle)
    rows = 0
    async with httpx.AsyncClient(verify=context, timeout=120) as http:
        url: str | None = f"{info.api_root}/companies({info.company_id()})/customers"
        while url:
            body = json.loads((await http.get(url, headers=headers)).content)
            rows += len(body["value"])
            url = body.get("@odata.nextLink")
    return rows


async def our_client(info: EmulatorInfo, page_size: int) -> int:
    settings = ClientSettings.from_env(info.env())
    rows = 0
    async with BusinessCentralClient(settings) as bc:
        path = f"companies({info.company_id()})/customers"
        async for _record in bc.iter_records(path, page_size=page_size):
            rows += 1
    return rows


def measure(run: Callable[[], Awaitable[int]]) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    rows = anyio.run(run)
    return time.perf_counter() - wall, time.process_time() - cpu, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with start_emulator(scale=f"customers={args.customers}") as emulator:
        info = emulator.info
        token = bc_token(info)["access_token"]
        bare: list[tuple[float, float, int]] = []
        ours: list[tuple[float, float, int]] = []
        for _ in range(args.rounds):
            bare.append(measure(lambda: bare_loop(info, token, args.page_size)))
            ours.append(measure(lambda: our_client(info, args.page_size)))
    best_bare = min(bare)
    best_ours = min(ours)
    cpu_bare = min(b[1] for b in bare)
    cpu_ours = min(o[1] for o in ours)
    assert best_bare[2] == best_ours[2] == args.customers, (best_bare, best_ours)
    print(f"{args.customers} customers, pages of {args.page_size}, best of {args.rounds}")
    print(f"bare httpx loop: wall {best_bare[0]:.2f} s, cpu {cpu_bare:.2f} s")
    print(f"bcbridge client: wall {best_ours[0]:.2f} s, cpu {cpu_ours:.2f} s")
    wall_ratio, cpu_ratio = best_ours[0] / best_bare[0], cpu_ours / cpu_bare
    print(f"ratio wall {wall_ratio:.2f}x, cpu {cpu_ratio:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
