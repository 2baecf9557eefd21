"""Flows on `bcbridge worker` processes: Procrastinate jobs over the project's PostgreSQL store.

With `engine: procrastinate` (and a PostgreSQL `store:`), `bcbridge serve` defers runs as jobs
and any number of `bcbridge worker` processes, on any machines, run them. Procrastinate keeps the
jobs in the store's database (its own tables, created at first use); the guarantees of a run stay
those of `bcbridge.flows`: the flow's lease, tasks found by payload hash, the cursor saved only
over delivered records.

A run is a job (`bcbridge.run_flow`, Procrastinate lock and queueing lock per flow: one run per
flow at a time, one more queued at most). It reads and registers the records chunk by chunk, as
`FlowRunner` does, but hands each chunk's tasks to a job of its own (`bcbridge.deliver_chunk`)
that any worker picks up, and keeps up to `WINDOW` of them out at once. The cursor moves only over
the contiguous prefix of delivered chunks (commit in order): chunk 7 delivered before chunk 6
waits for it. While it waits, the run delivers a chunk nobody has started itself (it cancels that
job first, so nobody else does): one worker alone still gets through.

Safety when workers die or stall:
- A chunk is delivered under a lease of its own (`<flow>#<run>.<seq>` in the leases table), taken
  before the chunk checks that its run still holds the flow's lease; a new run of the flow takes
  the flow's lease first and then waits until no chunk lease of the flow is alive. So a chunk of
  a dead run never delivers next to the run that replaced it.
- A worker killed mid-job leaves its job `doing`; every worker looks for jobs of workers that
  stopped heartbeating and puts them back (`recover_stalled`). The next attempt takes the lease
  over (at once when the dead process was on this machine, else after the TTL) and goes on from
  the tasks' statuses: done ones are skipped, those in flight are sent again, matched on their
  key first (or, for bound actions, left for the run's probe of BC).
- A worker that lost its lease (its heartbeat stalled past the TTL) stops before it writes:
  the chunk's lease and its run's hold on the flow are checked before each `$batch`, so a
  worker frozen while another run took the flow over sends nothing more when it wakes.

Writers to a file write in order, so a flow into a file runs whole in its run's job (no split).

Webhooks: `serve` receives BC's notifications and keeps them in the store; a job
(`bcbridge.process_notifications`, under the flow's lock) runs the flow over them on a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections import Counter, deque
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import procrastinate
import psycopg
import sqlalchemy as sa
from procrastinate import exceptions as procrastinate_errors

from bcbridge.errors import ConfigError
from bcbridge.flowconfig import FlowConfig, ProjectConfig, load_project
from bcbridge.flows import (
    ClientFactory,
    FlowRunner,
    RunResult,
    SourceFactory,
    _chunks,
    _Clients,
    _ReaderSource,
    _sharing_bcs_budget,
    _Target,
)
from bcbridge.sinks import BadRecord, sql_target
from bcbridge.store import (
    FlowBusy,
    Lease,
    LeaseKeeper,
    LeaseLost,
    RunStatus,
    Store,
    StoreError,
    TaskStatus,
    TaskUpdate,
    _explain,
)
from bcbridge.transform import Chain

__all__ = [
    "ENGINES",
    "WINDOW",
    "EngineClient",
    "SplitRunner",
    "WorkerState",
    "conninfo",
    "ensure_schema",
    "list_workers",
    "make_app",
    "run_worker",
]

log = logging.getLogger("bcbridge.worker")

ENGINES = ("inline", "procrastinate")
QUEUE = "bcbridge"
RUN_TASK = "bcbridge.run_flow"
CHUNK_TASK = "bcbridge.deliver_chunk"
RETRY_TASK = "bcbridge.retry_tasks"
NOTIFIED_TASK = "bcbridge.process_notifications"
WINDOW = 12  # chunks of one run out with the workers at once (its memory: WINDOW chunks)
POLL = 0.1  # seconds between a run's looks at its chunks
STALLED_AFTER = 10.0  # seconds without a worker's heartbeat before its jobs are put back
_SCHEMA_LOCK = 0x6263627770726F63  # "bcbwproc": the advisory lock around Procrastinate's schema
# a run that stops on an error is tried again (a restarted PostgreSQL, a lease held elsewhere)
RUN_RETRY = procrastinate.RetryStrategy(max_attempts=6, wait=2, exponential_wait=2)
CHUNK_RETRY = procrastinate.RetryStrategy(max_attempts=8, wait=1, exponential_wait=2)


class JobFailed(Exception):
    """A job that must be tried again (Procrastinate's retry): the run or chunk did not end."""


# --- the database ---------------------------------------------------------------------------


def conninfo(store_url: str) -> str:
    """The libpq URL of a PostgreSQL store (Procrastinate connects with psycopg 3, as the store
    does with `postgresql+psycopg://`)."""
    url = sa.engine.make_url(store_url)
    if url.get_backend_name() != "postgresql":
        raise ConfigError(
            "engine: procrastinate needs a PostgreSQL `store:` "
            "(postgresql+psycopg://user@host/db); set `store:` to one, or `engine: inline`",
            field="store",
        )
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_schema(store_url: str) -> None:
    """Create Procrastinate's tables in the store's database unless they are there. Processes
    starting at once take turns on an advisory lock, so the schema is applied once."""
    from procrastinate.schema import SchemaManager

    try:
        with psycopg.connect(conninfo(store_url)) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            row = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
            if row is None or row[0] is None:
                conn.execute(SchemaManager.get_schema())
            conn.commit()
    except psycopg.Error as exc:
        raise _explain(store_url, exc) from None


@dataclass
class WorkerState:
    """What the jobs of one worker process work with: its project, store and stop event."""

    project: ProjectConfig
    store: Store
    stop: threading.Event = field(default_factory=threading.Event)
    client_factory: ClientFactory | None = None
    window: int = WINDOW
    # BC clients kept open across the worker's jobs (its connections, token, companies), so a
    # chunk does not pay a TLS handshake and a company lookup; set while the worker runs
    clients: _Clients | None = None

    _stamp: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._stamp = _file_stamp(self.project)  # the project file's, as it was loaded

    def runner(self, app: procrastinate.App) -> SplitRunner:
        self._follow_the_file()
        return SplitRunner(
            self.project,
            self.store,
            app,
            stop=self.stop,
            client_factory=self.client_factory,
            clients=self.clients,
            window=self.window,
        )

    def _follow_the_file(self) -> None:
        """Load the project again when its file changed (the dashboard saved a fixed transform,
        a new client secret), so the next job works with it; a file that does not load now
        leaves the last good project in use, with a warning in the worker's log."""
        stamp = _file_stamp(self.project)
        if stamp is None or stamp == self._stamp:
            return  # unchanged, or not a file (a project built in code, a file gone a moment)
        self._stamp = stamp
        path = Path(self.project.source)
        try:
            self.project = load_project(path)
        except ConfigError as exc:
            log.warning("%s changed but does not load; jobs keep the last good one: %s", path, exc)
            return
        if self.clients is not None:
            self.clients.project = self.project
        log.info("%s changed: loaded again", path)


def _file_stamp(project: ProjectConfig) -> bytes | None:
    """The digest of the project file's content (a save in the same clock tick, of the same
    size, still counts); None when it has none."""
    try:
        return hashlib.sha256(Path(project.source).read_bytes()).digest()
    except OSError:
        return None


def make_app(store_url: str) -> procrastinate.App:
    """The Procrastinate app of a project's store, with bcbridge's tasks."""
    connector = procrastinate.PsycopgConnector(conninfo=conninfo(store_url))
    app = procrastinate.App(connector=connector)
    app.task(name=RUN_TASK, pass_context=True, retry=RUN_RETRY, queue=QUEUE)(_run_flow_job)
    app.task(name=CHUNK_TASK, pass_context=True, retry=CHUNK_RETRY, queue=QUEUE)(_deliver_chunk_job)
    app.task(name=RETRY_TASK, pass_context=True, retry=RUN_RETRY, queue=QUEUE)(_retry_job)
    app.task(name=NOTIFIED_TASK, pass_context=True, retry=RUN_RETRY, queue=QUEUE)(_notified_job)
    return app


def _state(context: procrastinate.JobContext) -> WorkerState:
    state = (context.additional_context or {}).get("bcbridge")
    assert isinstance(state, WorkerState), "bcbridge jobs run in `bcbridge worker`"
    return state


# --- the jobs -------------------------------------------------------------------------------


async def _run_flow_job(context: procrastinate.JobContext, flow: str) -> None:
    state = _state(context)
    result = await state.runner(context.app).run(flow, wait=2 * state.store.lease_ttl)
    log.info("run of %s ended %s %s", flow, result.status, dict(result.counts))
    _retry_unless_ended(flow, result)
    if result.status == RunStatus.INTERRUPTED and state.stop.is_set():
        # this worker is stopping: the rest of the run goes to another worker
        with contextlib.suppress(procrastinate_errors.AlreadyEnqueued):
            await _configure_run(context.app, flow).defer_async(flow=flow)


async def _deliver_chunk_job(
    context: procrastinate.JobContext,
    flow: str,
    run_id: int,
    holder: str,
    seq: int,
    task_ids: list[int],
) -> None:
    state = _state(context)
    await state.runner(context.app).deliver_chunk(flow, run_id, holder, seq, task_ids)


async def _retry_job(context: procrastinate.JobContext, flow: str, task_ids: list[int]) -> None:
    state = _state(context)
    tasks = state.store.tasks_by_id(task_ids)
    for result in await state.runner(context.app).retry(tasks, wait=2 * state.store.lease_ttl):
        _retry_unless_ended(flow, result)


async def _notified_job(context: procrastinate.JobContext, flow: str) -> None:
    from bcbridge.webhooks import WebhookStore, process_work  # serve's side, loaded on use

    state = _state(context)
    notifications = WebhookStore(state.store)
    if not notifications.open_notifications(flow, limit=1):
        return  # a job queued while the one before ran: that one took them all
    result = await process_work(flow, notifications)(state.runner(context.app))
    _retry_unless_ended(flow, result)  # the notifications wait in the store meanwhile


def _retry_unless_ended(flow: str, result: RunResult) -> None:
    """A run that stopped on an error (a restarted PostgreSQL, BC unreachable) or found its
    flow busy elsewhere fails its job, which Procrastinate tries again."""
    if result.status in (RunStatus.ERROR, RunStatus.BUSY):
        raise JobFailed(f"flow {flow}: {result.error}")


def _configure_run(app: procrastinate.App, flow: str) -> Any:
    # lock: one run of the flow at a time; queueing lock: one more waiting at most
    return app.configure_task(RUN_TASK, lock=f"flow:{flow}", queueing_lock=f"run:{flow}")


# --- a run split over workers -------------------------------------------------------------


@dataclass
class _Chunk:
    seq: int
    records: list[dict[str, Any]]  # for the cursor, moved over them once delivered
    task_ids: list[int]
    job_id: int | None  # None: nothing to deliver, or delivered by the run itself
    # the records as read, by task, when the flow's own transformers made the payloads
    as_read: dict[int, dict[str, Any]] = field(default_factory=dict)


class SplitRunner(FlowRunner):
    """A `FlowRunner` whose chunks are delivered by jobs that any worker runs."""

    def __init__(
        self,
        project: ProjectConfig,
        store: Store,
        app: procrastinate.App,
        *,
        stop: threading.Event | None = None,
        client_factory: ClientFactory | None = None,
        clients: _Clients | None = None,
        window: int = WINDOW,
    ):
        super().__init__(project, store, stop=stop, client_factory=client_factory, clients=clients)
        self.app = app
        self.window = max(1, window)

    async def _work(
        self,
        name: str,
        flow: FlowConfig,
        chain: Chain,
        keeper: LeaseKeeper,
        result: RunResult,
        given: SourceFactory | None = None,
        keep_refused_as_read: bool = False,
    ) -> None:
        if given is not None or not _splittable(flow):  # notifications' records: one worker
            await super()._work(name, flow, chain, keeper, result, given, keep_refused_as_read)
            return
        assert result.run_id is not None
        run_id = result.run_id
        await self._drain(name, keeper)
        async with AsyncExitStack() as stack:
            clients = self._clients(stack)
            source = await self._source(name, flow, clients)
            target = await self._target(name, flow, clients, stack)
            await self._settle_unclear(name, run_id, target, result.counts)
            out: deque[_Chunk] = deque()
            seq = 0
            try:
                async for records in _chunks(source.records(), flow.chunk_size):
                    keeper.check()
                    todo, as_read = self._register_chunk(
                        name, run_id, records, chain, source, target, result.counts
                    )
                    seq += 1
                    readable = [r for r in records if not isinstance(r, BadRecord)]
                    chunk = _Chunk(seq, readable, [task.id for task in todo], None)
                    if keep_refused_as_read:
                        chunk.as_read = {task.id: as_read[task.id] for task in todo}
                    if todo and seq == 1 and flow.target.writer is not None:
                        # first, alone: the SQL table is created once
                        await self._deliver_here(name, run_id, keeper.lease, chunk)
                    elif todo:
                        chunk.job_id = await self._defer_chunk(name, run_id, keeper.lease, chunk)
                    else:
                        self.store.chunk_done(name, run_id, seq, {})
                    out.append(chunk)
                    await self._commit_delivered(name, run_id, keeper, out, source, result)
                    while len(out) >= self.window:
                        await self._help_or_wait(name, run_id, keeper, out, source, result)
                    if self.stop.is_set():
                        result.status = RunStatus.INTERRUPTED
                        break
                while out:  # the end of the input, or a stop: what is out is seen delivered
                    await self._help_or_wait(name, run_id, keeper, out, source, result)
            finally:
                await self._call_back(out)
            if result.status == RunStatus.RUNNING and isinstance(source, _ReaderSource):
                self._close_lines_gone(name, run_id)
        self.store.drop_chunks(run_id)

    async def _drain(self, name: str, keeper: LeaseKeeper) -> None:
        """Wait until no chunk of an earlier run of the flow is being delivered (a worker that
        took a chunk's lease before this run took the flow's finishes it, or its lease dies)."""
        while self.store.live_leases(f"{name}#"):
            keeper.check()
            await anyio.sleep(min(1.0, self.store.lease_ttl / 10))

    async def _defer_chunk(self, name: str, run_id: int, lease: Lease, chunk: _Chunk) -> int:
        job = self.app.configure_task(CHUNK_TASK, priority=1)  # chunks before new runs
        task_ids: list[Any] = list(chunk.task_ids)  # JSON for the job's arguments
        job_id: int = await job.defer_async(
            flow=name, run_id=run_id, holder=lease.holder, seq=chunk.seq, task_ids=task_ids
        )
        return job_id

    async def _commit_delivered(
        self,
        name: str,
        run_id: int,
        keeper: LeaseKeeper,
        out: deque[_Chunk],
        source: Any,
        result: RunResult,
    ) -> bool:
        """Move the cursor over the delivered chunks at the head, in order; whether any was."""
        if not out:
            return False
        done = self.store.chunks_done(run_id)
        moved = False
        while out and out[0].seq in done:
            chunk = out.popleft()
            keeper.check()  # the cursor is the flow's: only its lease holder moves it
            if done[chunk.seq].get(TaskStatus.FAILED.value):
                self._keep_refused_as_read(chunk)
            source.commit(chunk.records)
            result.counts.update(done[chunk.seq])
            moved = True
        if moved:
            self.progress(name, result.counts)
        else:
            self._check_jobs(name, out, done)
        return moved

    def _keep_refused_as_read(self, chunk: _Chunk) -> None:
        """The records BC refused in a chunk a worker delivered hold their record as read
        again, as in a run on one process (`FlowRunner.run`): the worker had only the tasks,
        the run has the records. A retry then transforms them with the flow as it is then."""
        refused = [
            task
            for task in self.store.tasks_by_id(list(chunk.as_read))
            if task.status == TaskStatus.FAILED and task.stage == "send"
        ]
        self.store.settle(
            [
                TaskUpdate(
                    task.id,
                    task.status,
                    error=task.last_error,
                    payload=chunk.as_read[task.id],
                    stage="transform",
                )
                for task in refused
            ]
        )

    def _check_jobs(self, name: str, out: deque[_Chunk], done: dict[int, Any]) -> None:
        """A chunk job that Procrastinate gave up on (its retries spent) stops the run: its
        records are not delivered, the cursor stays before them, the next run sends them."""
        ids = [chunk.job_id for chunk in out if chunk.job_id is not None and chunk.seq not in done]
        if not ids:
            return
        statuses = _job_statuses(self.store, ids)
        failed = [job for job, status in statuses.items() if status in ("failed", "aborted")]
        if failed:
            raise StoreError(
                f"flow {name!r}: chunk job {failed[0]} failed on a worker (see its log, "
                "`bcbridge workers list`); the cursor stays before it: run the flow again"
            )

    async def _help_or_wait(
        self,
        name: str,
        run_id: int,
        keeper: LeaseKeeper,
        out: deque[_Chunk],
        source: Any,
        result: RunResult,
    ) -> None:
        """Deliver here a chunk that no worker has started, else wait a moment; then commit."""
        if await self._commit_delivered(name, run_id, keeper, out, source, result):
            return
        waiting = [chunk for chunk in out if chunk.job_id is not None]
        statuses = _job_statuses(self.store, [chunk.job_id for chunk in waiting if chunk.job_id])
        for chunk in waiting:
            if statuses.get(chunk.job_id or 0) != "todo":
                continue
            if await self.app.job_manager.cancel_job_by_id_async(chunk.job_id or 0):
                chunk.job_id = None  # nobody else will: it is ours
                await self._deliver_here(name, run_id, keeper.lease, chunk)
                break
        else:
            await anyio.sleep(POLL)
        await self._commit_delivered(name, run_id, keeper, out, source, result)

    async def _deliver_here(self, name: str, run_id: int, lease: Lease, chunk: _Chunk) -> None:
        await self.deliver_chunk(name, run_id, lease.holder, chunk.seq, chunk.task_ids)

    async def _call_back(self, out: deque[_Chunk]) -> None:
        """On the way out (an error, the lease lost): chunk jobs not started are cancelled; those
        started see that their run is over (the flow's lease) and stop unwritten or finish."""
        for chunk in out:
            if chunk.job_id is not None:
                with contextlib.suppress(Exception):
                    await self.app.job_manager.cancel_job_by_id_async(chunk.job_id)

    async def deliver_chunk(
        self, name: str, run_id: int, holder: str, seq: int, task_ids: Sequence[int]
    ) -> None:
        """Deliver the tasks of chunk `seq` of run `run_id` under the chunk's lease; nothing
        when that run no longer holds the flow's lease (it died and another replaced it)."""
        lease = await self._chunk_lease(f"{name}#{run_id}.{seq}")
        with LeaseKeeper(self.store, lease) as keeper:

            def guard() -> None:
                """Write only while this chunk's lease and its run's hold on the flow last: a
                worker that stalled may renew the chunk's lease on waking (nobody takes it),
                but a run that replaced its run holds the flow and delivers the chunk itself."""
                keeper.check()
                current = self.store.lease(name)
                if current is None or current.holder != holder:
                    raise LeaseLost(f"flow {name!r}: run {run_id} was replaced by another run")

            try:
                guard()
            except LeaseLost:
                log.info(
                    "chunk %s of run %s of %s: the run is over, not delivered", seq, run_id, name
                )
                return
            if seq in self.store.chunks_done(run_id):
                return  # an earlier attempt delivered it and died before the job ended
            flow = self.project.flow(name)
            counts: Counter[str] = Counter()
            async with AsyncExitStack() as stack:
                target = await self._target(name, flow, self._clients(stack), stack)
                todo = self._still_to_deliver(task_ids, target, counts)
                guard()  # lost (stalled past the TTL): stop before writing
                await self._deliver(todo, None, {}, target, counts, guard=guard)
            guard()
            self.store.chunk_done(name, run_id, seq, {k: v for k, v in counts.items() if v})

    def _still_to_deliver(
        self, task_ids: Sequence[int], target: _Target, counts: Counter[str]
    ) -> list[Any]:
        """The chunk's tasks an earlier attempt did not settle: pending ones, and those it left
        `sending` when the target matches first (a bound action's wait for the run's probe)."""
        todo = []
        for task in self.store.tasks_by_id(task_ids):
            if task.status == TaskStatus.PENDING or (
                task.status == TaskStatus.SENDING and target.repeatable
            ):
                todo.append(task)
            elif task.status == TaskStatus.SENDING:
                counts[TaskStatus.UNKNOWN.value] += 1
            else:
                counts[task.status] += 1  # settled by an earlier attempt of this chunk
        return todo

    async def _chunk_lease(self, key: str) -> Lease:
        """The chunk's lease, waited for while an earlier attempt's holder lives."""
        while True:
            try:
                return self.store.acquire_lease(key)
            except FlowBusy:
                pass
            await anyio.sleep(min(1.0, self.store.lease_ttl / 10))


def _splittable(flow: FlowConfig) -> bool:
    """Chunks may be delivered side by side: to BC, or to a SQL table (keyed writes). A file
    is written in order, by one process."""
    writer = flow.target.writer
    return writer is None or sql_target(writer) is not None


def _job_statuses(store: Store, ids: Sequence[int]) -> dict[int, str]:
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, status FROM procrastinate_jobs WHERE id = ANY(:ids)"),
                {"ids": list(ids)},
            ).all()
    except sa.exc.SQLAlchemyError as exc:
        raise _explain(store.url, exc) from None
    return {int(job_id): str(status) for job_id, status in rows}


