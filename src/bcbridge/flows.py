"""Flows: records from an incoming (BC) or a reader, through transformers, to an outgoing (BC)
or a writer, chunk by chunk. Every record that passes is a task in the store.

Each chunk goes through these steps, each committed before the next begins:

1. the chunk's records are transformed and registered as tasks (found again by payload hash);
2. the tasks still to deliver are marked ``sending``;
3. they are delivered (a `Publisher` round, or a writer flush) and marked ``done`` or ``failed``
   with the error BC gave;
4. the incoming's cursor moves past the chunk, never further.

A run killed anywhere restarts from the saved cursor. Tasks already ``done`` in the unfinished
run are skipped; tasks that were in flight are delivered again, and a flow's creates are looked up
on the outgoing's ``key_field`` first, so BC never gets a record twice. Ctrl-C (`stop`) is
honoured between chunks: the chunk in flight finishes and its cursor is saved.

Bound actions (post, makeInvoice, ...) cannot be matched first, so they are never sent twice by
a run: one whose answer was lost (or that a killed run left ``sending``) becomes ``unknown``. The
runner then reads BC where BC's state tells whether it happened (`publisher.PROBES`: a posted
invoice is no longer a draft, a converted quote is gone) and settles the task ``done``, or sends it
when BC shows it was not done. The rest stay ``unknown`` (the run ends ``failed``) until a person
runs ``bcbridge tasks retry`` (send it) or ``bcbridge tasks skip`` (it needs nothing more).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio
import sqlalchemy as sa

from bcbridge import _redact
from bcbridge.client import BusinessCentralClient
from bcbridge.errors import (
    BCBridgeError,
    RetriableAPIError,
    TransformError,
    TransportError,
)
from bcbridge.flowconfig import FlowConfig, ProjectConfig
from bcbridge.publisher import Outcome, Publisher, RecordResult, Verdict, Verification
from bcbridge.sinks import Writer, open_reader, open_writer
from bcbridge.store import Store, Task, TaskUpdate
from bcbridge.subscriber import CursorState, Subscriber
from bcbridge.transform import Chain, load_chain

__all__ = ["FlowRunner", "RunResult"]

Progress = Callable[[str, Counter[str]], None]
REDELIVERIES = 3  # deliveries of a chunk whose answer was lost, before the run stops


@dataclass
class RunResult:
    flow: str
    run_id: int
    status: str  # ok, failed (some records failed), interrupted, error
    counts: Counter[str]
    error: str | None = None

    @property
    def failed(self) -> int:
        """Records that need a person: failed, or unknown (sent, answer lost)."""
        return self.counts.get("failed", 0) + self.counts.get("unknown", 0)


# --- sources and targets ------------------------------------------------------------------------


class _Source(Protocol):
    def records(self) -> AsyncIterator[dict[str, Any]]: ...
    def context(self) -> dict[str, Any]: ...
    def commit(self, records: Iterable[dict[str, Any]]) -> None: ...


class _Target(Protocol):
    @property
    def action(self) -> str: ...

    @property
    def repeatable(self) -> bool: ...  # may a record be sent again after a lost answer?

    def key_of(self, payload: dict[str, Any]) -> str | None: ...
    async def deliver(self, payloads: list[dict[str, Any]]) -> list[RecordResult]: ...
    async def verify(self, payloads: Sequence[dict[str, Any]]) -> list[Verification]: ...


@dataclass
class _IncomingSource:
    subscriber: Subscriber
    store: Store
    cursor_name: str

    def records(self) -> AsyncIterator[dict[str, Any]]:
        return self.subscriber.records()

    def context(self) -> dict[str, Any]:
        cursor = self.subscriber.cursor
        return {"cursor": cursor.value if cursor else None, "company": self.subscriber.company}

    def commit(self, records: Iterable[dict[str, Any]]) -> None:
        """Move the cursor over records whose tasks are settled, and save it."""
        cursor = self.subscriber.cursor
        if cursor is None:
            return
        for record in records:
            cursor.advance(record)
        self.store.save_cursor(self.cursor_name, cursor.to_json())


@dataclass
class _ReaderSource:
    spec: str
    format: str | None

    async def records(self) -> AsyncIterator[dict[str, Any]]:
        for record in open_reader(self.spec, self.format):
            yield record

    def context(self) -> dict[str, Any]:
        return {"source": self.spec}

    def commit(self, records: Iterable[dict[str, Any]]) -> None:
        """Nothing to move: a reader is read whole each run; done tasks make the re-read cheap."""


@dataclass
class _OutgoingTarget:
    publisher: Publisher

    @property
    def action(self) -> str:
        return self.publisher.action

    @property
    def repeatable(self) -> bool:
        return self.publisher.repeatable

    def key_of(self, payload: dict[str, Any]) -> str | None:
        return _field_text(payload, self.publisher.key_field or "id")

    async def deliver(self, payloads: list[dict[str, Any]]) -> list[RecordResult]:
        """One result per payload; the results of rounds that were answered are kept.

        A repeatable publisher raises when a round's answer was lost (dropped connection, retries
        spent): the rest is delivered again (matched on its key first, so a repeat never writes
        twice), up to REDELIVERIES times. Any other publisher answers a lost round with UNKNOWN
        results itself and raises only when it sent nothing (a lookup or the company failed).
        Either way, what is still undelivered in the end fails, retryable; the run goes on."""
        results: list[RecordResult] = []
        for attempt in range(1, REDELIVERIES + 1):
            try:
                async for result in self.publisher.publish(payloads[len(results) :]):
                    results.append(replace(result, index=len(results)))
                return results
            except (TransportError, RetriableAPIError) as exc:
                error: BCBridgeError = exc
                if not self.repeatable or attempt == REDELIVERIES:
                    break
                await anyio.sleep(attempt)
            except BCBridgeError as exc:
                if self.repeatable:
                    raise
                error = exc
                break
        note = f"no answer after {REDELIVERIES} deliveries" if self.repeatable else "not sent"
        return results + [
            RecordResult(
                index, Outcome.FAILED, payload, code="NotDelivered", message=f"{note}: {error}"
            )
            for index, payload in enumerate(payloads[len(results) :], start=len(results))
        ]

    async def verify(self, payloads: Sequence[dict[str, Any]]) -> list[Verification]:
        return await self.publisher.verify(payloads)


@dataclass
class _WriterTarget:
    writer: Writer
    spec: str
    key: str | None
    action: str = "write"

    repeatable: bool = True  # an upsert on `key`, or appended rows of a fresh file

    def key_of(self, payload: dict[str, Any]) -> str | None:
        return _field_text(payload, self.key or "id")

    async def verify(self, payloads: Sequence[dict[str, Any]]) -> list[Verification]:
        return [Verification(Verdict.UNKNOWN, "a writer keeps no answer to read") for _ in payloads]

    async def deliver(self, payloads: list[dict[str, Any]]) -> list[RecordResult]:
        try:
            self.writer.write_many(payloads)
            self.writer.flush()  # durable before the tasks say done
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            raise BCBridgeError(f"cannot write to {_redact.url(self.spec)}: {exc}") from exc
        return [
            RecordResult(index, Outcome.DONE, payload, id=self.key_of(payload))
            for index, payload in enumerate(payloads)
        ]


# --- the runner ---------------------------------------------------------------------------------


class FlowRunner:
    """Runs the flows of a project against its store. One runner per flow at a time."""

    def __init__(
        self,
        project: ProjectConfig,
        store: Store,
        *,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
    ):
        self.project = project
        self.store = store
        self.stop = stop or threading.Event()
        self.progress = progress or (lambda flow, counts: None)

    async def run(self, name: str) -> RunResult:
        flow = self.project.flow(name)
        chain = load_chain(flow.transform)
        run_id = self.store.start_run(name)
        result = RunResult(name, run_id, "ok", Counter())
        try:
            async with AsyncExitStack() as stack:
                clients = _Clients(self.project, stack)
                source = await self._source(name, flow, clients)
                target = await self._target(flow, clients, stack)
                await self._settle_unclear(name, run_id, target, result.counts)
                async for chunk in _chunks(source.records(), flow.chunk_size):
                    await self._chunk(name, run_id, chunk, chain, source, target, result.counts)
                    source.commit(chunk)
                    self.progress(name, result.counts)
                    if self.stop.is_set():
                        result.status = "interrupted"
                        break
        except BaseException as exc:  # the run record must say how it ended, then re-raise
            result.status = "error"
            result.error = str(exc) or type(exc).__name__
            self.store.end_run(run_id, "error", dict(result.counts))
            raise
        if result.status == "ok" and result.failed:
            result.status = "failed"
        self.store.end_run(run_id, result.status, dict(result.counts))
        return result

    async def retry(self, tasks: list[Task]) -> list[RunResult]:
        """Deliver failed (or stuck) tasks again, flow by flow; transform-stage tasks are
        transformed again first, with the flow's current transformers."""
        results = []
        for name in sorted({task.flow for task in tasks}):
            flow = self.project.flow(name)
            chain = load_chain(flow.transform)
            run_id = self.store.start_run(name, recover=False)
            counts: Counter[str] = Counter()
            async with AsyncExitStack() as stack:
                target = await self._target(flow, _Clients(self.project, stack), stack)
                mine = [task for task in tasks if task.flow == name]
                await self._deliver(mine, chain, {}, target, counts)
            status = "failed" if counts.get("failed") else "ok"
            self.store.end_run(run_id, status, dict(counts))
            results.append(RunResult(name, run_id, status, counts))
        return results

    # --- building ---------------------------------------------------------------------------

    async def _source(self, name: str, flow: FlowConfig, clients: _Clients) -> _Source:
        if flow.source.reader is not None:
            return _ReaderSource(flow.source.reader, flow.source.format)
        incoming_name = str(flow.source.incoming)
        incoming = self.project.incoming[incoming_name]
        cursor_name = f"{name}:{incoming_name}"  # a flow's own position in the incoming
        cursor = None
        if incoming.cursor:
            saved = self.store.cursor(cursor_name)
            cursor = CursorState.from_json(saved) if saved else CursorState(incoming.cursor)
        subscriber = Subscriber(
            await clients.get(incoming.client),
            incoming.entity,
            company=incoming.company,
            key=incoming.key,
            params=dict(incoming.params),
            transform=load_chain(incoming.transform) if incoming.transform else None,
            page_size=incoming.page_size,
            cursor=cursor,
        )
        return _IncomingSource(subscriber, self.store, cursor_name)

    async def _target(self, flow: FlowConfig, clients: _Clients, stack: AsyncExitStack) -> _Target:
        if flow.target.writer is not None:
            key = flow.target.key
            writer = open_writer(flow.target.writer, flow.target.format, key=key, append=True)
            stack.callback(writer.close)
            return _WriterTarget(writer, flow.target.writer, key)
        outgoing = self.project.outgoing[str(flow.target.outgoing)]
        publisher = Publisher(
            await clients.get(outgoing.client),
            outgoing.entity,
            outgoing.action,
            company=outgoing.company,
            key=outgoing.key,
            key_field=outgoing.key_field,
            params=dict(outgoing.params),
            etag=outgoing.etag,
            batch_size=outgoing.batch_size,
        )
        return _OutgoingTarget(publisher)

    # --- one chunk --------------------------------------------------------------------------

    async def _chunk(
        self,
        name: str,
        run_id: int,
        records: list[dict[str, Any]],
        chain: Chain,
        source: _Source,
        target: _Target,
        counts: Counter[str],
    ) -> None:
        context = {"flow": name, "run": run_id, **source.context()}
        payloads, broken = [], []
        for record in records:
            counts["read"] += 1
            try:
                payload = chain.apply(record, context)
            except TransformError as exc:
                broken.append((record, exc))
                continue
            if payload is None:
                counts["filtered"] += 1
            else:
                payloads.append(payload)
        self._keep_broken(name, run_id, broken, counts)
        tasks = self.store.register(
            name, run_id, [(target.key_of(p), p) for p in payloads], repeatable=target.repeatable
        )
        # unknown tasks wait for a person; the run reported them when it started (_settle_unclear)
        todo = list({task.id: task for task in tasks if task.status == "pending"}.values())
        settled = [task for task in tasks if task.status in ("done", "skipped")]
        if settled:  # delivered before a crash, twice in the input, or skipped by hand
            counts["skipped"] += len(settled)
        await self._deliver(todo, None, context, target, counts)

    def _keep_broken(
        self,
        name: str,
        run_id: int,
        broken: list[tuple[dict[str, Any], TransformError]],
        counts: Counter[str],
    ) -> None:
        """A record the transformers fail on is kept, as it came, with the error: retryable."""
        if not broken:
            return
        tasks = self.store.register(
            name, run_id, [(_label(record), record) for record, _ in broken], stage="transform"
        )
        self.store.settle(
            [
                TaskUpdate(task.id, "failed", error=f"transform: {exc}")
                for task, (_, exc) in zip(tasks, broken, strict=True)
            ]
        )
        counts["failed"] += len(tasks)

    async def _deliver(
        self,
        tasks: list[Task],
        chain: Chain | None,
        context: dict[str, Any],
        target: _Target,
        counts: Counter[str],
        *,
        probe: bool = True,
    ) -> None:
        ready, updates = [], []
        payloads: dict[int, dict[str, Any]] = {}
        for task in tasks:
            payload = task.payload
            if task.stage == "transform" and chain is not None:
                try:
                    transformed = chain.apply(payload, context)
                except TransformError as exc:
                    updates.append(TaskUpdate(task.id, "failed", error=f"transform: {exc}"))
                    counts["failed"] += 1
                    continue
                if transformed is None:
                    updates.append(TaskUpdate(task.id, "done", error="filtered"))
                    counts["filtered"] += 1
                    continue
                payloads[task.id] = payload = transformed
            ready.append((task, payload))
        self.store.settle(updates)
        if not ready:
            return
        self.store.mark([task.id for task, _ in ready], "sending", attempt=True)
        results = await target.deliver([payload for _, payload in ready])
        updates, lost = [], []
        for (task, _), result in zip(ready, results, strict=True):
            outcome = _outcome(result, target.action)
            updates.append(_update(task.id, outcome, result, payloads.get(task.id)))
            if outcome == Outcome.UNKNOWN:
                lost.append(task)
            else:
                counts[outcome] += 1
        self.store.settle(updates)  # unknown is recorded before BC is read, in case we die here
        if lost and probe:
            await self._resolve(lost, target, counts)
        else:
            counts["unknown"] += len(lost)

    async def _settle_unclear(
        self, name: str, run_id: int, target: _Target, counts: Counter[str]
    ) -> None:
        """Before the first chunk: tasks whose answer was lost, and (for targets that cannot be
        sent twice) tasks a killed run left `sending`, settled where reading BC tells."""
        unclear = self.store.unclear(name, run_id, stale_sending=not target.repeatable)
        if unclear:
            await self._resolve(unclear, target, counts)

    async def _resolve(self, tasks: list[Task], target: _Target, counts: Counter[str]) -> None:
        """Read in BC whether the lost ones happened: done ones become `done`, ones BC shows not
        done are sent (once: a second lost answer leaves them `unknown`), the rest stay
        `unknown`, counted, for a person to retry or skip."""
        try:
            checks = await target.verify([task.payload for task in tasks])
        except BCBridgeError as exc:  # BC cannot be read now: the next run asks again
            checks = [Verification(Verdict.UNKNOWN, f"BC could not be read: {exc}")] * len(tasks)
        updates, again = [], []
        for task, check in zip(tasks, checks, strict=True):
            if check.verdict is Verdict.DONE:
                updates.append(
                    TaskUpdate(
                        task.id, "done", error=f"read in BC: {check.reason}", result_id=check.id
                    )
                )
                counts[Outcome.DONE.value] += 1
            elif check.verdict is Verdict.NOT_DONE:
                updates.append(TaskUpdate(task.id, "pending", error=f"read in BC: {check.reason}"))
                again.append(task)
            else:
                counts["unknown"] += 1
        self.store.settle(updates)
        if again:
            await self._deliver(again, None, {}, target, counts, probe=False)


