"""Push memory benchmark: `bcbridge push items --action upsert` of 5,000 and 50,000 new items.

Run: .venv/bin/python -m bench.bench_push_memory
The push runs as its own process (the real CLI, a flow run with its task store); its resident
memory is sampled every 5 ms. Emulator latency 0. Target: peak memory of the 50k push within
1.3x of the 5k push (the input is streamed chunk by chunk, never held whole).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bcbridge.testing import start_emulator
from bench._common import PeakRSS, mib


def push(count: int, folder: Path, env: dict[str, str]) -> tuple[float, int]:
    source = folder / f"items-{count}.jsonl"
    with source.open("w") as handle:
        for n in range(count):
            item = {"number": f"BM{count}-{n:06d}", "displayName": f"Item {n}", "unitPrice": n}
            handle.write(json.dumps(item) + "\n")
    args = [sys.executable, "-m", "bcbridge", "push", "items", "--action", "upsert"]
    args += ["--key-field", "number", "--in", str(source)]
    args += ["--store", f"sqlite:///{folder / f'push-{count}.db'}"]
    started = time.perf_counter()
    quiet = subprocess.DEVNULL
    process = subprocess.Popen(args, env=env, stdout=quiet, stderr=quiet, cwd=folder)
    with PeakRSS(process.pid, interval=0.005) as memory:
        process.wait()
    assert process.returncode == 0
    return time.perf_counter() - started, memory.peak


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, start_emulator(latency_ms=0) as emulator:
        env = {**os.environ, **emulator.info.env(), "BC_COMPANY": emulator.info.company_id()}
        small = push(5_000, Path(folder), env)
        large = push(50_000, Path(folder), env)
    for count, (seconds, peak) in ((5_000, small), (50_000, large)):
        rate = count / seconds
        print(f"{count:>7,} items: {seconds:.1f} s, {rate:,.0f} items/s, peak {mib(peak)}")
    print(f"peak memory 50k / 5k: {large[1] / small[1]:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
