"""Seeding the default data set for every entity set (issue 13: < 10 s), against seeding only
the sets `seed.py` writes out by hand, measured in the same run.

Run: .venv/bin/python -m bench.bench_seed [--rounds N] [--seed S]
Each round builds a fresh in-memory emulator store (every table, as `bcbridge emulator start`
does) and seeds it; the best of N rounds is reported. "Hand-written sets only" skips
`bcbridge.emulator.seed_sets` (the generic, linked rows of the other sets), as the emulator
seeded before issue 13.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from bcbridge import catalog
from bcbridge.emulator import seed_sets
from bcbridge.emulator.service import DataService

TARGET_S = 10.0


@contextmanager
def hand_written_sets_only() -> Iterator[None]:
    every_set = seed_sets.seed_every_set
    seed_sets.seed_every_set = lambda *args: None
    try:
        yield
    finally:
        seed_sets.seed_every_set = every_set


def seed_once(seed: int) -> tuple[float, int, int]:
    """Seconds to seed one fresh store, its rows, and the sets that have any."""
    service = DataService()
    started = time.perf_counter()
    service.seed(seed, {})
    elapsed = time.perf_counter() - started
    rows = filled = 0
    with service.engine.connect() as conn:
        for table in service.schema.tables.values():
            count = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)
            rows, filled = rows + count, filled + (count > 0)
    service.close()
    return elapsed, rows, filled


def best_of(rounds: int, seed: int) -> tuple[float, int, int]:
    results = [seed_once(seed) for _ in range(rounds)]
    return min(results, key=lambda result: result[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    stored = len(catalog.CATALOG) - 1  # subscriptions live in the webhook handler, not a table

    every_s, every_rows, every_sets = best_of(options.rounds, options.seed)
    with hand_written_sets_only():
        hand_s, hand_rows, hand_sets = best_of(options.rounds, options.seed)
    print(f"entity sets in the catalog: {len(catalog.CATALOG)} ({stored} stored in tables)")
    print(
        f"every set:              {every_s:.3f} s, {every_rows:,} rows, "
        f"{every_sets} sets with rows (best of {options.rounds})"
    )
    print(
        f"hand-written sets only: {hand_s:.3f} s, {hand_rows:,} rows, "
        f"{hand_sets} sets with rows (best of {options.rounds})"
    )
    print(f"every set / hand-written only: {every_s / hand_s:.2f}x")
    print(f"target: every set < {TARGET_S:.0f} s: {'met' if every_s < TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
