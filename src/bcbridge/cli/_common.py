"""What the commands share: `bcbridge run`, `tasks ...` (cli/flows.py), `pull` (cli/pull.py),
`push` (cli/push.py) and `demo` (cli/demo.py) run flows, stop on Ctrl-C, show progress, runs and
tasks alike."""

from __future__ import annotations

import shlex
import signal
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as ProgressTask
from rich.table import Column, Table
from rich.text import Text

from bcbridge import _json, _redact
from bcbridge.errors import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BCBridgeError,
    exit_code,
)
from bcbridge.flowconfig import ProjectConfig, default_config
from bcbridge.flows import FlowRunner, RunResult

# moved to bcbridge.reports (the dashboard uses them too); still importable from here
from bcbridge.reports import error_parts as error_parts
from bcbridge.reports import task_failure as task_failure
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
def ctrl_c_stops(
    stop: threading.Event, signals: Sequence[signal.Signals] = (signal.SIGINT,)
) -> Iterator[None]:
    """First Ctrl-C: finish the records in flight, save, stop. Second: stop at once. A service
    (`bcbridge serve`) passes SIGTERM too, which is how systemd and docker stop it."""

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        stderr.print("[yellow]stopping after the records in flight (Ctrl-C again to abort)[/]")

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, earlier in previous.items():
            signal.signal(signum, earlier)


class _Display:
    """One progress line per flow: records read and what became of them."""

    def __init__(self) -> None:
        self.bar = Progress(
            SpinnerColumn(),
            # the flow's name whole (the detail wraps instead)
            TextColumn("{task.description}", table_column=Column(no_wrap=True, min_width=22)),
            TextColumn("{task.completed:>8,.0f} records", table_column=Column(no_wrap=True)),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(table_column=Column(no_wrap=True)),
            console=stderr,
        )
        self.rows: dict[str, Any] = {}

    def update(self, flow: str, counts: Counter[str]) -> None:
        if flow not in self.rows:
            self.rows[flow] = self.bar.add_task(flow, total=None, detail="")
        detail = "  ".join(f"{k} {v:,}" for k, v in counts.items() if k != "read" and v)
        self.bar.update(self.rows[flow], completed=counts.get("read", 0), detail=detail)


@dataclass(frozen=True)
class FailureGroup:
    """Records that failed for one reason: BC's error code (or the stage that stopped them:
    `transform`, `read`, `HTTP 503`, `answer lost`), how many, and the first one's message."""

    reason: str
    count: int
    example: str

    def line(self) -> str:
        return f"{self.count:,} x {self.reason}: {self.example}"


def group_failures(failures: Iterable[tuple[str, str]]) -> list[FailureGroup]:
    """(reason, message) pairs grouped by reason, the most frequent first; each group keeps the
    first message it met as its example (secrets masked, cut to one short line). `run` groups
    its failed tasks with it (`task_failure`); `push` can group its failed records alike."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for reason, message in failures:
        counts[reason] += 1
        examples.setdefault(reason, _one_line(message))
    return [FailureGroup(reason, count, examples[reason]) for reason, count in counts.most_common()]


def _one_line(message: str, limit: int = 160) -> str:
    text = " ".join(_redact.text(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class ExplainedRun(RunResult):
    """A run with what the CLI tells about it: its failed and unknown records grouped by
    reason, and the `--config` words its follow-up commands need (empty for the default
    project file)."""

    failures: list[FailureGroup] = field(default_factory=list)
    config_words: list[str] = field(default_factory=list)

    def commands(self) -> list[str]:
        """The commands that list and retry this run's failed or unknown records."""
        flow, config = ["--flow", self.flow], self.config_words
        commands = []
        if self.counts.get(TaskStatus.FAILED):
            commands.append(_bcbridge("tasks", "list", *flow, "--status", "failed", *config))
            commands.append(_bcbridge("tasks", "retry", "--failed", *flow, *config))
        if self.counts.get(TaskStatus.UNKNOWN):
            commands.append(_bcbridge("tasks", "list", *flow, "--status", "unknown", *config))
        return commands

    def as_json(self) -> dict[str, Any]:
        """The run as `run --json` prints it (documented in `bcbridge run --help`)."""
        return {
            "flow": self.flow,
            "run_id": self.run_id,
            "status": str(self.status),
            "counts": {name: count for name, count in sorted(self.counts.items()) if count},
            "error": self.error and _redact.text(self.error),
            "failures": [
                {"reason": g.reason, "count": g.count, "example": g.example} for g in self.failures
            ],
            "commands": self.commands(),
        }