def _update(
    task_id: int, outcome: str, result: RecordResult, payload: dict[str, Any] | None
) -> TaskUpdate:
    if outcome == Outcome.UNKNOWN:
        error = (
            f"{result.message}; then `bcbridge tasks retry {task_id}` to send it or "
            f"`bcbridge tasks skip {task_id}` if it is done"
        )
        return TaskUpdate(task_id, "unknown", error=error, result_id=result.id, payload=payload)
    if outcome == Outcome.FAILED:
        error = " ".join(
            part for part in (str(result.status or ""), result.code, result.message) if part
        )
        return TaskUpdate(task_id, "failed", error=error, payload=payload)
    note = None if result.ok else result.message  # e.g. a delete that found nothing to delete
    return TaskUpdate(task_id, "done", error=note, result_id=result.id, payload=payload)


def _outcome(result: RecordResult, action: str) -> str:
    """A record to delete that is not there (deleted before a crash, or by someone else) is as
    the flow wants it: unchanged, not failed."""
    if result.ok:
        return "written" if action == "write" else result.outcome.value
    if result.outcome is Outcome.UNKNOWN:
        return Outcome.UNKNOWN.value
    if action == "delete" and result.status == 404:
        return Outcome.UNCHANGED.value
    return Outcome.FAILED.value


def _field_text(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    return None if value is None else str(value)


def _label(record: dict[str, Any]) -> str | None:
    for name in ("number", "id", "code", "no"):
        if record.get(name) not in (None, ""):
            return str(record[name])
    return None


async def _chunks(
    records: AsyncIterator[dict[str, Any]], size: int
) -> AsyncIterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    async for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Clients:
    """One BC client per configured client name for the length of a run."""

    def __init__(self, project: ProjectConfig, stack: AsyncExitStack):
        self.project = project
        self.stack = stack
        self.open: dict[str, BusinessCentralClient] = {}

    async def get(self, name: str) -> BusinessCentralClient:
        if name not in self.open:
            client = BusinessCentralClient(self.project.client_settings(name))
            self.open[name] = await self.stack.enter_async_context(client)
        return self.open[name]
