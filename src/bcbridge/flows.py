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

import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
import sqlalchemy as sa

from bcbridge import catalog
from bcbridge._logging import request_trail
from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.errors import (
    BCBridgeError,
    ConfigError,
    RetriableAPIError,
    TransformError,
    TransportError,
)
from bcbridge.flowconfig import FlowConfig, ProjectConfig
from bcbridge.publisher import Outcome, Publisher, RecordResult, Verdict, Verification
from bcbridge.sinks import (
    BadRecord,
    FileWriter,
    SqlWriter,
    Writer,
    open_writer,
    read_records,
)
from bcbridge.store import (
    Attempt,
    FlowBusy,
    Lease,
    LeaseKeeper,
    RunStatus,
    Store,
    StoreError,
    Task,
    TaskStatus,
    TaskUpdate,
)
from bcbridge.subscriber import CursorState, Subscriber
from bcbridge.transform import Chain, Default, Drop, Filter, Keep, load_chain

__all__ = ["FlowRunner", "RunResult", "SourceFactory"]

Progress = Callable[[str, Counter[str]], None]
# Builds the BC client for a client's settings: `BusinessCentralClient` itself by default; tests
# and embedders give one with another transport or token source (see bcbridge.testing).
ClientFactory = Callable[[ClientSettings], BusinessCentralClient]
Guard = Callable[[], None]  # raises when writing must stop (`LeaseKeeper.check`)
# The records of a run taken from elsewhere than by reading the incoming (webhook notifications,
# bcbridge.webhooks): built from the BC client of the flow's incoming.
SourceFactory = Callable[[BusinessCentralClient], "_Source"]
_Work = Callable[[str, "FlowConfig", "Chain", "LeaseKeeper", "RunResult"], Awaitable[None]]
TOMBSTONE_FIELD = "deleted"  # a record BC deleted: {"id": ..., "deleted": true, ...} (webhooks)
FIX_THE_FILE = "fix the line in the file and run the flow again"  # an unreadable input line
REDELIVERIES = 3  # deliveries of a chunk whose answer was lost, before the run stops


@dataclass
class RunResult:
    """How one run of a flow ended: its status (a `RunStatus` value), the store's run id,
    counts per outcome (``created``, ``updated``, ``failed``, ``unknown``, ``filtered``, ...)
    and, when it stopped on an error, that error's one line and the exception."""

    flow: str
    run_id: int | None  # None: the run ended before it was recorded (busy, bad transformers)
    status: str  # a RunStatus: ok, failed (some records failed), interrupted, error, busy
    counts: Counter[str]
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> int:
        """Records that need a person: failed, or unknown (sent, answer lost)."""
        return self.counts.get(TaskStatus.FAILED, 0) + self.counts.get(TaskStatus.UNKNOWN, 0)


# --- sources and targets ------------------------------------------------------------------------


class _Source(Protocol):
    def records(self) -> AsyncIterator[dict[str, Any] | BadRecord]: ...
    def context(self) -> dict[str, Any]: ...
    def commit(self, records: Iterable[dict[str, Any]]) -> None: ...


