"""What the commands share: `bcbridge run`, `tasks ...` (cli/flows.py), `pull` (cli/pull.py),
`push` (cli/push.py) and `demo` (cli/demo.py) run flows, stop on Ctrl-C, show progress, runs and
tasks alike."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bcbridge import _redact
from bcbridge.errors import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BCBridgeError,
    exit_code,
)
from bcbridge.flowconfig import ProjectConfig
from bcbridge.flows import FlowRunner, RunResult
from bcbridge.sinks import sql_target
from bcbridge.store import RunStatus, Store, Task, TaskStatus

stderr = Console(stderr=True)
COLUMNS = (
    "read",
    "created",
    "updated",
    "unchanged",
    "deleted",
    "done",
    "written",
    "skipped",
    "filtered",
)


@contextmanager
def ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C: finish the records in flight, save, stop. Second: stop at once."""

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        stderr.print("[yellow]stopping after the records in flight (Ctrl-C again to abort)[/]")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Display:
    """One progress line per flow: records read and what became of them."""

    def __init__(self) -> None:
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<22}"),
            TextColumn("{task.completed:>8,.0f} records"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=stderr,
        )
        self.rows: dict[str, Any] = {}

    def update(self, flow: str, counts: Counter[str]) -> None:
        if flow not in self.rows:
            self.rows[flow] = self.bar.add_task(flow, total=None, detail="")
        detail = "  ".join(f"{k} {v:,}" for k, v in counts.items() if k != "read" and v)
        self.bar.update(self.rows[flow], completed=counts.get("read", 0), detail=detail)


def summary(results: list[RunResult]) -> None:
    """One row per run; only the outcome columns some run has a count in."""
    columns = [
        c
        for c in (*COLUMNS, TaskStatus.FAILED, TaskStatus.UNKNOWN)
        if any(r.counts.get(c) for r in results)
    ]
    table = Table(title="Runs")
    for name in ("Flow", "Run", "Status", *columns):
        table.add_column(name, justify="left" if name in ("Flow", "Status") else "right")
    for result in results:
        colours: dict[str, str] = {
            RunStatus.OK: "green",
            RunStatus.INTERRUPTED: "yellow",
            RunStatus.BUSY: "yellow",
        }
        colour = colours.get(result.status, "red")
        table.add_row(
            result.flow,
            "-" if result.run_id is None else str(result.run_id),
            f"[{colour}]{result.status}[/]",
            *(f"{result.counts.get(name, 0):,}" for name in columns),
        )
    stderr.print(table)
    for result in results:
        if result.error:
            stderr.print(f"[red]{escape(result.flow)}: {escape(_redact.text(result.error))}[/]")
        if lost := result.counts.get(TaskStatus.UNKNOWN):
            stderr.print(f"[red]{result.flow}: {_LOST.format(count=lost, flow=result.flow)}[/]")


_LOST = (
    "{count:,} record(s) sent but their answer was lost, and BC's state does not tell whether "
    "it was carried out; they are not sent again by themselves. See them with `bcbridge tasks "
    "list --status unknown --flow {flow}`, check BC, then `bcbridge tasks retry ID` (send it) "
    "or `bcbridge tasks skip ID` (it is done)"
)


def run_flows(
    project: ProjectConfig,
    store: Store,
    names: list[str],
    stop: threading.Event,
    *,
    wait: float | None = None,
) -> list[RunResult]:
    """Each flow once, in turn; a flow whose lease another process holds is `busy` (or waited
    for, `wait` seconds)."""
    display = _Display()
    runner = FlowRunner(project, store, stop=stop, progress=display.update)
    results = []
    with display.bar:
        for name in names:
            display.update(name, Counter())
            if wait is not None:
                _say_whom_we_wait_for(store, name)
            results.append(anyio.run(partial(runner.run, name, wait=wait)))
            if stop.is_set():
                break
    return results


def _say_whom_we_wait_for(store: Store, name: str) -> None:
    try:
        lease = store.lease(name)
    except BCBridgeError:
        return  # the run itself reports what is wrong with the store
    if lease is not None and lease.expires_at > datetime.now(UTC):
        stderr.print(f"{name}: waiting for the run {lease.describe()}")


def runs_exit_code(results: list[RunResult]) -> int:
    """The documented code (`bcbridge.errors`) of the first run that stopped on an error, else
    4 when a flow was busy, 1 when records failed, 130 when Ctrl-C stopped it."""
    for result in results:
        if result.status == RunStatus.ERROR:
            return exit_code(result.exception) if result.exception else EXIT_FAILED
    statuses = {result.status for result in results}
    if RunStatus.BUSY in statuses:
        return EXIT_BUSY
    if RunStatus.FAILED in statuses:
        return EXIT_FAILED
    return EXIT_INTERRUPTED if RunStatus.INTERRUPTED in statuses else EXIT_OK


def task_table(tasks: list[Task]) -> Table:
    table = Table(title="Tasks")
    for column in ("Id", "Flow", "Key", "Status", "Attempts", "Updated", "Last error"):
        table.add_column(column, overflow="fold")
    for task in tasks:
        table.add_row(
            str(task.id),
            escape(task.flow),
            escape(task.record_key or "-"),
            task.status,
            str(task.attempts),
            f"{task.updated_at:%Y-%m-%d %H:%M:%S}",
            escape(_redact.text(task.last_error or "")[:120]),
        )
    return table


def progress_bar(total: int | None = None) -> Progress:
    """A records bar on stderr (determinate when `total` is known)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}" + (f"/{total:,}" if total else "") + " records"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
    )


def counts_table(title: str, counts: Counter[str]) -> None:
    """Print the non-zero outcome counts as a table on stderr."""
    table = Table(title=title, min_width=len(title) + 2)
    table.add_column("Outcome")
    table.add_column("Records", justify="right")
    for outcome, count in sorted(counts.items()):
        if count:
            table.add_row(outcome, f"{count:,}")
    stderr.print(table)


def file_of(spec: str) -> Path | None:
    """The local file a reader/writer spec names; None for `-` and SQL URLs."""
    if spec == "-" or sql_target(spec) is not None:
        return None
    return Path(spec)