# --- deferring (serve) --------------------------------------------------------------------


class EngineClient:
    """What `bcbridge serve` uses with `engine: procrastinate`: it defers runs and retries as
    jobs (never runs them itself), and fires each scheduled time once across processes."""

    def __init__(self, store: Store):
        self.store = store
        ensure_schema(store.url)
        self.app = make_app(store.url)
        self.app.open()

    def close(self) -> None:
        self.app.close()

    def defer_run(self, flow: str) -> bool:
        """Queue a run of `flow`; False when one is queued already (not started yet)."""
        return self._defer(_configure_run(self.app, flow), flow=flow)

    def defer_notified(self, flow: str) -> bool:
        """Queue a run of `flow` over the notifications BC sent that wait in the store (all of
        them when it starts); False when one is queued already."""
        job = self.app.configure_task(
            NOTIFIED_TASK, lock=f"flow:{flow}", queueing_lock=f"notified:{flow}"
        )
        return self._defer(job, flow=flow)

    def defer_retry(self, flow: str, task_ids: Sequence[int]) -> bool:
        """Queue a retry of tasks of `flow` (under the flow's Procrastinate lock)."""
        job = self.app.configure_task(RETRY_TASK, lock=f"flow:{flow}")
        return self._defer(job, flow=flow, task_ids=list(task_ids))

    def _defer(self, job: Any, **arguments: Any) -> bool:
        """Queue `job`; False when its queueing lock says one is queued already."""
        try:
            job.defer(**arguments)
        except procrastinate_errors.AlreadyEnqueued:
            return False
        except procrastinate_errors.ConnectorException as exc:
            raise _explain(self.store.url, exc) from None
        return True

    def fire_once(self, flow: str, due: datetime) -> bool:
        """Whether this process is the one that fires `flow`'s scheduled time `due` (every
        serve of the project plans the same times; the first to claim one defers it)."""
        key = f"schedule:{flow}"
        stamp = due.astimezone(UTC).isoformat()
        try:
            with self.store.engine.begin() as conn:
                claimed = conn.execute(
                    sa.text(
                        "INSERT INTO cursors (incoming, state, updated_at) "
                        "VALUES (:key, :state, now()) ON CONFLICT (incoming) DO UPDATE "
                        "SET state = excluded.state, updated_at = now() "
                        "WHERE cursors.state < excluded.state"
                    ),
                    {"key": key, "state": f'{{"due": "{stamp}"}}'},
                )
                return claimed.rowcount == 1
        except sa.exc.SQLAlchemyError as exc:
            raise _explain(self.store.url, exc) from None


