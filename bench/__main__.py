"""Run every benchmark in turn, each in its own process: `python -m bench` (or `make bench`)."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    "bench_emulator",
    "bench_incremental",
    "bench_seed",
    "bench_client",
    "bench_pull",
    "bench_push",
    "bench_push_memory",
    "bench_flow",
    "bench_dashboard",
    "bench_webhooks",
)


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print(f"\n== bench.{name}", flush=True)
        failed += subprocess.run([sys.executable, "-m", f"bench.{name}"]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
