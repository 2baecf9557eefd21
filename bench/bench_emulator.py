"""Emulator benchmark: seeding 100,000 customers, then serving them in pages of 20,000.

Run: .venv/bin/python -m bench.bench_emulator [--customers N]
Targets on a 2-core machine (issue #2): seeding in under 30 s; a 20,000-row page in under 2 s.
The baseline is the same SELECT run directly on an in-process copy of the data (no HTTP, no
JSON): the ratio says what HTTP + JSON + OData cost per page.
"""

from __future__ import annotations

import argparse
import ssl
import time

import httpx
import sqlalchemy as sa

from bcbridge.emulator.service import DataService
from bcbridge.testing import bc_token, start_emulator
from bench._common import PeakRSS, mib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    count = parser.parse_args().customers
    with start_emulator(scale=f"customers={min(count, 10)}") as emulator:
        info = emulator.info
        with PeakRSS(emulator.process.pid) as seeding_memory:
            started = time.perf_counter()
            emulator.seed(scale={"customers": count})
            seed_seconds = time.perf_counter() - started
        token = bc_token(info)["access_token"]
        client = httpx.Client(
            verify=ssl.create_default_context(cafile=info.ca_bundle),
            headers={"Authorization": f"Bearer {token}", "Prefer": "odata.maxpagesize=20000"},
            timeout=120,
        )
        url: str | None = f"{info.api_root}/companies({info.company_id()})/customers"
        page_times: list[float] = []
        rows = 0
        with PeakRSS(emulator.process.pid) as serving_memory:
            while url:
                started = time.perf_counter()
                body = client.get(url).json()
                page_times.append(time.perf_counter() - started)
                rows += len(body["value"])
                url = body.get("@odata.nextLink")
        client.close()

    service = DataService()
    service.seed(1, {"customers": count})
    table = service.schema.table("v2.0", "customers")
    started = time.perf_counter()
    with service.engine.connect() as conn:
        for offset in range(0, rows, 20_000):
            list(
                conn.execute(
                    sa.select(table).order_by(table.c._seq).offset(offset).limit(20_000)
                ).mappings()
            )
    baseline_page = (time.perf_counter() - started) / len(page_times)

    worst = max(page_times)
    print(
        f"seed {count} customers: {seed_seconds:.2f} s (target < 30 s); "
        f"server peak {mib(seeding_memory.peak)}"
    )
    print(
        f"serve {rows} rows in {len(page_times)} pages: {sum(page_times):.2f} s, "
        f"{rows / sum(page_times):,.0f} rows/s, slowest page {worst:.2f} s (target < 2 s); "
        f"server peak {mib(serving_memory.peak)}"
    )
    ratio = sum(page_times) / len(page_times) / baseline_page
    print(f"page vs bare SQLite SELECT of the same rows: {ratio:.1f}x")


if __name__ == "__main__":
    main()
