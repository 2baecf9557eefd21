"""Pull benchmark: `bcbridge pull customers --out FILE.jsonl` for 10,000 and 100,000 customers.

Run: .venv/bin/python -m bench.bench_pull
The pull runs as its own process (the real CLI); its resident memory is sampled every 5 ms.
Target (issue #4): peak memory of the 100k pull within 1.3x of the 10k pull (flat memory).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bcbridge.testing import start_emulator
from bench._common import PeakRSS, mib


def pull(count: int, folder: Path) -> tuple[float, int, int]:
    with start_emulator(scale=f"customers={count}") as emulator:
        env = {**os.environ, **emulator.info.env(), "BC_COMPANY": emulator.info.company_id()}
        out = folder / f"customers-{count}.jsonl"
        args = [sys.executable, "-m", "bcbridge", "pull", "customers", "--out", str(out)]
        started = time.perf_counter()
        quiet = subprocess.DEVNULL
        process = subprocess.Popen(args, env=env, stdout=quiet, stderr=quiet)
        with PeakRSS(process.pid, interval=0.005) as memory:
            process.wait()
        seconds = time.perf_counter() - started
        assert process.returncode == 0
        lines = sum(1 for _ in out.open("rb"))
    return seconds, memory.peak, lines


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        small = pull(10_000, Path(folder))
        large = pull(100_000, Path(folder))
    assert small[2] == 10_000 and large[2] == 100_000, (small, large)
    for count, (seconds, peak, _) in ((10_000, small), (100_000, large)):
        rate = count / seconds
        print(f"{count:>7,} customers: {seconds:.1f} s, {rate:,.0f} rows/s, peak {mib(peak)}")
    print(f"peak memory 100k / 10k: {large[1] / small[1]:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
