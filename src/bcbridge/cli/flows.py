"""`bcbridge run`, `flows list`, `tasks list|show|retry` and `demo`: flows from a project file."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bcbridge import _redact
from bcbridge.cli._settings import fail
from bcbridge.errors import BCBridgeError
from bcbridge.flowconfig import ProjectConfig, find_config, load_project
from bcbridge.flows import FlowRunner, RunResult
from bcbridge.schedule import parse_schedule, sleep_until
from bcbridge.store import Store, Task

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
    help="Records that passed a flow: look up and retry.", no_args_is_help=True
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
    columns = [c for c in (*COLUMNS, "failed") if any(r.counts.get(c) for r in results)]
    table = Table(title="Runs")
    for name in ("Flow", "Run", "Status", *columns):
        table.add_column(name, justify="left" if name in ("Flow", "Status") else "right")
    for result in results:
        colour = {"ok": "green", "interrupted": "yellow"}.get(result.status, "red")
        table.add_row(
            result.flow,
            str(result.run_id),
            f"[{colour}]{result.status}[/]",
            *(f"{result.counts.get(name, 0):,}" for name in columns),
        )
    stderr.print(table)
    for result in results:
        if result.error:
            stderr.print(f"[red]{escape(result.flow)}: {escape(_redact.text(result.error))}[/]")


def _run_flows(
    project: ProjectConfig, store: Store, names: list[str], stop: threading.Event
) -> list[RunResult]:
    for name in names:
        project.flow(name)  # an unknown name fails before anything runs
    display = _Display()
    runner = FlowRunner(project, store, stop=stop, progress=display.update)
    results = []
    with display.bar:
        for name in names:
            display.update(name, Counter())
            try:
                results.append(anyio.run(runner.run, name))
            except BCBridgeError as exc:
                last = store.runs(name, limit=1)[0]
                counts = Counter({k: int(v) for k, v in last["counts"].items()})
                results.append(RunResult(name, last["id"], "error", counts, error=str(exc)))
            if stop.is_set():
                break
    return results


def _exit_code(results: list[RunResult]) -> int:
    """1 when a run failed or records failed; 130 (as for SIGINT) when Ctrl-C stopped it."""
    if any(r.status not in ("ok", "interrupted") for r in results):
        return 1
    return 130 if any(r.status == "interrupted" for r in results) else 0


def run(
    flows: list[str] = typer.Argument(None, help="Flow names (default: every flow)."),
    every: str | None = typer.Option(
        None, help="Run again on this schedule: 30s, 5m, 1h30m, or a cron expression."
    ),
    scheduled: bool = typer.Option(
        False, "--scheduled", help="Repeat each flow on the `schedule` in the project file."
    ),
    once: bool = typer.Option(False, "--once", help="Run once and exit (the default)."),
    config: Path | None = PROJECT_OPTION,
) -> None:
    """Run flows: records from the source, through the transformers, to the target.

    Example: bcbridge run customers_to_sqlite --config examples/bcbridge.yaml --every 5m
    """
    stop = threading.Event()
    project, store = _open(config)
    names = list(flows or project.flows)
    try:
        if once and (every or scheduled):
            raise BCBridgeError("--once runs once: leave out --every and --scheduled")
        schedule = every
        if scheduled and not every:
            schedule = _common_schedule(project, names)
        next_start = parse_schedule(schedule) if schedule else None
    except BCBridgeError as exc:
        raise fail(exc) from None
    code = 0
    with _ctrl_c_stops(stop):
        while True:
            started = datetime.now(UTC)
            results = _run_flows(project, store, names, stop)
            _summary(results)
            code = max(code, _exit_code(results))
            if next_start is None or stop.is_set():
                break
            moment = next_start(started)
            stderr.print(f"next run at {moment:%Y-%m-%d %H:%M:%S} UTC (Ctrl-C to stop)")
            if not anyio.run(sleep_until, moment, stop):
                break
    store.close()
    if stop.is_set() and code == 0:
        code = 130  # stopped with Ctrl-C, also between scheduled runs
    raise typer.Exit(code)


def _common_schedule(project: ProjectConfig, names: list[str]) -> str:
    schedules = {project.flow(name).schedule for name in names}
    if len(schedules) != 1 or None in schedules:
        raise BCBridgeError(
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
    status: str | None = typer.Option(None, help="pending, sending, done or failed."),
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
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


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
    except BCBridgeError as exc:
        raise fail(exc) from None
    _summary(results)
    stdout.print(_task_table([t for t in (store.task(task.id) for task in tasks) if t]))
    store.close()
    raise typer.Exit(_exit_code(results))


def _chosen(store: Store, ids: list[int], failed: bool, flow: str | None) -> list[Task]:
    if failed == bool(ids):
        raise BCBridgeError("give task ids or --failed (not both)")
    if failed:
        return store.tasks(flow, "failed", limit=None)
    tasks = []
    for task_id in ids:
        task = store.task(task_id)
        if task is None:
            raise BCBridgeError(f"no task {task_id}")
        if task.status == "done":
            raise BCBridgeError(f"task {task_id} is done; only unfinished tasks are retried")
        tasks.append(task)
    return tasks


def register(app: typer.Typer) -> None:
    from bcbridge.cli.demo import demo

    app.command("run")(run)
    app.add_typer(flows_group, name="flows")
    app.add_typer(tasks_group, name="tasks")
    app.command("demo")(demo)
