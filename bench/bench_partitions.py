"""Partitioned reads against one sequential nextLink read, on an emulator that models BC's
server time per row (issue 16).

Run: .venv/bin/python -m bench.bench_partitions [--rows 500000] [--row-time-us 200]
     [--latency-ms 50] [--page-size 5000] [--partitions auto]
The emulator runs as its own process (HTTPS, BC's limits: 5 in flight, 6,000 per 5 minutes),
seeded with `--rows` general ledger entries; each read is the library's `Subscriber` in this
process. Both reads must give the same rows (count, ids and an order-free checksum of their
content). Target: partitioned >= 3x faster at 500,000 rows, 50 ms latency.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from typing import Any

import anyio
import orjson

from bcbridge.partition import AUTO, Partitions, parse_partitions
from bcbridge.subscriber import Subscriber
from bcbridge.testing import RunningEmulator, start_emulator

CRONUS = "CRONUS USA, Inc."


class Digest:
    """Rows seen: how many, their ids, and a sum of row hashes (the same whatever the order)."""

    def __init__(self) -> None:
        self.rows = 0
        self.ids: set[str] = set()
        self.sum = 0

    def add(self, record: dict[str, Any]) -> None:
        self.rows += 1
        self.ids.add(str(record["id"]))
        raw = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        self.sum = (self.sum + int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest())) % (
            2**64
        )


def read(
    emulator: RunningEmulator, partitions: Partitions | None, page_size: int
) -> tuple[float, Digest, int]:
    digest = Digest()

    async def main() -> int:
        async with emulator.client(company=CRONUS) as bc:
            await bc.companies()  # the token and the company lookup are outside the clock
            subscriber = Subscriber(
                bc, "generalLedgerEntries", partitions=partitions, page_size=page_size
            )
            started = time.perf_counter()
            async for record in subscriber.records():
                digest.add(record)
            timings.append(time.perf_counter() - started)
            return subscriber.ranges

    timings: list[float] = []
    ranges = anyio.run(main)
    return timings[0], digest, ranges


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--row-time-us", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--partitions", default=AUTO)
    args = parser.parse_args()
    partitions = parse_partitions(args.partitions, "--partitions")
    started = time.perf_counter()
    with start_emulator(
        scale=f"generalLedgerEntries={args.rows}",
        latency_ms=args.latency_ms,
        row_time_us=args.row_time_us,
        timeout=1800,
    ) as emulator:
        seeding = time.perf_counter() - started
        print(f"seeded {args.rows:,} general ledger entries in {seeding:.0f} s")
        print(
            f"server: {args.latency_ms} ms a request + {args.row_time_us} us a row; "
            f"page size {args.page_size:,}"
        )
        sequential, seq_digest, _ = read(emulator, None, args.page_size)
        parted, part_digest, ranges = read(emulator, partitions, args.page_size)
        stats = emulator.stats()
    same = (seq_digest.rows, seq_digest.ids, seq_digest.sum) == (
        part_digest.rows,
        part_digest.ids,
        part_digest.sum,
    )
    for label, seconds, digest in (
        ("sequential nextLink", sequential, seq_digest),
        (f"partitioned ({ranges} ranges)", parted, part_digest),
    ):
        print(
            f"{label:>26}: {seconds:7.1f} s, {digest.rows:,} rows "
            f"({digest.rows / seconds:,.0f} rows/s), checksum {digest.sum:016x}"
        )
    print(f"speed-up: {sequential / parted:.2f}x (target >= 3x); same rows: {same}")
    print(f"emulator: {stats['requests']} requests, {stats['throttled']} throttled")
    assert same and part_digest.rows >= args.rows


if __name__ == "__main__":
    main()
