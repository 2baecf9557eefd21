"""The flows of `bcbridge serve`: runs in worker threads (Run now, the schedule), their live
progress, and the scheduler.

A run works as `bcbridge run` does: a `FlowRunner` on the project's store, under the flow's
lease (so another process never runs the flow at once), stopped by the shared `stop` event
after the chunk in flight. Each run has a thread of its own with its own event loop, as the
store's calls block: the dashboard's pages stay quick while flows run.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from bcbridge import _redact
from bcbridge.flowconfig import ProjectConfig, load_project
from bcbridge.flows import ClientFactory, FlowRunner, RunResult
from bcbridge.schedule import parse_schedule
from bcbridge.store import RunStatus, Store, Task

if TYPE_CHECKING:
    from bcbridge.engine import EngineClient

log = logging.getLogger("bcbridge.serve")
SERVER_LOGGERS = ("bcbridge.serve", "uvicorn.error")  # where an unexpected error is logged
RECHECK = 0.5  # seconds between the scheduler's looks at the clock, the stop and a reload


class MaskSecrets(logging.Filter):
    """Log records with their secrets masked, the traceback too (a message may quote one);
    the traceback is kept only with BCBRIDGE_DEBUG=1, as the CLI does."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            if os.environ.get("BCBRIDGE_DEBUG", "") not in ("", "0"):
                message += "\n" + "".join(traceback.format_exception(*record.exc_info))
            else:
                error = record.exc_info[1]
                message += f": {type(error).__name__}: {error} (BCBRIDGE_DEBUG=1 for the traceback)"
        record.msg, record.args = _redact.text(message), None
        record.exc_info, record.exc_text = None, None
        return True


