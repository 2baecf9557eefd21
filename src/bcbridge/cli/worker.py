"""`bcbridge worker` (run the project's jobs) and `bcbridge workers list` (who runs what)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from bcbridge.cli._common import ctrl_c_stops, print_json, print_table, stderr
from bcbridge.cli._settings import fail
from bcbridge.cli.flows import JSON_OPTION, PROJECT_OPTION
from bcbridge.errors import BCBridgeError, ConfigError
from bcbridge.flowconfig import ProjectConfig, find_config, load_project
from bcbridge.store import Store

workers_group = typer.Typer(help="The workers of a project (engine: procrastinate).")


def _open(config: Path | None) -> tuple[ProjectConfig, Store]:
    """The project and its store, which must be set for workers (`engine: procrastinate`)."""
    try:
        project = load_project(find_config(config))
        if project.engine != "procrastinate":
            raise ConfigError(
                f"{project.source}: engine: {project.engine}: workers run the flows of a "
                "project with `engine: procrastinate` and a PostgreSQL `store:`; set them, "
                "or run the flows with `bcbridge run` / `bcbridge serve`"
            )
        return project, Store(project.store)
    except BCBridgeError as exc:
        raise fail(exc) from None


def worker(
    config: Path | None = PROJECT_OPTION,
    name: str | None = typer.Option(
        None, "--name", help="The worker's name in its log (default: host:pid)."
    ),
    concurrency: int = typer.Option(
        1, "--concurrency", min=1, max=64, help="Jobs this process runs at once."
    ),
    stalled_after: float = typer.Option(
        10.0,
        "--stalled-after",
        min=1.0,
        max=3600.0,
        help="Seconds without a worker's heartbeat before its jobs go to another worker.",
    ),
) -> None:
    """Run the project's flows as jobs (engine: procrastinate), until Ctrl-C or SIGTERM.

    Any number of workers, on any machines, share the project's PostgreSQL store: runs that
    `bcbridge serve` defers (on schedule, Run now, retries) go to whichever is free, and a big
    flow's chunks are delivered by several workers at once. Ctrl-C or SIGTERM: the jobs under
    way finish their chunk, and a run cut short is queued again for another worker (a second
    Ctrl-C stops at once, exit code 130). A worker killed outright: another one takes its jobs
    over once its heartbeat is --stalled-after seconds old.

    Example: bcbridge worker --config bcbridge.yaml
    """
    from bcbridge.engine import WorkerState, ensure_schema, run_worker

    project, store = _open(config)
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("bcbridge.worker").setLevel(logging.INFO)
    stop = threading.Event()
    state = WorkerState(project, store, stop)
    try:
        ensure_schema(store.url)
        stderr.print(f"bcbridge worker for {escape(project.source)} (Ctrl-C to stop)")
        with ctrl_c_stops(stop, (signal.SIGINT, signal.SIGTERM)):
            anyio.run(
                lambda: run_worker(
                    state, name=name, concurrency=concurrency, stalled_after=stalled_after
                )
            )
    except BCBridgeError as exc:
        raise fail(exc) from None
    finally:
        store.close()


class _OneLine(logging.Formatter):
    """A worker's log lines stay lines: an exception logged with one (a failed job, a job
    another worker took over while this one stalled) shows as its type and message, with its
    cause, not as a traceback."""

    def formatException(self, ei: Any) -> str:
        error = ei[1]
        cause = error.__cause__ or error.__context__
        text = f"{type(error).__name__}: {error}"
        if cause is not None:
            text += f" (from {type(cause).__name__}: {cause})"
        return text

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(super().format(record).split())


@workers_group.command("list")
def workers_list(config: Path | None = PROJECT_OPTION, json_output: bool = JSON_OPTION) -> None:
    """The workers of the project: their last heartbeat and the jobs they run.

    --json prints a JSON array: [{"id": 3, "heartbeat_age": 1.2, "jobs": ["#17 mirror run"]}]
    """
    from bcbridge.engine import list_workers

    _, store = _open(config)
    try:
        rows = list_workers(store)
    except BCBridgeError as exc:
        raise fail(exc) from None
    finally:
        store.close()
    if json_output:
        print_json(
            [
                {"id": row.id, "heartbeat_age": round(row.heartbeat_age, 1), "jobs": row.jobs}
                for row in rows
            ]
        )
        return
    if not rows:
        stderr.print("no workers: start some with `bcbridge worker`")
        return
    table = Table(title="Workers")
    table.add_column("Id", justify="right", no_wrap=True)
    table.add_column("Last heartbeat", justify="right")
    table.add_column("Jobs", overflow="fold")
    for row in rows:
        table.add_row(
            str(row.id), f"{row.heartbeat_age:.0f}s ago", escape(", ".join(row.jobs) or "idle")
        )
    print_table(table)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.add_typer(workers_group, name="workers")