def _bcbridge(*words: str) -> str:
    return shlex.join(["bcbridge", *words])


def config_words(project: ProjectConfig) -> list[str]:
    """`--config FILE` for the follow-up commands, unless FILE is where they look by default."""
    try:
        default = default_config().resolve() == Path(project.source).resolve()
    except OSError:
        default = False
    return [] if default else ["--config", project.source]


def explain(
    result: RunResult,
    store: Store,
    project: ProjectConfig,
    tasks: Sequence[Task] | None = None,
) -> ExplainedRun:
    """`result` with its failed and unknown records grouped by reason: those of its run, or
    of `tasks` (a retry moves no task to a new run)."""
    failures: list[FailureGroup] = []
    if result.failed:
        try:
            troubled = _troubled(result, store, tasks)
        except BCBridgeError:
            troubled = []  # the store broke: the run's own error says so
        failures = group_failures(task_failure(task) for task in troubled)
    own = {f.name: getattr(result, f.name) for f in fields(result)}
    return ExplainedRun(**own, failures=failures, config_words=config_words(project))


GROUPED_AT_MOST = 10_000  # tasks read per status to group a run's reasons (memory: payloads)


def _troubled(result: RunResult, store: Store, tasks: Sequence[Task] | None) -> list[Task]:
    statuses = (TaskStatus.FAILED, TaskStatus.UNKNOWN)
    if tasks is not None:
        again = (store.task(task.id) for task in tasks if task.flow == result.flow)
        return [task for task in again if task is not None and task.status in statuses]
    if result.run_id is None:
        return []
    return [
        task
        for status in statuses
        for task in store.tasks(result.flow, status, limit=GROUPED_AT_MOST)
        if task.run_id == result.run_id
    ]


