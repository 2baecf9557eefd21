"""`bcbridge run`, `flows list`, `tasks list|show|retry|skip` and `demo`: flows from a project
file."""

from __future__ import annotations

import difflib
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from bcbridge import _redact
from bcbridge.cli._common import (
    TASK_OPTIONAL_COLUMNS,
    ExplainedRun,
    ctrl_c_stops,
    explain,
    print_json,
    print_table,
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
from bcbridge.flows import FlowRunner, RunResult
from bcbridge.reports import flow_summary, utc
from bcbridge.schedule import parse_schedule, sleep_until
from bcbridge.store import Store, Task, TaskStatus

PROJECT_OPTION = typer.Option(
    None, "--config", help="Project file (default: $BCBRIDGE_CONFIG, else ./bcbridge.yaml)."
)
JSON_OPTION = typer.Option(
    False,
    "--json",
    help="Print one JSON document on stdout (its shape is above); messages go to stderr.",
)
WIDE_OPTION = typer.Option(
    False, "--wide", help="Show every column, unwrapped (the terminal folds long lines)."
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
    json_output: bool = JSON_OPTION,
) -> None:
    """Run flows: records from the source, through the transformers, to the target.

    One run per flow at a time: a flow already running elsewhere exits with code 4 (or is
    waited for with --wait). Exit codes: 0 ok, 1 records failed, 2 usage/project/store error,
    3 Business Central or network error, 4 flow busy, 130 Ctrl-C. When records failed, the
    reasons are listed grouped by BC error code, with the commands that list and retry them.

    --json prints a JSON array on stdout, one object per run (with --every or --scheduled, one
    array per round, each on one line):
    {"flow": "f", "run_id": 7, "status": "ok|failed|interrupted|error|busy",
    "counts": {"read": 10, "created": 8, "failed": 2}, "error": null,
    "failures": [{"reason": "Application_StringExceededLength", "count": 2, "example": "..."}],
    "commands": ["bcbridge tasks list --flow f --status failed", "bcbridge tasks retry ..."]}
    ("failures" groups the failed and unknown records of the run by BC error code, or by
    transform / read / HTTP status / answer lost; of the latest 10,000 when there are more.)

    Example: bcbridge run customers_to_sqlite --config examples/bcbridge.yaml --every 5m
    """
    stop = threading.Event()
    project, store = _open(config)
    names = list(flows or project.flows)
    waiting = (math.inf if wait_timeout is None else wait_timeout) if wait else None
    try:
        if not names:
            raise ConfigError(f"no flows in {project.source} to run: add one under `flows:`")
        for name in names:
            _check_flow(project, name)  # an unknown name fails before anything runs
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
            if json_output:
                print_json(_runs_json(results, store, project), lines=next_start is not None)
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


def _runs_json(
    results: list[RunResult], store: Store, project: ProjectConfig
) -> list[dict[str, Any]]:
    explained = (r if isinstance(r, ExplainedRun) else explain(r, store, project) for r in results)
    return [result.as_json() for result in explained]


def _common_schedule(project: ProjectConfig, names: list[str]) -> str:
    schedules = {project.flow(name).schedule for name in names}
    if len(schedules) != 1 or None in schedules:
        raise ConfigError(
            "--scheduled needs the flows to share one `schedule` in the project file; "
            "run them separately or use --every"
        )
    return str(schedules.pop())


@flows_group.command("list")
def flows_list(
    config: Path | None = PROJECT_OPTION,
    json_output: bool = JSON_OPTION,
    wide: bool = WIDE_OPTION,
) -> None:
    """The flows of the project, what they connect and how their last run ended.

    --json prints a JSON array, one object per flow:
    {"name": "f", "from": "cronus_customers", "to": "out/c.jsonl", "schedule": "15m" or null,
    "last_run": {"id": 7, "status": "ok", "started_at": "...", "ended_at": "..."} or null,
    "tasks": {"done": 40, "failed": 2}}
    """
    project, store = _open(config)
    try:
        flows = [flow_summary(name, flow, store) for name, flow in project.flows.items()]
    finally:
        store.close()
    if not flows:
        stderr.print(
            f"no flows in {escape(project.source)}: add one under `flows:`", soft_wrap=True
        )
    if json_output:
        print_json(flows)
    elif flows:
        print_table(_flows_table(project.source, flows), wide=wide, optional=("Schedule",))


def _flows_table(source: str, flows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Flows in {escape(source)}")
    table.add_column("Flow", no_wrap=True)
    for column in ("From", "To"):
        table.add_column(column, overflow="fold")
    table.add_column("Schedule", no_wrap=True)
    table.add_column("Last run")
    table.add_column("Tasks")
    for flow in flows:
        run = flow["last_run"]
        table.add_row(
            escape(flow["name"]),
            escape(flow["from"]),
            escape(flow["to"]),
            escape(flow["schedule"] or "-"),
            f"{run['status']} {run['started_at']:%Y-%m-%d %H:%M}" if run else "never",
            ", ".join(f"{k} {v:,}" for k, v in flow["tasks"].items()) or "-",
        )
    return table


def _task_status(value: str | None) -> TaskStatus | None:
    """--status as a TaskStatus; a value that is none is a usage error listing the valid ones."""
    if value is None:
        return None
    try:
        return TaskStatus(value.lower())
    except ValueError:
        valid = [status.value for status in TaskStatus]
        close = difflib.get_close_matches(value.lower(), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise typer.BadParameter(
            f"{value!r} is not a task status{hint}; valid: {', '.join(map(repr, valid))}"
        ) from None


@tasks_group.command("list")
def tasks_list(
    flow: str | None = typer.Option(None, help="Only this flow.", autocompletion=flow_names),
    status: str | None = typer.Option(
        None,
        callback=_task_status,
        autocompletion=lambda: [status.value for status in TaskStatus],
        help="pending, sending, done, failed, unknown (answer lost) or skipped.",
    ),
    limit: int = typer.Option(50, min=1, help="At most this many, newest first."),
    config: Path | None = PROJECT_OPTION,
    json_output: bool = JSON_OPTION,
    wide: bool = WIDE_OPTION,
) -> None:
    """Tasks, newest first. Example: bcbridge tasks list --status failed --flow items_from_csv

    --json prints a JSON array, one object per task (no payload: see `tasks show`):
    {"id": 42, "flow": "f", "run_id": 7, "record_key": "...", "status": "failed",
    "attempts": 1, "last_error": "400 BadRequest ...", "result_id": null, "stage": "send",
    "created_at": "2026-01-31T12:00:00+00:00", "updated_at": "..."}
    """
    project, store = _open(config)
    try:
        tasks = store.tasks(flow, status, limit)
    finally:
        store.close()
    if not tasks:
        _say_none_found(project, flow, status)
    if json_output:
        print_json([_task_json(task, payload=False) for task in tasks])
    elif tasks:
        print_table(task_table(tasks), wide=wide, optional=TASK_OPTIONAL_COLUMNS)


def _say_none_found(project: ProjectConfig, flow: str | None, status: str | None) -> None:
    """No task matched: say which filters matched none; a flow the project does not define is
    a usage error (a typo, most likely), with the names it does define."""
    if flow is not None:
        try:
            _check_flow(project, flow, "--flow")
        except ConfigError as exc:
            raise fail(exc) from None
    what = f"{status} tasks" if status else "tasks"
    stderr.print(f"no {what}{f' for flow {escape(flow)}' if flow else ''}", soft_wrap=True)


def _check_flow(project: ProjectConfig, name: str, option: str | None = None) -> None:
    """A flow name the project does not define is a usage error naming the ones it does."""
    if name in project.flows:
        return
    close = difflib.get_close_matches(name, list(project.flows), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    defined = ", ".join(project.flows) or "none"
    where = f"{option}: " if option else ""
    raise ConfigError(
        f"{where}no flow named {name!r} in {project.source} ({hint}defined: {defined})"
    )


def _task_json(task: Task, *, payload: bool) -> dict[str, Any]:
    data = {
        key: value
        for key, value in task.__dict__.items()
        if payload or key not in ("payload", "hash")
    }
    data["last_error"] = task.last_error and _redact.text(task.last_error)
    data["created_at"], data["updated_at"] = utc(task.created_at), utc(task.updated_at)
    return data


@tasks_group.command("show")
def tasks_show(
    task_id: int = typer.Argument(...),
    config: Path | None = PROJECT_OPTION,
    json_output: bool = typer.Option(
        False, "--json", help="Accepted for symmetry: the task is always printed as JSON."
    ),
) -> None:
    """One task with its payload and last error, as one JSON object: the fields of
    `tasks list --json`, plus "hash" and "payload" (the record as stored: after the
    transformers when "stage" is "send", as read when it is "transform")."""
    _, store = _open(config)
    try:
        task = store.task(task_id)
    finally:
        store.close()
    if task is None:
        raise fail(ConfigError(f"no task {task_id} (see `bcbridge tasks list`)"))
    print_json(_task_json(task, payload=True))


@tasks_group.command("retry")
def tasks_retry(
    task_ids: list[int] = typer.Argument(None, help="Task ids."),
    failed: bool = typer.Option(False, "--failed", help="Every failed task (of --flow)."),
    flow: str | None = typer.Option(
        None, help="With --failed: only this flow.", autocompletion=flow_names
    ),
    config: Path | None = PROJECT_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Deliver tasks again, e.g. after fixing the data in BC or the flow's transformers.

    Example: bcbridge tasks retry --failed --flow items_from_csv

    --json prints the runs as `bcbridge run --json` does (a JSON array, one object per flow).
    """
    project, store = _open(config)
    try:
        if flow is not None:
            _check_flow(project, flow, "--flow")
        tasks = _chosen(store, task_ids or [], failed, flow)
        if not tasks:
            stderr.print(
                f"no failed tasks{f' for flow {escape(flow)}' if flow else ''}: nothing to retry",
                soft_wrap=True,
            )
        results = anyio.run(FlowRunner(project, store).retry, tasks) if tasks else []
        explained = [explain(result, store, project, tasks) for result in results]
        if explained:
            summary(explained)
        if json_output:
            print_json([result.as_json() for result in explained])
        elif tasks:
            print_table(task_table([t for t in (store.task(task.id) for task in tasks) if t]))
    except BCBridgeError as exc:
        raise fail(exc) from None
    finally:
        store.close()
    raise typer.Exit(runs_exit_code(results))


@tasks_group.command("skip")
def tasks_skip(
    task_ids: list[int] = typer.Argument(..., help="Task ids."),
    config: Path | None = PROJECT_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Settle tasks by hand: you checked BC and the record needs nothing more (e.g. an action
    whose answer was lost did run). They are never sent again, not even when the record comes
    again. Example: bcbridge tasks skip 42 43

    --json prints the tasks as `bcbridge tasks list --json` does.
    """
    _, store = _open(config)
    try:
        tasks = [_unfinished(store, task_id) for task_id in task_ids]
    except BCBridgeError as exc:
        store.close()
        raise fail(exc) from None
    store.skip(tasks)
    skipped = [t for t in (store.task(task.id) for task in tasks) if t]
    store.close()
    if json_output:
        print_json([_task_json(task, payload=False) for task in skipped])
    else:
        print_table(task_table(skipped))


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
