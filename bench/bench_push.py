"""Push benchmark: upsert 10,000 items with the emulator at 20 ms latency.

Run: .venv/bin/python -m bench.bench_push [--items N] [--sample N] [--latency-ms N]
Compares, in the same run against the same emulator:
- the Publisher: grouped lookups and `$batch` chunks of 100, several in flight within the limits;
- one request per record in sequence: a GET to find the record by number, then PATCH or POST.
The sequential baseline is measured on `--sample` records (default 300) and scaled to `--items`,
because 10,000 records x 2 requests x 20 ms would take minutes; the output says so.
Target (issue #4): batched at least 20x faster.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio

from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.odata import literal
from bcbridge.publisher import Outcome, Publisher
from bcbridge.testing import start_emulator


def records(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {"number": f"{prefix}{i:05d}", "displayName": f"Bench item {i}", "unitPrice": float(i % 97)}
        for i in range(count)
    ]


async def batched(settings: ClientSettings, rows: list[dict[str, Any]]) -> int:
    async with BusinessCentralClient(settings) as bc:
        publisher = Publisher(bc, "items", "upsert", key_field="number")
        done = [r async for r in publisher.publish(rows)]
    assert all(r.outcome is not Outcome.FAILED for r in done), [r for r in done if not r.ok][:3]
    return len(done)


async def one_by_one(settings: ClientSettings, company: str, rows: list[dict[str, Any]]) -> int:
    path = f"companies({company})/items"
    async with BusinessCentralClient(settings) as bc:
        for row in rows:
            found = await bc.get_json(path, {"$filter": f"number eq {literal(row['number'])}"})
            if found["value"]:
                existing = found["value"][0]
                headers = {"If-Match": existing["@odata.etag"]}
                await bc.request("PATCH", f"{path}({existing['id']})", json=row, headers=headers)
            else:
                await bc.request("POST", path, json=row)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--latency-ms", type=int, default=20)
    args = parser.parse_args()
    with start_emulator(latency_ms=args.latency_ms) as emulator:
        info = emulator.info
        settings = ClientSettings.from_env({**info.env(), "BC_COMPANY": info.company_id()})
        rows = records("BP", args.items)
        started = time.perf_counter()
        anyio.run(batched, settings, rows)
        create_seconds = time.perf_counter() - started
        changed = [{**row, "unitPrice": row["unitPrice"] + 1} for row in rows]
        started = time.perf_counter()
        anyio.run(batched, settings, changed)
        update_seconds = time.perf_counter() - started
        sample = records("BS", args.sample)
        started = time.perf_counter()
        anyio.run(one_by_one, settings, info.company_id(), sample)
        per_record = (time.perf_counter() - started) / args.sample
    sequential = per_record * args.items
    print(f"{args.items} items, upsert, emulator latency {args.latency_ms} ms")
    print(f"batched + concurrent (all new):     {create_seconds:.1f} s")
    print(f"batched + concurrent (all changed): {update_seconds:.1f} s")
    print(
        f"one request per record, sequential: {per_record * 1000:.1f} ms/record measured on "
        f"{args.sample}, so {sequential:.0f} s for {args.items} (scaled)"
    )
    print(
        f"speed-up: {sequential / create_seconds:.1f}x (new), "
        f"{sequential / update_seconds:.1f}x (changed); target >= 20x"
    )


if __name__ == "__main__":
    main()
