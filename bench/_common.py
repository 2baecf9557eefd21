"""Helpers shared by the benchmarks: peak-RSS sampling of a process."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRSS:
    """Samples a process's resident memory every few milliseconds; `peak` is the maximum seen."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"