class _Target(Protocol):
    @property
    def action(self) -> str: ...

    @property
    def repeatable(self) -> bool: ...  # may a record be sent again after a lost answer?

    @property
    def redeliver_done(self) -> bool: ...  # is a record delivered in an earlier run sent again?

    def key_of(self, payload: dict[str, Any]) -> str | None: ...
    # `before_write`: called before each write goes out; what it raises stops the delivery
    async def deliver(
        self, payloads: list[dict[str, Any]], before_write: Guard | None = None
    ) -> list[RecordResult]: ...
    async def verify(self, payloads: Sequence[dict[str, Any]]) -> list[Verification]: ...

    # what to save with a chunk's settled tasks, in the same transaction (a file's offset)
    def committed(self) -> tuple[str, dict[str, Any]] | None: ...


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
    encoding: str | None = None

    async def records(self) -> AsyncIterator[dict[str, Any] | BadRecord]:
        """A line that is not a record comes as a BadRecord: it fails alone, the rest go on."""
        for record in read_records(self.spec, self.format, encoding=self.encoding):
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

    @property
    def redeliver_done(self) -> bool:
        """A record that comes again is written again (BC matches it first); a bound action
        that was carried out is never repeated."""
        return self.publisher.repeatable

    def key_of(self, payload: dict[str, Any]) -> str | None:
        return _field_text(payload, self.publisher.key_field or "id")

    async def deliver(
        self, payloads: list[dict[str, Any]], before_write: Guard | None = None
    ) -> list[RecordResult]:
        """One result per payload; the results of rounds that were answered are kept.

        A repeatable publisher raises when a round's answer was lost (dropped connection, retries
        spent): the rest is delivered again (matched on its key first, so a repeat never writes
        twice), up to REDELIVERIES times. Any other publisher answers a lost round with UNKNOWN
        results itself and raises only when it sent nothing (a lookup or the company failed).
        Either way, what is still undelivered in the end fails, retryable; the run goes on."""
        results: list[RecordResult] = []
        for attempt in range(1, REDELIVERIES + 1):
            try:
                rest = payloads[len(results) :]
                async for result in self.publisher.publish(rest, before_write=before_write):
                    results.append(replace(result, index=len(results)))
                return results
            except (TransportError, RetriableAPIError) as exc:
                error: BCBridgeError = exc
                if not self.repeatable or attempt == REDELIVERIES:
                    break
                # no pause of our own: each delivery goes through the client's retry policy,
                # which waits between its attempts (backoff, Retry-After); only it ever sleeps
            except StoreError:
                raise  # the lease lost (`before_write`), not BC's answer: stop writing
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

    def committed(self) -> None:
        """Nothing to save with the tasks: BC holds what was written."""
        return None