def summary(results: Sequence[RunResult]) -> None:
    """One row per run (only the outcome columns some run has a count in), then each run's
    error, and for runs whose records failed: the reasons grouped and the commands to go on."""
    columns = [
        c
        for c in (*COLUMNS, TaskStatus.FAILED, TaskStatus.UNKNOWN)
        if any(r.counts.get(c) for r in results)
    ]
    table = Table(title="Runs")
    table.add_column("Flow", no_wrap=True)
    table.add_column("Run", justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    for name in columns:
        table.add_column(name, justify="right")
    for result in results:
        colours: dict[str, str] = {
            RunStatus.OK: "green",
            RunStatus.INTERRUPTED: "yellow",
            RunStatus.BUSY: "yellow",
        }
        colour = colours.get(result.status, "red")
        table.add_row(
            escape(result.flow),
            "-" if result.run_id is None else str(result.run_id),
            f"[{colour}]{result.status}[/]",
            *(f"{result.counts.get(name, 0):,}" for name in columns),
        )
    print_table(table, err=True)
    for result in results:
        if result.error:
            stderr.print(
                f"[red]{escape(result.flow)}: {escape(_redact.text(result.error))}[/]",
                soft_wrap=True,
            )
        if isinstance(result, ExplainedRun):
            print_failures(result.flow, result.failures, result.commands(), total=result.failed)
        if lost := result.counts.get(TaskStatus.UNKNOWN):
            config = getattr(result, "config_words", [])
            words = "".join(f" {shlex.quote(word)}" for word in config)
            text = _LOST.format(count=lost, flow=result.flow, config=words)
            stderr.print(f"[red]{escape(result.flow)}: {escape(text)}[/]", soft_wrap=True)


def print_failures(
    label: str,
    failures: Sequence[FailureGroup],
    commands: Sequence[str],
    *,
    total: int | None = None,
    outcome: str = "not delivered",
) -> None:
    """On stderr: how many records failed (`total`, else the groups' sum), grouped by reason
    with one example each, and the exact commands that list and retry them."""
    grouped = sum(group.count for group in failures)
    total = max(total or 0, grouped)
    if not total:
        return
    by_reason = ", by reason" if failures else ""  # none when the store could not tell
    stderr.print(
        f"[red]{escape(label)}: {total:,} record(s) {outcome}{by_reason}:[/]", soft_wrap=True
    )
    for group in failures:
        stderr.print(f"  {escape(group.line())}", soft_wrap=True, highlight=False)
    if failures and grouped < total:
        stderr.print(f"  (the reasons of the latest {grouped:,} of them)", soft_wrap=True)
    for command in commands:
        stderr.print(f"  {escape(command)}", soft_wrap=True, highlight=False)


_LOST = (
    "{count:,} record(s) sent but their answer was lost, and BC's state does not tell whether "
    "it was carried out; they are not sent again by themselves. See them with `bcbridge tasks "
    "list --status unknown --flow {flow}{config}`, check BC, then `bcbridge tasks retry ID` "
    "(send it) or `bcbridge tasks skip ID` (it is done)"
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
    for, `wait` seconds). The results are `ExplainedRun`s: their failures grouped."""
    display = _Display()
    runner = FlowRunner(project, store, stop=stop, progress=display.update)
    results: list[RunResult] = []
    with display.bar:
        for name in names:
            display.update(name, Counter())
            if wait is not None:
                _say_whom_we_wait_for(store, name)
            result = anyio.run(partial(runner.run, name, wait=wait))
            results.append(explain(result, store, project))
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


def task_table(tasks: Sequence[Task]) -> Table:
    """Tasks as a table whose ids, flow names and record keys are never cut or wrapped (print
    it with `print_table`, which gives them room); the last error wraps."""
    table = Table(title="Tasks")
    for column in ("Id", "Flow", "Key", "Status"):
        table.add_column(column, no_wrap=True, justify="right" if column == "Id" else "left")
    table.add_column("Attempts", justify="right")
    table.add_column("Updated")
    table.add_column("Last error", overflow="fold")
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


TASK_OPTIONAL_COLUMNS = ("Updated", "Attempts")  # left out first when the terminal is narrow
_UNBOUNDED = 100_000  # columns: wide enough to measure a table's natural width


def print_table(
    table: Table, *, err: bool = False, wide: bool = False, optional: Sequence[str] = ()
) -> None:
    """Print `table` so that its no_wrap columns (names a user types: flows, task ids, GUIDs)
    are never cut or wrapped, whatever the width.

    The columns named in `optional` are left out, last first, while the table does not fit the
    console (`--wide`: always shown). On a terminal the other columns wrap to fit; if the names
    alone are wider than the terminal, the table is printed wider (the terminal folds the lines,
    the names stay whole). Piped, nothing wraps: one line per row, whatever its length."""
    console = Console(stderr=err)
    left_out: list[str] = []
    if not wide:
        for header in reversed(optional):
            if _natural(console, table).minimum <= console.width:
                break
            table.columns[:] = [c for c in table.columns if c.header != header]
            left_out.insert(0, header)
    if left_out:
        table.caption = f"left out for want of room: {', '.join(left_out)} (--wide shows them)"
    natural = _natural(console, table)
    piped = not console.is_terminal
    needed = natural.maximum if wide or piped else natural.minimum
    if needed > console.width:
        console = Console(stderr=err, width=needed)
    console.print(table)


def _natural(console: Console, table: Table) -> Measurement:
    return Measurement.get(console, console.options.update_width(_UNBOUNDED), table)


def print_json(data: object, *, lines: bool = False) -> None:
    """`data` as one JSON document on stdout, and nothing else there (for `--json`); `lines`:
    on one line, for commands that print one document per round (JSON Lines)."""
    typer.echo(_json.dumps(data, option=0 if lines else _json.OPT_INDENT_2).decode())


class _BarOrSpinner(ProgressColumn):
    """A bar when the total is known; a spinner otherwise, never a bar that is full from the
    first second."""

    def __init__(self) -> None:
        super().__init__()
        self.bar, self.spinner = BarColumn(), SpinnerColumn()

    def render(self, task: ProgressTask) -> RenderableType:
        return self.bar.render(task) if task.total is not None else self.spinner.render(task)


class _Records(ProgressColumn):
    """``1,234/10,000 records`` when the total is known, ``1,234 records`` otherwise."""

    def render(self, task: ProgressTask) -> RenderableType:
        if task.total is None:
            return Text(f"{task.completed:,.0f} records")
        return Text(f"{task.completed:,.0f}/{task.total:,.0f} records")


class _Remaining(TimeRemainingColumn):
    def render(self, task: ProgressTask) -> Text:
        return super().render(task) if task.total is not None else Text("")


def progress_bar() -> Progress:
    """A records bar on stderr for pull and push: determinate once a task's total is known
    (BC's count, the lines of an input file), a spinner until then."""
    return Progress(
        TextColumn("{task.description}"),
        _BarOrSpinner(),
        _Records(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        _Remaining(),
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