def mask_secrets_in_logs() -> None:
    """Mask secrets in what the server and the runs log (once per process)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskSecrets) for f in logger.filters):
            logger.addFilter(MaskSecrets())


Work = Callable[[FlowRunner], Awaitable[RunResult]]  # what a flow's thread does: run, retry


@dataclass
class Running:
    """A run under way in this process: when it started and its counts so far."""

    started_at: datetime
    counts: Counter[str] = field(default_factory=Counter)


class FlowService:
    """Starts the project's flows in threads, one run per flow at a time in this process (the
    store's lease keeps other processes out), and keeps what the pages show about them."""

    def __init__(
        self,
        project: ProjectConfig,
        store: Store,
        stop: threading.Event,
        *,
        client_factory: ClientFactory | None = None,
        engine: EngineClient | None = None,
    ):
        self.project = project
        self.engine = engine  # engine: procrastinate: runs are deferred to `bcbridge worker`s
        self.store = store
        self.stop = stop
        self.client_factory = client_factory
        self.finished: dict[str, RunResult] = {}  # the last run of each flow started here
        self._running: dict[str, Running] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._schedules: dict[str, str] = {}  # the schedules the scheduler planned, by flow

    def reload_project(self) -> None:
        """Load the project file again (after the dashboard saved a change): the next run
        and the scheduler's next start use it; a run under way keeps the project it began with.
        A file that no longer loads leaves the project as it was (ConfigError)."""
        self.project = load_project(Path(self.project.source))

    def runner(self, progress: Callable[[str, Counter[str]], None] | None = None) -> FlowRunner:
        """A FlowRunner on the project and store, stopped by the service's stop event."""
        return FlowRunner(
            self.project,
            self.store,
            stop=self.stop,
            progress=progress,
            client_factory=self.client_factory,
        )

    def start(self, name: str, work: Work | None = None) -> bool:
        """Start a run of flow `name` (or `work` on it, e.g. a retry of its tasks); False
        (nothing queued) when one is under way here or the service is stopping. With an
        engine, the run is deferred to the workers (False: one is queued already)."""
        if self.engine is not None and work is None:
            return not self.stop.is_set() and self.engine.defer_run(name)
        with self._lock:
            if name in self._running or self.stop.is_set():
                return False
            self._running[name] = Running(datetime.now(UTC))
            thread = threading.Thread(
                target=self._run, args=(name, work), name=f"flow {name}", daemon=True
            )
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return True

    def _run(self, name: str, work: Work | None) -> None:
        runner = self.runner(self._progress)
        try:
            result = anyio.run(work or _run_flow(name), runner)
        except BaseException as exc:  # a bug: recorded as an error run by the runner
            log.exception("flow %s stopped on an unexpected error", name)
            result = RunResult(name, None, RunStatus.ERROR, Counter(), error=type(exc).__name__)
        with self._lock:
            self.finished[name] = result
            del self._running[name]

    def _progress(self, name: str, counts: Counter[str]) -> None:
        with self._lock:
            if name in self._running:
                self._running[name].counts = Counter(counts)

    def running(self, name: str) -> Running | None:
        """The run of `name` under way in this process, if any (a copy)."""
        with self._lock:
            run = self._running.get(name)
            return run and Running(run.started_at, Counter(run.counts))

    def busy(self) -> list[str]:
        """The flows running in this process."""
        with self._lock:
            return sorted(self._running)

    def retry(self, tasks: Sequence[Task]) -> list[RunResult]:
        """Deliver tasks again, as `bcbridge tasks retry` does (blocks: call it in a thread);
        with an engine, deferred to the workers (each flow's result is `queued`)."""
        if self.engine is not None:
            return [RunResult(name, None, "queued", Counter()) for name in self.start_retry(tasks)]
        return anyio.run(self.runner().retry, list(tasks))

    def start_retry(self, tasks: Sequence[Task]) -> dict[str, bool]:
        """Deliver tasks again in the background, one thread per flow as for a run (its
        progress and result shown alike); per flow, False when it is running here already."""
        started = {}
        for name in sorted({task.flow for task in tasks}):
            mine = [task for task in tasks if task.flow == name]
            if self.engine is not None:
                started[name] = self.engine.defer_retry(name, [task.id for task in mine])
                continue

            async def retry(runner: FlowRunner, mine: list[Task] = mine) -> RunResult:
                (result,) = await runner.retry(mine)
                return result

            started[name] = self.start(name, retry)
        return started

    def join(self, timeout: float | None = None) -> None:
        """Wait for the runs under way (after `stop` is set, they end after their chunk)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    async def schedule(self) -> None:
        """Start each flow that has a `schedule:` at its times until `stop` is set. The first
        start is one interval (or the next cron time) after now; a start that finds the flow
        still running is dropped, never queued, and missed times are not made up. A project
        reloaded meanwhile (`reload_project`) is planned again: a flow whose schedule is
        unchanged keeps its next time, a new or changed schedule starts from now."""
        planned: ProjectConfig | None = None
        plans: dict[str, Callable[[datetime], datetime]] = {}
        due: dict[str, datetime] = {}
        while not self.stop.is_set():
            if self.project is not planned:
                planned = self.project
                plans, due = self._plan(planned, plans, due)
            now = datetime.now(UTC)
            name = min(due, key=lambda flow: due[flow]) if due else None
            if name is None or due[name] > now:
                wait = (due[name] - now).total_seconds() if name else RECHECK
                await anyio.sleep(min(wait, RECHECK))
                continue
            if self.engine is not None and not self.engine.fire_once(name, due[name]):
                log.info("flow %s: another serve fired its time %s", name, due[name])
            elif not self.start(name):
                log.info("flow %s is still running: its scheduled start is dropped", name)
            following = plans[name](due[name])  # a steady beat, from the time it was due
            due[name] = following if following > now else plans[name](now)

    def _plan(
        self,
        project: ProjectConfig,
        plans: dict[str, Callable[[datetime], datetime]],
        due: dict[str, datetime],
    ) -> tuple[dict[str, Callable[[datetime], datetime]], dict[str, datetime]]:
        """The schedules of `project`, and when each flow is next due."""
        now = datetime.now(UTC)
        # a flow reading a webhook incoming has its reconciliation pull as schedule
        timed = {name: project.schedule_of(name) for name in project.flows}
        schedules = {name: text for name, text in timed.items() if text}
        new_plans, new_due = {}, {}
        for name, text in schedules.items():
            same = self._schedules.get(name) == text and name in due
            new_plans[name] = plans[name] if same else parse_schedule(text)
            new_due[name] = due[name] if same else new_plans[name](now)
        self._schedules = schedules
        return new_plans, new_due


def _run_flow(name: str) -> Work:
    """A flow's run, as `bcbridge run NAME` does it."""

    async def run(runner: FlowRunner) -> RunResult:
        return await runner.run(name)

    return run
