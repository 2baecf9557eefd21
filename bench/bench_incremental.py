"""Incremental pages against plain pages: what reading by `lastModifiedDateTime` costs the
emulator on a large set (issue 13: a 200k-row incremental pull took 77 s because each page
sorted the whole table).

Run: .venv/bin/python -m bench.bench_incremental [--customers N] [--pages P]
Both reads page through the same customers with pages of 1,000 (the subscriber's default):
plain (`$orderby` none: the emulator's insertion order) and incremental (what the subscriber
sends: `$filter=lastModifiedDateTime ge <start>&$orderby=lastModifiedDateTime asc`, with
`$count=true` as `pull` asks). The ratio is incremental / plain time per page; target <= 1.0x.
Also prints how long seeding the default data set (every entity set) takes; target < 10 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from bcbridge.emulator.service import DataService
from bcbridge.testing import start_inprocess_emulator

PAGE = 1_000


def page_times(client: httpx.Client, url: str, params: dict[str, str], pages: int) -> list[float]:
    times: list[float] = []
    next_url: str | None = url
    first = True
    while next_url and len(times) < pages:
        started = time.perf_counter()
        answer = client.get(next_url, params=params if first else None)
        answer.raise_for_status()
        times.append(time.perf_counter() - started)
        next_url, first = answer.json().get("@odata.nextLink"), False
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--pages", type=int, default=30)
    options = parser.parse_args()

    started = time.perf_counter()
    DataService().seed(1, {})
    print(f"seeding the default data set (every entity set): {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    with start_inprocess_emulator(scale={"customers": options.customers}) as emulator:
        print(f"seeding {options.customers:,} customers: {time.perf_counter() - started:.1f} s")
        company = emulator.info.company_id()
        with emulator.http_client(timeout=300) as client:
            client.headers["Prefer"] = f"odata.maxpagesize={PAGE}"
            url = f"companies({company})/customers"
            plain = page_times(client, url, {}, options.pages)
            incremental = page_times(
                client,
                url,
                {
                    "$filter": "lastModifiedDateTime ge 2000-01-01T00:00:00Z",
                    "$orderby": "lastModifiedDateTime asc",
                    "$count": "true",
                },
                options.pages,
            )
    plain_ms, incremental_ms = (statistics.median(t) * 1000 for t in (plain, incremental))
    print(f"plain page of {PAGE:,}: median {plain_ms:.1f} ms over {len(plain)} pages")
    print(f"incremental page of {PAGE:,}: median {incremental_ms:.1f} ms over {len(incremental)}")
    print(f"incremental / plain: {incremental_ms / plain_ms:.2f}x (target <= 1.0x)")


if __name__ == "__main__":
    main()