# --- the worker -----------------------------------------------------------------------------


async def recover_stalled(
    app: procrastinate.App, stop: threading.Event, stalled_after: float
) -> None:
    """Put back the jobs of workers that stopped heartbeating for `stalled_after` seconds
    (killed, frozen, cut off), so another worker finishes them; every worker looks, a fifth of
    that time apart, and the first one puts each job back."""
    every = stalled_after / 5
    while not stop.is_set():
        with contextlib.suppress(Exception):  # a database down for a moment: next round
            stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after)
            for job in stalled:
                log.warning("job %s (%s) of a stalled worker is put back", job.id, job.task_name)
                with contextlib.suppress(Exception):
                    await app.job_manager.retry_job(job)
            await app.job_manager.prune_stalled_workers(stalled_after)
        await _sleep_unless(stop, every)


async def _sleep_unless(stop: threading.Event, seconds: float) -> None:
    deadline = anyio.current_time() + seconds
    while not stop.is_set() and anyio.current_time() < deadline:
        await anyio.sleep(min(0.2, seconds))


async def run_worker(
    state: WorkerState,
    *,
    name: str | None = None,
    concurrency: int = 1,
    stalled_after: float = STALLED_AFTER,
    reconnect: float = 2.0,
) -> None:
    """Run jobs of the project until `state.stop` is set; then the jobs under way finish their
    chunk and the worker ends. A database that goes away (restarted) is waited for and the
    worker starts again on it."""
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    while not state.stop.is_set():
        try:
            await _work_until_stopped(state, name, concurrency, stalled_after)
        except (OSError, psycopg.Error, procrastinate_errors.ProcrastinateException, StoreError):
            log.warning("worker %s: the database is unreachable; trying again", name)
            await _sleep_unless(state.stop, reconnect)


