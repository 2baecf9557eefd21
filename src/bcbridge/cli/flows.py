"""`bcbridge run`, `flows list`, `tasks list|show|retry|skip` and `demo`: flows from a project
file."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime
from pathlib import Path

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bcbridge import _json, _redact
from bcbridge.cli._common import (
    ctrl_c_stops,
    run_flows,
    runs_exit_code,
    stderr,
    summary,
    task_table,
)
from bcbridge.cli._complete import flow_names
from bcbridge.cli._settings import fail
from bcbridge.errors import (
    EXIT_INTERRUPTED,
    BCBridgeError,
    ConfigError,
)
from bcbridge.flowconfig import ProjectConfig, find_config, load_project
from bcbridge.flows import FlowRunner
from bcbridge.schedule import parse_schedule, sleep_until
from bcbridge.store import Store, Task, TaskStatus, TaskUpdate

stdout = Console()
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


def run(
    flows: list[str] = typer.Argument(
        None, help="Flow names (default: every flow).", autocompletion=flow_names
    ),
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
    with ctrl_c_stops(stop):
        while True:
            started = datetime.now(UTC)
            results = run_flows(project, store, names, stop, wait=waiting)
            summary(results)
            code = code or runs_exit_code(results)  # the first trouble is the one to report
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


@tasks_group.command("list")
def tasks_list(
    flow: str | None = typer.Option(None, help="Only this flow.", autocompletion=flow_names),
    status: TaskStatus | None = typer.Option(
        None, help="pending, sending, done, failed, unknown (answer lost) or skipped."
    ),
    limit: int = typer.Option(50, help="At most this many, newest first."),
    config: Path | None = PROJECT_OPTION,
) -> None:
    """Tasks, newest first. Example: bcbridge tasks list --status failed"""
    _, store = _open(config)
    stdout.print(task_table(store.tasks(flow, status, limit)))
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
    flow: str | None = typer.Option(
        None, help="With --failed: only this flow.", autocompletion=flow_names
    ),
    config: Path | None = PROJECT_OPTION,
) -> None:
    """Deliver tasks again, e.g. after fixing the data in BC or the flow's transformers.

    Example: bcbridge tasks retry --failed --flow items_from_csv
    """
    project, store = _open(config)
    try:
        tasks = _chosen(store, task_ids or [], failed, flow)
        results = anyio.run(FlowRunner(project, store).retry, tasks)
        summary(results)
        stdout.print(task_table([t for t in (store.task(task.id) for task in tasks) if t]))
    except BCBridgeError as exc:
        raise fail(exc) from None
    finally:
        store.close()
    raise typer.Exit(runs_exit_code(results))


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
    stdout.print(task_table([t for t in (store.task(task.id) for task in tasks) if t]))
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