@dataclass
class _WriterTarget:
    """A file or a table. Records are never written twice: a task done in any run is skipped
    (`redeliver_done` False), and a file is cut back, when the run starts, to the offset saved
    with the last settled chunk, so a chunk written by a run that died before settling it is
    written again in its place, not after itself."""

    writer: Writer
    spec: str
    key: str | None
    cursor_name: str  # writer:<flow>, in the store's cursors
    deletes: bool = False  # a tombstone deletes the row of its key (on_delete: delete)
    action: str = "write"
    redeliver_done: bool = False
    repeatable: bool = True  # a chunk whose settle was lost is cut back and written again

    def key_of(self, payload: dict[str, Any]) -> str | None:
        return _field_text(payload, self.key or "id")

    def resume(self, store: Store) -> None:
        """Cut a file back to its saved offset. A file without one (new to this flow) keeps what
        it holds, and that offset is saved at once: a run dying before it settles its first
        chunk is cut back to it too."""
        if not isinstance(self.writer, FileWriter):
            return
        saved = store.cursor(self.cursor_name)
        if saved is not None and saved.get("path") == self.spec:
            self.writer.resume(int(saved["offset"]))
            return
        self.writer.resume(None)
        if (state := self.writer.committed()) is not None:
            store.save_cursor(self.cursor_name, state)

    def committed(self) -> tuple[str, dict[str, Any]] | None:
        """The offset to save in the transaction that marks the chunk's tasks done."""
        state = self.writer.committed() if isinstance(self.writer, FileWriter) else None
        return None if state is None else (self.cursor_name, state)

    async def verify(self, payloads: Sequence[dict[str, Any]]) -> list[Verification]:
        return [Verification(Verdict.UNKNOWN, "a writer keeps no answer to read") for _ in payloads]

    async def deliver(
        self, payloads: list[dict[str, Any]], before_write: Guard | None = None
    ) -> list[RecordResult]:
        """Durable before the tasks say done; a failure of the output is a WriteError."""
        if before_write is not None:
            before_write()
        if self.deletes and isinstance(self.writer, SqlWriter):
            return self._deliver_with_deletes(payloads)
        refused = self.writer.write_chunk(payloads)
        return [
            RecordResult(index, Outcome.DONE, payload, id=self.key_of(payload))
            if error is None
            else RecordResult(index, Outcome.FAILED, payload, message=error)
            for index, (payload, error) in enumerate(zip(payloads, refused, strict=True))
        ]

    def _deliver_with_deletes(self, payloads: list[dict[str, Any]]) -> list[RecordResult]:
        """Tombstones delete their key's row; the other records are written."""
        assert isinstance(self.writer, SqlWriter)
        gone = [i for i, p in enumerate(payloads) if p.get(TOMBSTONE_FIELD) is True]
        kept = [i for i in range(len(payloads)) if i not in set(gone)]
        refused = self.writer.write_chunk([payloads[i] for i in kept])
        self.writer.delete_keys([payloads[i].get(self.key or "id") for i in gone])
        errors: dict[int, str | None] = dict(zip(kept, refused, strict=True))
        return [
            RecordResult(index, Outcome.DONE, payload, id=self.key_of(payload))
            if errors.get(index) is None
            else RecordResult(index, Outcome.FAILED, payload, message=errors[index])
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
        client_factory: ClientFactory | None = None,
        clients: _Clients | None = None,
    ):
        self.project = project
        self.store = store
        self.stop = stop or threading.Event()
        self.progress = progress or (lambda flow, counts: None)
        self.client_factory = client_factory or _sharing_bcs_budget(store)
        self.kept_clients = clients  # open for longer than a run (a worker's, across its jobs)

    def _clients(self, stack: AsyncExitStack) -> _Clients:
        """The BC clients of a run: those kept open by the caller, else new ones that `stack`
        closes."""
        return self.kept_clients or _Clients(self.project, stack, self.client_factory)

    async def run(
        self,
        name: str,
        *,
        wait: float | None = None,
        transform: Chain | None = None,
        source: SourceFactory | None = None,
    ) -> RunResult:
        """Run one flow to its end, holding the flow's lease in the store for the whole run.

        Never raises a BCBridgeError: the result says how the run ended, `error` with what
        stopped it (`run_id` is None when it stopped before a run was recorded). `busy`: another
        process holds the flow's lease; with `wait` (seconds, `math.inf` for no limit) the
        lease is waited for first. Anything else (Ctrl-C pressed twice, a bug) is recorded as
        an error run and re-raised. `transform`, an already built chain, replaces the flow's
        configured transformers (`bcbridge push` builds its own). `source` gives the records
        instead of the flow's incoming (webhook notifications); they take the same path.

        A record BC refuses is kept as read when the flow's own transformers made its payload,
        so that a retry after the transform was fixed sends the fixed payload; with `transform`
        it is kept as sent (push writes it, and its record, to its failed file)."""

        async def work(
            name: str, flow: FlowConfig, chain: Chain, keeper: LeaseKeeper, result: RunResult
        ) -> None:
            await self._work(name, flow, chain, keeper, result, source, transform is None)

        return await self._leased(name, wait, recover=True, work=work, transform=transform)

    async def _leased(
        self,
        name: str,
        wait: float | None,
        *,
        recover: bool,
        work: _Work,
        transform: Chain | None = None,
    ) -> RunResult:
        """`work` on flow `name` under its lease, recorded as a run: the result says how it
        ended (see `run`)."""
        result = RunResult(name, None, RunStatus.RUNNING, Counter())
        try:
            flow = self.project.flow(name)
            chain = transform if transform is not None else load_chain(flow.transform)
            lease = await self._lease(name, wait)
            if lease is None:  # Ctrl-C while waiting for the lease
                result.status = RunStatus.INTERRUPTED
                return result
            with LeaseKeeper(self.store, lease) as keeper:
                result.run_id = self.store.start_run(name, recover=recover, holder=lease.holder)
                try:
                    await work(name, flow, chain, keeper, result)
                except BaseException as exc:  # the run record must say how it ended
                    self._end_with_error(result, exc)
                    raise
                if result.status == RunStatus.RUNNING:
                    result.status = RunStatus.FAILED if result.failed else RunStatus.OK
                self.store.end_run(result.run_id, result.status, dict(result.counts))
        except FlowBusy as exc:
            result.status, result.error, result.exception = RunStatus.BUSY, str(exc), exc
        except BCBridgeError as exc:
            self._end_with_error(result, exc)
        return result

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
        assert result.run_id is not None
        async with AsyncExitStack() as stack:
            clients = self._clients(stack)
            if given is not None and flow.source.incoming is not None:
                incoming = self.project.incoming[flow.source.incoming]
                source: _Source = given(await clients.get(incoming.client))
            else:
                source = await self._source(name, flow, clients)
            target = await self._target(name, flow, clients, stack)
            await self._settle_unclear(name, result.run_id, target, result.counts)
            async for chunk in _chunks(source.records(), flow.chunk_size):
                keeper.check()  # never work on after another process took the flow over
                await self._chunk(
                    name,
                    result.run_id,
                    chunk,
                    chain,
                    source,
                    target,
                    result.counts,
                    keep_refused_as_read,
                    keeper.check,
                )
                source.commit([r for r in chunk if not isinstance(r, BadRecord)])
                self.progress(name, result.counts)
                if self.stop.is_set():
                    result.status = RunStatus.INTERRUPTED
                    break
            else:
                if isinstance(source, _ReaderSource):
                    self._close_lines_gone(name, result.run_id)

    async def _lease(self, name: str, wait: float | None) -> Lease | None:
        """The flow's lease; FlowBusy if another process holds it (after `wait` seconds, when
        given); None if Ctrl-C was pressed while waiting."""
        deadline = time.monotonic() + (wait or 0.0)
        while True:
            try:
                return self.store.acquire_lease(name)
            except FlowBusy:
                if wait is None or time.monotonic() >= deadline:
                    raise
            if self.stop.is_set():
                return None
            await anyio.sleep(min(1.0, self.store.lease_ttl / 10))

    def _end_with_error(self, result: RunResult, exc: BaseException) -> None:
        """Mark the result and its run record (if any) as ended by `exc`. A store that fails
        here too leaves the run `running`; the next run of the flow marks it crashed."""
        if result.status == RunStatus.ERROR:
            return  # already recorded on the way out
        result.status, result.exception = RunStatus.ERROR, exc
        result.error = str(exc) or type(exc).__name__
        if result.run_id is not None:
            with contextlib.suppress(StoreError):
                self.store.end_run(result.run_id, RunStatus.ERROR, dict(result.counts))

    async def retry(self, tasks: list[Task], *, wait: float | None = None) -> list[RunResult]:
        """Deliver failed (or stuck) tasks again, flow by flow, each under the flow's lease
        (`busy` if a run of the flow is under way); transform-stage tasks are transformed
        again first, with the flow's current transformers. Errors are results, as for `run`."""
        results = []
        for name in sorted({task.flow for task in tasks}):
            mine = [task for task in tasks if task.flow == name]
            results.append(await self._retry_flow(name, mine, wait))
        return results

    async def _retry_flow(self, name: str, tasks: list[Task], wait: float | None) -> RunResult:
        async def deliver(
            name: str, flow: FlowConfig, chain: Chain, keeper: LeaseKeeper, result: RunResult
        ) -> None:
            async with AsyncExitStack() as stack:
                target = await self._target(name, flow, self._clients(stack), stack)
                await self._deliver(tasks, chain, {}, target, result.counts, guard=keeper.check)

        return await self._leased(name, wait, recover=False, work=deliver)

    # --- building ---------------------------------------------------------------------------

    async def _source(self, name: str, flow: FlowConfig, clients: _Clients) -> _Source:
        if flow.source.reader is not None:
            return _ReaderSource(flow.source.reader, flow.source.format, flow.source.encoding)
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
            transform=load_chain(incoming.params_transform) if incoming.params_transform else None,
            page_size=incoming.page_size,
            cursor=cursor,
            partitions=incoming.partitions,
        )
        return _IncomingSource(subscriber, self.store, cursor_name)

    async def _target(
        self, name: str, flow: FlowConfig, clients: _Clients, stack: AsyncExitStack
    ) -> _Target:
        if flow.target.writer is not None:
            key = flow.target.key
            writer = open_writer(
                flow.target.writer,
                flow.target.format,
                key=key,
                append=True,
                types=self._entity_types(flow),
                annotations=flow.target.annotations,
            )
            stack.callback(writer.close)
            target = _WriterTarget(
                writer, flow.target.writer, key, f"writer:{name}", deletes=self._deletes(flow)
            )
            target.resume(self.store)
            return target
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
            allow_duplicates=outgoing.allow_duplicates,
        )
        return _OutgoingTarget(publisher)

    def _entity_types(self, flow: FlowConfig) -> dict[str, catalog.FieldType] | None:
        """The BC property types of the records a flow writes, for a SQL table's columns: those
        of the incoming's entity, but for fields a transformer may have renamed or recomputed
        (map, set, rename, convert); after a python step, none (the values decide)."""
        if flow.source.incoming is None:
            return None
        try:
            entity = catalog.get(self.project.incoming[flow.source.incoming].entity)
        except ConfigError:
            return None
        types = {field.name: field.type for field in entity.fields}
        for step in load_chain(flow.transform).steps:
            if isinstance(step, Keep | Drop | Filter | Default):
                continue  # names and values keep their meaning
            changed = getattr(step, "fields", None)
            if not isinstance(changed, Mapping):
                return None
            for old, new in changed.items():
                types.pop(old, None)
                if step.name == "rename":
                    types.pop(str(new), None)
        return types

    # --- one chunk --------------------------------------------------------------------------

    async def _chunk(
        self,
        name: str,
        run_id: int,
        records: list[dict[str, Any] | BadRecord],
        chain: Chain,
        source: _Source,
        target: _Target,
        counts: Counter[str],
        keep_refused_as_read: bool,
        guard: Guard,
    ) -> None:
        todo, as_read = self._register_chunk(name, run_id, records, chain, source, target, counts)
        kept = as_read if keep_refused_as_read else None
        await self._deliver(todo, None, {}, target, counts, as_read=kept, guard=guard)

    def _register_chunk(
        self,
        name: str,
        run_id: int,
        records: list[dict[str, Any] | BadRecord],
        chain: Chain,
        source: _Source,
        target: _Target,
        counts: Counter[str],
    ) -> tuple[list[Task], dict[int, dict[str, Any]]]:
        """Step 1 of a chunk: its records transformed and registered as tasks. The tasks still
        to deliver (a split run hands them to other workers, `bcbridge.engine`), each with the
        payload made now, and the records as read, by task."""
        context = {"flow": name, "run": run_id, **source.context()}
        transformed: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (as read, payload)
        broken, unreadable = [], []
        for record in records:
            counts["read"] += 1
            if isinstance(record, BadRecord):
                unreadable.append(record)
                continue
            try:
                payload = chain.apply(record, context)
            except TransformError as exc:
                broken.append((record, exc))
                continue
            if payload is None:
                counts["filtered"] += 1
            else:
                transformed.append((record, payload))
        self._keep_broken(name, run_id, broken, counts)
        self._keep_unreadable(name, run_id, unreadable, counts)
        tasks = self.store.register(
            name,
            run_id,
            [(target.key_of(payload), payload) for _, payload in transformed],
            redeliver_done=target.redeliver_done and not self._notified(name),
            resend_in_flight=target.repeatable,
        )
        made = {task.id: pair for task, pair in zip(tasks, transformed, strict=True)}
        # unknown tasks wait for a person; the run reported them when it started (_settle_unclear)
        todo = list({task.id: task for task in tasks if task.status == TaskStatus.PENDING}.values())
        settled = [task for task in tasks if task.status in (TaskStatus.DONE, TaskStatus.SKIPPED)]
        if settled:  # delivered before a crash, twice in the input, or skipped by hand
            counts[TaskStatus.SKIPPED.value] += len(settled)
        todo = self._payloads_made_now(todo, {i: payload for i, (_, payload) in made.items()})
        return todo, {task_id: record for task_id, (record, _) in made.items()}

    def _payloads_made_now(
        self, tasks: list[Task], payloads: Mapping[int, dict[str, Any]]
    ) -> list[Task]:
        """A task BC refused that kept its record as read (see `run`) holds it again as the
        payload this run made of it, in the store too: whoever delivers it sends that."""
        kept = [task for task in tasks if task.stage != "send"]
        self.store.settle(
            [
                TaskUpdate(task.id, task.status, error=task.last_error, payload=payloads[task.id])
                for task in kept
            ]
        )
        again = {task.id for task in kept}
        return [
            replace(task, payload=payloads[task.id], stage="send") if task.id in again else task
            for task in tasks
        ]

    def _deletes(self, flow: FlowConfig) -> bool:
        """The flow reads a webhook incoming whose `deleted` notifications delete rows."""
        incoming = self.project.incoming.get(flow.source.incoming or "")
        return incoming is not None and incoming.on_delete == "delete"

    def _notified(self, name: str) -> bool:
        """Whether the flow reads a webhook incoming: a record comes by a notification and again
        by the reconciliation pull, so a record delivered as it is now is not delivered again
        (task identity is the payload's hash, which holds its ETag and lastModifiedDateTime)."""
        incoming = self.project.incoming.get(self.project.flow(name).source.incoming or "")
        return incoming is not None and incoming.trigger == "webhook"

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
        errors = [f"transform: {exc}" for _, exc in broken]
        self._fail_unsettled(tasks, errors, counts)

    def _fail_unsettled(self, tasks: list[Task], errors: list[str], counts: Counter[str]) -> None:
        """Mark failed the tasks of records that cannot go out, but not those settled already:
        a record skipped by hand (`tasks skip`) stays skipped when it comes again."""
        failed = [
            TaskUpdate(task.id, TaskStatus.FAILED, error=error)
            for task, error in zip(tasks, errors, strict=True)
            if task.status not in (TaskStatus.DONE, TaskStatus.SKIPPED)
        ]
        self.store.settle(failed)
        counts[TaskStatus.FAILED.value] += len(failed)
        counts[TaskStatus.SKIPPED.value] += len(tasks) - len(failed)

    def _keep_unreadable(
        self, name: str, run_id: int, bad: list[BadRecord], counts: Counter[str]
    ) -> None:
        """An input line that is not a record is a failed task (stage `read`) naming file:line,
        with its text: fixed in the file, it is a new record the next run delivers."""
        if not bad:
            return
        items = [
            (f"{record.source}:{record.line}", {"line": record.line, "text": record.raw})
            for record in bad
        ]
        tasks = self.store.register(name, run_id, items, stage="read")
        self._fail_unsettled(tasks, [f"read: {record}; {FIX_THE_FILE}" for record in bad], counts)

    def _close_lines_gone(self, name: str, run_id: int) -> None:
        """After a whole read: unreadable lines of earlier runs not met again were fixed (their
        record went out as a new task) or removed, so their failed tasks are closed."""
        gone = [
            task
            for task in self.store.tasks(name, TaskStatus.FAILED, limit=None)
            if task.stage == "read" and task.run_id != run_id
        ]
        self.store.settle(
            [
                TaskUpdate(task.id, TaskStatus.DONE, error="the line is no longer in the input")
                for task in gone
            ]
        )

    async def _deliver(
        self,
        tasks: list[Task],
        chain: Chain | None,
        context: dict[str, Any],
        target: _Target,
        counts: Counter[str],
        *,
        probe: bool = True,
        as_read: Mapping[int, dict[str, Any]] | None = None,
        guard: Guard | None = None,
    ) -> None:
        """Send `tasks` and settle them. `as_read`: records as read, by task; one BC refuses is
        kept as read (stage `transform`), so a retry transforms it again with the flow's
        transformers as they are then (a fixed transform fixes the record). `guard` is called
        before each write goes out (the lease's check: a run that lost it stops writing)."""
        ready, updates = [], []
        payloads: dict[int, dict[str, Any]] = {}
        kept = dict(as_read or {})
        for task in tasks:
            payload = task.payload
            if task.stage == "read":  # not a record: there is nothing to deliver
                updates.append(TaskUpdate(task.id, TaskStatus.FAILED, error=task.last_error))
                counts[TaskStatus.FAILED.value] += 1
                continue
            if task.stage == "transform" and chain is not None:
                try:
                    transformed = chain.apply(payload, context)
                except TransformError as exc:
                    updates.append(
                        TaskUpdate(task.id, TaskStatus.FAILED, error=f"transform: {exc}")
                    )
                    counts[TaskStatus.FAILED.value] += 1
                    continue
                if transformed is None:
                    updates.append(TaskUpdate(task.id, TaskStatus.DONE, error="filtered"))
                    counts["filtered"] += 1
                    continue
                payloads[task.id] = payload = transformed
                kept[task.id] = task.payload
            ready.append((task, payload))
        self.store.settle(updates)
        if not ready:
            return
        self.store.mark([task.id for task, _ in ready], TaskStatus.SENDING, attempt=True)
        started = datetime.now(UTC)
        with request_trail() as requests:
            results = await target.deliver([payload for _, payload in ready], guard)
        ended = datetime.now(UTC)
        updates, lost, attempts = [], [], []
        for (task, _), result in zip(ready, results, strict=True):
            outcome = _outcome(result, target.action)
            update = _update(task.id, outcome, result, payloads.get(task.id))
            if outcome == Outcome.FAILED and task.id in kept:
                update.payload, update.stage = kept[task.id], "transform"
            updates.append(update)
            attempts.append(_attempt(task, outcome, result, started, ended))
            if outcome == Outcome.UNKNOWN:
                lost.append(task)
            else:
                counts[outcome] += 1
        committed = target.committed()
        # unknown is recorded before BC is read, in case we die here
        self.store.settle(updates, cursor=committed, attempts=attempts, requests=requests)
        if lost and probe:
            await self._resolve(lost, target, counts, guard)
        else:
            counts[TaskStatus.UNKNOWN.value] += len(lost)

    async def _settle_unclear(
        self, name: str, run_id: int, target: _Target, counts: Counter[str]
    ) -> None:
        """Before the first chunk: tasks whose answer was lost, and (for targets that cannot be
        sent twice) tasks a killed run left `sending`, settled where reading BC tells."""
        unclear = self.store.unclear(name, run_id, stale_sending=not target.repeatable)
        if unclear:
            await self._resolve(unclear, target, counts)

    async def _resolve(
        self, tasks: list[Task], target: _Target, counts: Counter[str], guard: Guard | None = None
    ) -> None:
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
                        task.id,
                        TaskStatus.DONE,
                        error=f"read in BC: {check.reason}",
                        result_id=check.id,
                    )
                )
                counts[Outcome.DONE.value] += 1
            elif check.verdict is Verdict.NOT_DONE:
                updates.append(
                    TaskUpdate(task.id, TaskStatus.PENDING, error=f"read in BC: {check.reason}")
                )
                again.append(task)
            else:
                counts[TaskStatus.UNKNOWN.value] += 1
        self.store.settle(updates)
        if again:
            await self._deliver(again, None, {}, target, counts, probe=False, guard=guard)