async def _work_until_stopped(
    state: WorkerState, name: str, concurrency: int, stalled_after: float
) -> None:
    ensure_schema(state.store.url)
    app = make_app(state.store.url)
    factory = state.client_factory or _sharing_bcs_budget(state.store)
    async with AsyncExitStack() as kept, app.open_async():
        state.clients = _Clients(state.project, kept, factory)
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE],
                name=name,
                concurrency=concurrency,
                install_signal_handlers=False,
                additional_context={"bcbridge": state},
                update_heartbeat_interval=stalled_after / 5,
                stalled_worker_timeout=stalled_after,
                fetch_job_polling_interval=1.0,
                delete_jobs="successful",
            )
        )
        janitor = asyncio.create_task(recover_stalled(app, state.stop, stalled_after))
        try:
            while not state.stop.is_set() and not worker.done():
                await asyncio.sleep(0.2)
        finally:
            if not worker.done():
                worker.cancel()  # Procrastinate stops fetching, waits for the jobs under way
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            await janitor
            state.clients = None


# --- looking at the workers ---------------------------------------------------------------


@dataclass
class WorkerRow:
    """A worker as Procrastinate's tables show it, with the jobs it runs."""

    id: int
    last_heartbeat: datetime
    jobs: list[str]

    @property
    def heartbeat_age(self) -> float:
        return max(0.0, (datetime.now(UTC) - self.last_heartbeat).total_seconds())


