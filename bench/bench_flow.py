"""Flow benchmark: what crash safety costs. 10,000 items from a CSV file upserted into BC.

Run: .venv/bin/python -m bench.bench_flow [--items N] [--latency-ms N]
Compares, in the same run against the same emulator (20 ms latency by default):
- the Publisher alone, fed the same records from memory (the baseline: no state kept);
- the flow runner: CSV reader, transformers, a task per record in the SQLite store marked
  sending/done in committed steps, the Publisher underneath.
Each side writes its own item numbers, all new, so both do the same work in BC.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import yaml

from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.flowconfig import load_project
from bcbridge.flows import FlowRunner
from bcbridge.publisher import Publisher
from bcbridge.store import Store
from bcbridge.testing import start_emulator

COMPANY = "CRONUS USA, Inc."


def rows(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {"number": f"{prefix}{i:05d}", "displayName": f"Bench item {i}", "unitPrice": i % 97}
        for i in range(count)
    ]


async def publisher_alone(settings: ClientSettings, records: list[dict[str, Any]]) -> int:
    async with BusinessCentralClient(settings) as bc:
        publisher = Publisher(bc, "items", "upsert", company=COMPANY, key_field="number")
        results = [result async for result in publisher.publish(records)]
    assert all(result.ok for result in results), [r for r in results if not r.ok][:3]
    return len(results)


def flow_project(folder: Path, records: list[dict[str, Any]]) -> Path:
    with (folder / "items.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    project = {
        "outgoing": {
            "items": {
                "entity": "items",
                "company": COMPANY,
                "action": "upsert",
                "key_field": "number",
            }
        },
        "flows": {
            "load": {
                "from": "items.csv",
                "transform": [{"convert": {"unitPrice": "decimal"}}],
                "to": "items",
            }
        },
    }
    path = folder / "bcbridge.yaml"
    path.write_text(yaml.safe_dump(project))
    return path


def run_flow(path: Path) -> dict[str, int]:
    config = load_project(path)
    store = Store(config.store)
    try:
        result = anyio.run(FlowRunner(config, store).run, "load")
    finally:
        store.close()
    assert result.status == "ok", result
    return result.counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=20)
    args = parser.parse_args()
    with (
        start_emulator(latency_ms=args.latency_ms) as emulator,
        tempfile.TemporaryDirectory() as tmp,
    ):
        settings = ClientSettings.from_env(emulator.info.env())
        started = time.perf_counter()
        anyio.run(publisher_alone, settings, rows("BA", args.items))
        alone = time.perf_counter() - started

        os.environ.update(emulator.info.env())  # the project's default client reads BC_*
        project = flow_project(Path(tmp), rows("BF", args.items))
        started = time.perf_counter()
        counts = run_flow(project)
        flow = time.perf_counter() - started
        started = time.perf_counter()
        again = run_flow(project)  # same file again: every record is found unchanged in BC
        rerun = time.perf_counter() - started
    print(f"{args.items} items, upsert, emulator latency {args.latency_ms} ms")
    print(f"Publisher alone (baseline):          {alone:.1f} s")
    print(
        f"flow run with tasks in SQLite:       {flow:.1f} s  ({flow / alone:.2f}x)  {dict(counts)}"
    )
    print(
        f"same file again (all unchanged):     {rerun:.1f} s  ({rerun / alone:.2f}x)  {dict(again)}"
    )
    print("target: the flow within 1.3x of the Publisher alone")


if __name__ == "__main__":
    main()
