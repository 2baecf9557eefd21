"""`bcbridge run`, `flows list`, `tasks list|show|retry|skip` and `demo`: flows from a project
file."""

from __future__ import annotations

import math
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
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bcbridge import _json, _redact
from bcbridge.cli._settings import fail
from bcbridge.errors import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BCBridgeError,
    ConfigError,
    exit_code,
)
from bcbridge.flowconfig import ProjectConfig, find_config, load_project
from bcbridge.flows import FlowRunner, RunResult
from bcbridge.schedule import parse_schedule, sleep_until
from bcbridge.store import RunStatus, Store, Task, TaskStatus, TaskUpdate

stderr = Console(stderr=True)
stdout = Console()
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
PROJECT_OPTION = typer.Option(
    None, "--config", help="Project file (default: $BCBRIDGE_CONFIG, else ./bcbridge.yaml)."
)

flows_group = typer.Typer(help="The flows of a project file.", no_args_is_help=True)
tasks_group = typer.Typer(
    help="Records that passed a flow: look up, retry or skip.", no_args_is_help=True
)


def _open(config: Path | None) -> tuple[ProjectConfig, Store]:
    """The project and its store; a bad project file or an unusable store ends the command."""
    try:
        project = load_project(find_config(config))
        return project, Store(project.store)
    except BCBridgeError as exc:
        raise fail(exc) from None


@contextmanager
def _ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
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


def _summary(results: list[RunResult]) -> None:
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