def list_workers(store: Store) -> list[WorkerRow]:
    """The registered workers, their last heartbeat and their jobs under way (`flow`, or
    `flow chunk N`); an empty list when no worker ever ran on this store."""
    query = sa.text(
        "SELECT w.id, w.last_heartbeat, j.id AS job, j.task_name, j.args "
        "FROM procrastinate_workers w LEFT JOIN procrastinate_jobs j "
        "ON j.worker_id = w.id AND j.status = 'doing' ORDER BY w.id, j.id"
    )
    try:
        with store.engine.connect() as conn:
            if (
                conn.execute(sa.text("SELECT to_regclass('procrastinate_workers')")).scalar()
                is None
            ):
                return []
            rows = conn.execute(query).mappings().all()
    except sa.exc.SQLAlchemyError as exc:
        raise _explain(store.url, exc) from None
    workers: dict[int, WorkerRow] = {}
    for row in rows:
        worker = workers.setdefault(
            int(row["id"]), WorkerRow(int(row["id"]), row["last_heartbeat"], [])
        )
        if row["job"] is not None:
            worker.jobs.append(_describe_job(int(row["job"]), str(row["task_name"]), row["args"]))
    return list(workers.values())


def _describe_job(job_id: int, task: str, args: dict[str, Any]) -> str:
    flow = args.get("flow", "?")
    if task == CHUNK_TASK:
        return f"#{job_id} {flow} chunk {args.get('seq')} ({len(args.get('task_ids', []))} records)"
    if task == RETRY_TASK:
        return f"#{job_id} {flow} retry ({len(args.get('task_ids', []))} tasks)"
    if task == NOTIFIED_TASK:
        return f"#{job_id} {flow} notifications"
    return f"#{job_id} {flow} run"