def _update(
    task_id: int, outcome: str, result: RecordResult, payload: dict[str, Any] | None
) -> TaskUpdate:
    if outcome == Outcome.UNKNOWN:
        error = (
            f"{result.message}; then `bcbridge tasks retry {task_id}` to send it or "
            f"`bcbridge tasks skip {task_id}` if it is done"
        )
        return TaskUpdate(
            task_id, TaskStatus.UNKNOWN, error=error, result_id=result.id, payload=payload
        )
    if outcome == Outcome.FAILED:
        error = " ".join(
            part for part in (str(result.status or ""), result.code, result.message) if part
        )
        return TaskUpdate(task_id, TaskStatus.FAILED, error=error, payload=payload)
    note = None if result.ok else result.message  # e.g. a delete that found nothing to delete
    return TaskUpdate(task_id, TaskStatus.DONE, error=note, result_id=result.id, payload=payload)


def _attempt(
    task: Task, outcome: str, result: RecordResult, started: datetime, ended: datetime
) -> Attempt:
    """The attempt of `task` that `result` ended (its number: one more than the task had, as
    `Store.mark` counted it), with BC's answer to its own part of the delivery."""
    failed = outcome in (Outcome.FAILED, Outcome.UNKNOWN)
    return Attempt(
        task.id,
        task.attempts + 1,
        started,
        ended,
        outcome,
        http_status=result.status,
        error_code=result.code if failed else None,
        error_message=result.message if failed else None,
        request_id=result.request_id,
        method=result.method,
    )


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
    records: AsyncIterator[dict[str, Any] | BadRecord], size: int
) -> AsyncIterator[list[dict[str, Any] | BadRecord]]:
    chunk: list[dict[str, Any] | BadRecord] = []
    async for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _sharing_bcs_budget(store: Store) -> ClientFactory:
    """BC clients that share BC's request budget (in flight, per 5 minutes) with every process
    of a PostgreSQL store: serve, workers, CLI runs (`bcbridge.budget`); with any other store
    each process keeps BC's limits by itself."""
    if sa.engine.make_url(store.url).get_backend_name() != "postgresql":
        return BusinessCentralClient
    from bcbridge.budget import shared_budget  # psycopg: there with a PostgreSQL store only

    def client(settings: ClientSettings) -> BusinessCentralClient:
        return BusinessCentralClient(settings, budget=shared_budget(store.url, settings))

    return client


class _Clients:
    """One BC client per configured client name, open as long as `stack` (a run, a worker)."""

    def __init__(self, project: ProjectConfig, stack: AsyncExitStack, factory: ClientFactory):
        self.project = project
        self.stack = stack
        self.factory = factory
        self.open: dict[str, BusinessCentralClient] = {}
        self._opening = anyio.Lock()  # a worker's jobs share them: each client is opened once

    async def get(self, name: str) -> BusinessCentralClient:
        """The client `name` of the project; one opened again when its settings changed (a
        worker's project reloaded), the old one left to its jobs under way until `stack` ends."""
        settings = self.project.client_settings(name)
        async with self._opening:
            if name not in self.open or self.open[name].settings != settings:
                client = self.factory(settings)
                self.open[name] = await self.stack.enter_async_context(client)
        return self.open[name]