def _run_flows(
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


def _exit_code(results: list[RunResult]) -> int:
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


def run(
    flows: list[str] = typer.Argument(None, help="Flow names (default: every flow)."),
    every: str | None = typer.Option(
        None, help="Run again on this schedule: 30s, 5m, 1h30m, or a cron expression."
    ),
    scheduled: bool = typer.Option(
        False, "--scheduled", help="Repeat each flow on the `schedule` in the project file."
    ),
    once: bool = typer.Option(False, "--once", help="Run once and exit (the default)."),
    wait: bool = typer.Option(
        False,
        "--wait",
        help="When a flow is already running in another process, wait for it to end "
        "(default: exit with code 4 at once).",
    ),
    wait_timeout: float | None = typer.Option(
        None,
        "--wait-timeout",
        min=0,
        help="With --wait: give up (exit code 4) after this many seconds (default: no limit).",
    ),
    config: Path | None = PROJECT_OPTION,
) -> None:
    """Run flows: records from the source, through the transformers, to the target.

    One run per flow at a time: a flow already running elsewhere exits with code 4 (or is
    waited for with --wait). Exit codes: 0 ok, 1 records failed, 2 usage/project/store error,
    3 Business Central or network error, 4 flow busy, 130 Ctrl-C.

    Example: bcbridge run customers_to_sqlite --config examples/bcbridge.yaml --every 5m
    """
    stop = threading.Event()
    project, store = _open(config)
    names = list(flows or project.flows)
    waiting = (math.inf if wait_timeout is None else wait_timeout) if wait else None
    try:
        for name in names:
            project.flow(name)  # an unknown name fails before anything runs
        if wait_timeout is not None and not wait:
            raise ConfigError("--wait-timeout goes with --wait")
        if once and (every or scheduled):
            raise ConfigError("--once runs once: leave out --every and --scheduled")
        schedule = every
        if scheduled and not every:
            schedule = _common_schedule(project, names)
        next_start = parse_schedule(schedule) if schedule else None
    except BCBridgeError as exc:
        store.close()
        raise fail(exc) from None
    code = 0
    with _ctrl_c_stops(stop):
        while True:
            started = datetime.now(UTC)
            results = _run_flows(project, store, names, stop, wait=waiting)
            _summary(results)
            code = code or _exit_code(results)  # the first trouble is the one to report
            if next_start is None or stop.is_set():
                break
            moment = next_start(started)
            stderr.print(f"next run at {moment:%Y-%m-%d %H:%M:%S} UTC (Ctrl-C to stop)")
            if not anyio.run(sleep_until, moment, stop):
                break
    store.close()
    if stop.is_set() and code == 0:
        code = EXIT_INTERRUPTED  # stopped with Ctrl-C, also between scheduled runs
    raise typer.Exit(code)


def _common_schedule(project: ProjectConfig, names: list[str]) -> str:
    schedules = {project.flow(name).schedule for name in names}
    if len(schedules) != 1 or None in schedules:
        raise ConfigError(
            "--scheduled needs the flows to share one `schedule` in the project file; "
            "run them separately or use --every"
        )
    return str(schedules.pop())


@flows_group.command("list")
def flows_list(config: Path | None = PROJECT_OPTION) -> None:
    """The flows of the project, what they connect and how their last run ended."""
    project, store = _open(config)
    table = Table(title=f"Flows in {project.source}")
    for column in ("Flow", "From", "To", "Schedule", "Last run", "Tasks"):
        table.add_column(column)
    for name, flow in project.flows.items():
        last = store.runs(name, limit=1)
        tasks = store.count_tasks(name)
        table.add_row(
            escape(name),
            escape(_redact.url(str(flow.source.incoming or flow.source.reader))),
            escape(_redact.url(str(flow.target.outgoing or flow.target.writer))),
            escape(flow.schedule or "-"),
            f"{last[0]['status']} {last[0]['started_at']:%Y-%m-%d %H:%M}" if last else "never",
            ", ".join(f"{k} {v:,}" for k, v in sorted(tasks.items())) or "-",
        )
    stdout.print(table)
    store.close()


def _task_table(tasks: list[Task]) -> Table:
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


@tasks_group.command("list")
def tasks_list(
    flow: str | None = typer.Option(None, help="Only this flow."),
    status: TaskStatus | None = typer.Option(
        None, help="pending, sending, done, failed, unknown (answer lost) or skipped."
    ),
    limit: int = typer.Option(50, help="At most this many, newest first."),
    config: Path | None = PROJECT_OPTION,
) -> None:
    """Tasks, newest first. Example: bcbridge tasks list --status failed"""
    _, store = _open(config)
    stdout.print(_task_table(store.tasks(flow, status, limit)))
    store.close()


@tasks_group.command("show")
def tasks_show(task_id: int = typer.Argument(...), config: Path | None = PROJECT_OPTION) -> None:
    """One task with its payload and last error, as JSON."""
    _, store = _open(config)
    task = store.task(task_id)
    store.close()
    if task is None:
        raise fail(BCBridgeError(f"no task {task_id}"))
    data = {**task.__dict__, "created_at": str(task.created_at), "updated_at": str(task.updated_at)}
    data["last_error"] = task.last_error and _redact.text(task.last_error)
    typer.echo(_json.dumps(data, option=_json.OPT_INDENT_2).decode())


@tasks_group.command("retry")
def tasks_retry(
    task_ids: list[int] = typer.Argument(None, help="Task ids."),
    failed: bool = typer.Option(False, "--failed", help="Every failed task (of --flow)."),
    flow: str | None = typer.Option(None, help="With --failed: only this flow."),
    config: Path | None = PROJECT_OPTION,
) -> None:
    """Deliver tasks again, e.g. after fixing the data in BC or the flow's transformers.

    Example: bcbridge tasks retry --failed --flow items_from_csv
    """
    project, store = _open(config)
    try:
        tasks = _chosen(store, task_ids or [], failed, flow)
        results = anyio.run(FlowRunner(project, store).retry, tasks)
        _summary(results)
        stdout.print(_task_table([t for t in (store.task(task.id) for task in tasks) if t]))
    except BCBridgeError as exc:
        raise fail(exc) from None
    finally:
        store.close()
    raise typer.Exit(_exit_code(results))


@tasks_group.command("skip")
def tasks_skip(
    task_ids: list[int] = typer.Argument(..., help="Task ids."),
    config: Path | None = PROJECT_OPTION,
) -> None:
    """Settle tasks by hand: you checked BC and the record needs nothing more (e.g. an action
    whose answer was lost did run). They are never sent again, not even when the record comes
    again. Example: bcbridge tasks skip 42 43
    """
    _, store = _open(config)
    try:
        tasks = [_unfinished(store, task_id) for task_id in task_ids]
    except BCBridgeError as exc:
        store.close()
        raise fail(exc) from None
    store.settle(
        [
            TaskUpdate(
                task.id,
                TaskStatus.SKIPPED,
                error=f"skipped by hand (was {task.status}: {task.last_error or '-'})",
            )
            for task in tasks
        ]
    )
    stdout.print(_task_table([t for t in (store.task(task.id) for task in tasks) if t]))
    store.close()


def _unfinished(store: Store, task_id: int) -> Task:
    task = store.task(task_id)
    if task is None:
        raise ConfigError(f"no task {task_id}")
    if task.status in (TaskStatus.DONE, TaskStatus.SKIPPED):
        raise ConfigError(f"task {task_id} is {task.status} already; nothing to skip")
    return task


def _chosen(store: Store, ids: list[int], failed: bool, flow: str | None) -> list[Task]:
    if failed == bool(ids):
        raise ConfigError("give task ids or --failed (not both)")
    if failed:
        return store.tasks(flow, TaskStatus.FAILED, limit=None)
    tasks = []
    for task_id in ids:
        task = store.task(task_id)
        if task is None:
            raise ConfigError(f"no task {task_id}")
        if task.status == TaskStatus.DONE:
            raise ConfigError(f"task {task_id} is done; only unfinished tasks are retried")
        tasks.append(task)
    return tasks


def register(app: typer.Typer) -> None:
    from bcbridge.cli.demo import demo

    app.command("run")(run)
    app.add_typer(flows_group, name="flows")
    app.add_typer(tasks_group, name="tasks")
    app.command("demo")(demo)
