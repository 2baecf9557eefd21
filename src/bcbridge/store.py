"""The state store: cursors, runs and tasks, in any SQLAlchemy database (SQLite by default).

The schema is owned by Alembic migrations (`bcbridge/migrations`), applied on open, so an
upgrade of bcbridge keeps the data of an older store. Every change that matters for crash safety
is its own committed transaction: a task is marked `sending` before its record goes to BC and
`done`/`failed` after; a cursor moves only after the records before it are written.

One process runs a flow at a time: it holds the flow's lease (a row in `leases`), renews its
heartbeat while it works and deletes it at the end. A lease whose heartbeat is older than the
TTL (`BCBRIDGE_LEASE_TTL`, 30 s), or whose process on this machine is gone, may be taken over.
A database that cannot be written (read-only, full, deleted) is a one-line `StoreError` naming
the store; the transaction it stopped is rolled back whole.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bcbridge import _json, _redact
from bcbridge.errors import Busy, ConfigError

__all__ = [
    "DEFAULT_URL",
    "LEASE_TTL_ENV",
    "UNFINISHED",
    "FlowBusy",
    "Lease",
    "LeaseKeeper",
    "LeaseLost",
    "RunStatus",
    "Store",
    "StoreError",
    "Task",
    "TaskSearch",
    "TaskStatus",
    "TaskUpdate",
    "migrate",
    "payload_hash",
]


class RunStatus(StrEnum):
    """How a run stands or ended; stored as its plain value."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"  # the run finished, some records failed
    INTERRUPTED = "interrupted"  # stopped with Ctrl-C between chunks
    ERROR = "error"  # the run stopped on an error
    CRASHED = "crashed"  # left `running` by a process that died; set by the next run
    BUSY = "busy"  # never stored: the run did not start, another process holds the flow's lease


class TaskStatus(StrEnum):
    """Where a record's delivery stands; stored as its plain value."""

    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"  # sent, answer lost, and not safe to send again (non-idempotent)
    SKIPPED = "skipped"  # settled by hand (`tasks skip`): nothing more to do


UNFINISHED = (RunStatus.RUNNING, RunStatus.CRASHED, RunStatus.INTERRUPTED)  # a new run resumes
LEASE_TTL_ENV = "BCBRIDGE_LEASE_TTL"
DEFAULT_LEASE_TTL = 30.0  # seconds without a heartbeat before a flow's lease may be taken over

DEFAULT_URL = "sqlite:///.bcbridge/state.db"
metadata = sa.MetaData()

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("incoming", sa.String(200), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(200), nullable=False, index=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("counts", sa.Text, nullable=False, default="{}"),
)
tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("record_key", sa.String(400)),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("result_id", sa.String(64)),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("stage", sa.String(20), nullable=False, server_default="send"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("flow", "hash", name="uq_tasks_flow_hash"),
    sa.Index("ix_tasks_flow_status", "flow", "status"),
    sa.Index("ix_tasks_record_key", "record_key"),  # the dashboard's search by identifier
)
# A delivery of a chunk of tasks (a run's or a retry's): the request-log lines (masked, as the
# request log writes them) of the requests that served it, kept once for all its tasks.
task_deliveries = sa.Table(
    "task_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("requests", sa.Text, nullable=False),  # a JSON list of request-log lines
)
# Every attempt of a task: its outcome, BC's answer to its own part of the request, and the
# delivery it was part of. The last KEPT_ATTEMPTS per task are kept.
task_attempts = sa.Table(
    "task_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("delivery_id", sa.Integer),  # None: no request was made (a file, a database)
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("method", sa.String(10)),  # of the task's own part of the $batch
    sa.Column("http_status", sa.Integer),
    sa.Column("error_code", sa.String(200)),
    sa.Column("error_message", sa.Text),
    sa.Column("request_id", sa.String(200)),  # BC's request-id of the task's own answer
    sa.Index("ix_task_attempts_task", "task_id", "attempt"),
)
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("flow", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),  # host:pid:random, unique per run
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

# the chunks of a run split over workers (bcbridge.engine) that were delivered, with their counts
chunks = sa.Table(
    "chunks",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("counts", sa.Text, nullable=False),
    sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
)


def payload_hash(record: Any) -> str:
    """The SHA-256 of a record's canonical encoding (sorted keys): how a task is found again."""
    # the store's encoding: the same digest as plain orjson when no Decimal is in the record
    return hashlib.sha256(_json.store_dumps(record, option=_json.OPT_SORT_KEYS)).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; every moment the store writes is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _shown(url: str) -> str:
    """The store's URL for messages, its password masked, otherwise as written (a round trip
    through a URL parser would change a SQLite path's slashes)."""
    password = urlsplit(url).password
    if password:
        url = url.replace(f":{password}@", f":{_redact.MASK}@", 1)
    return _redact.text(url)


# --- errors -------------------------------------------------------------------------------------


class StoreError(ConfigError):
    """The store cannot be read or written (read-only, full, deleted, unreachable). Every store
    operation is one transaction, so such an error leaves nothing half-written."""

    def __init__(self, message: str):
        super().__init__(message)  # the message names the store itself


class LeaseLost(StoreError):
    """This process no longer holds the flow's lease (its heartbeat stalled past the TTL and
    another process took the flow over): the run must stop."""


class FlowBusy(Busy):
    """Another live process holds the flow's lease."""

    def __init__(self, lease: Lease):
        self.lease = lease
        super().__init__(
            f"flow {lease.flow!r} is already running: {lease.describe()}; "
            "wait for it to end, or run with --wait"
        )


def lease_ttl_from_env() -> float:
    text = os.environ.get(LEASE_TTL_ENV, "").strip()
    if not text:
        return DEFAULT_LEASE_TTL
    try:
        ttl = float(text)
    except ValueError:
        ttl = 0.0
    if not 0.5 <= ttl <= 86_400:
        raise ConfigError(
            f"{text!r} is not a lease TTL: give seconds between 0.5 and 86400, e.g. 30",
            field=LEASE_TTL_ENV,
        )
    return ttl


@dataclass(frozen=True)
class Lease:
    """The right to run one flow, held by one process until released or expired."""

    flow: str
    holder: str
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime

    def describe(self) -> str:
        """Who holds the lease and how lately it was renewed, for a person."""
        since = f"{self.acquired_at:%Y-%m-%d %H:%M:%S} UTC"
        beat = max(0.0, (_now() - self.heartbeat_at).total_seconds())
        return (
            f"held by pid {self.pid} on {self.host} since {since} (last heartbeat {beat:.0f}s ago)"
        )


def _this_machine() -> str:
    """Where a pid names the same process: this host, boot and pid namespace (two containers
    may share a host name and a store, never a pid namespace)."""
    parts = [socket.gethostname()]
    with suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


_MACHINE = _this_machine()


def new_holder() -> str:
    """A holder id unique to this run: host and pid for people; the machine, to tell whether
    the pid can be checked from here; a random part, as pids are reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{_MACHINE}:{secrets.token_hex(4)}"


def _died_here(lease: Lease) -> bool:
    """The holder ran on this machine and its process is gone (killed, crashed): its lease need
    not be waited out. A pid reused by another process only delays the take-over to the TTL."""
    if os.name != "posix" or lease.holder.split(":")[2:3] != [_MACHINE]:
        return False
    try:
        os.kill(lease.pid, 0)  # signal 0: is there such a process?
    except ProcessLookupError:
        return True
    except OSError:
        return False  # there is one, of another user
    return False


def _lease(row: Any) -> Lease:
    return Lease(
        flow=row["flow"],
        holder=row["holder"],
        host=row["host"],
        pid=int(row["pid"]),
        acquired_at=_utc(row["acquired_at"]),
        heartbeat_at=_utc(row["heartbeat_at"]),
        expires_at=_utc(row["expires_at"]),
    )


@dataclass
class Task:
    """One record's delivery for one flow, as the store keeps it.

    `status` is a `TaskStatus` value; `payload` the record (after the transformers when `stage`
    is ``send``, as read when it is ``transform``: a retry transforms it again); `hash` finds it
    when the record comes again; `result_id` is what BC or the writer answered with.
    """

    id: int
    flow: str
    run_id: int
    record_key: str | None
    hash: str
    status: str
    attempts: int
    last_error: str | None
    result_id: str | None
    payload: dict[str, Any]
    stage: str
    created_at: datetime
    updated_at: datetime


@dataclass
class TaskUpdate:
    """The outcome of one task, for `Store.settle`."""

    id: int
    status: str
    error: str | None = None
    result_id: str | None = None
    payload: dict[str, Any] | None = None  # replaces the stored payload (a retried transform)
    stage: str = "send"  # the stage of a replaced payload: "transform" for a record as read


@dataclass
class Attempt:
    """One attempt of a task, for `Store.settle` and from `Store.attempts`: its outcome, and
    BC's answer to the task's own part of the request (`method`, status, error, request id);
    `error_message` is masked again when stored. `requests` (read only): the request-log lines
    (masked JSON) of the delivery the attempt was part of (`Store.settle`'s `requests`)."""

    task_id: int
    attempt: int
    started_at: datetime
    ended_at: datetime
    outcome: str
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    method: str | None = None
    requests: list[str] = field(default_factory=list)


KEPT_ATTEMPTS = 20  # per task: older attempts are dropped as new ones come


@dataclass(frozen=True)
class TaskSearch:
    """Which tasks `Store.search_tasks` finds: of `flow`, in `status`, whose record key is
    `key`, created from `since` and before `until` (UTC); None matches anything."""

    flow: str | None = None
    status: str | None = None
    key: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        """The SQL conditions; each one an index can serve (flow and status, record key)."""
        conditions: list[sa.ColumnElement[bool]] = []
        if self.flow:
            conditions.append(tasks.c.flow == self.flow)
        if self.status:
            conditions.append(tasks.c.status == self.status)
        if self.key:
            conditions.append(tasks.c.record_key == self.key)
        if self.since is not None:
            conditions.append(tasks.c.created_at >= self.since)
        if self.until is not None:
            conditions.append(tasks.c.created_at < self.until)
        return conditions


# --- opening and migrating ----------------------------------------------------------------------


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (also in its `file:...?uri=true` form); None for other
    databases and for in-memory SQLite."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    name = parsed.database
    if parsed.query.get("uri") == "true":
        name = name.removeprefix("file:").partition("?")[0]
        if parsed.query.get("mode") == "memory":
            return None
    if not name or name == ":memory:":
        return None
    return Path(name)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` for processes of this machine, which are the only ones that
    can share a SQLite file. Where the lock file cannot be made (a read-only folder) nobody
    can create or change the store there either, so there is nothing to serialise."""
    if sys.platform == "win32":  # no fcntl; concurrent first opens are not guarded there
        yield
        return
    import fcntl

    try:
        handle = path.open("a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    """A PostgreSQL advisory lock, held by a connection of its own while the migration runs."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            conn.commit()  # the lock belongs to the session and outlives the transaction
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()


_MIGRATION_LOCK = 0x6263627269646765  # "bcbridge" as a bigint: our advisory lock's key


def _migration_lock(url: str) -> AbstractContextManager[None]:
    """Two processes opening a new store at once must not both create its tables."""
    path = sqlite_path(url)
    if path is not None:
        return _file_lock(path.with_name(path.name + ".lock"))
    if sa.engine.make_url(url).get_backend_name() == "postgresql":
        return _advisory_lock(url)
    return nullcontext()


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to the newest schema (Alembic `upgrade head`), or to an
    older `revision` (tests of an upgrade start from one). Safe for processes that open one new
    store at the same moment: they take turns."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    with _migration_lock(url):
        command.upgrade(config, revision)


def _store_engine(url: str) -> sa.Engine:
    """An engine for the store; a SQLite file's folder is made first. SQLite waits up to 30 s
    for another process's write (a heartbeat, another flow's run) instead of the default 5 s."""
    path = sqlite_path(url)
    if path is None and sa.engine.make_url(url).get_driver_name() == "psycopg":
        # No server-side prepared statements: psycopg prepares a query run 5 times, and
        # PostgreSQL may then keep a generic plan made while the tasks table was small (no
        # statistics yet); the lookup of a chunk's hashes then scanned every task of the flow,
        # 40-140 ms a chunk and growing with the table, where a plan per query takes 3 ms.
        return sa.create_engine(url, connect_args={"prepare_threshold": None})
    if path is None:
        return sa.create_engine(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url, connect_args={"timeout": 30})


# Words of the drivers (SQLite, psycopg) -> what happened and what to do.
_ADVICE = (
    (
        ("database or disk is full", "no space left", "could not extend file", "disk full"),
        "the disk (or the database's size limit) is full: free some space and run again; "
        "the run resumes where it stopped",
    ),
    (
        ("readonly database", "read-only", "read only"),
        "the store is read-only: make the database (and its folder) writable, "
        "or point `store:` at a writable place",
    ),
    (
        ("unable to open database file", "disk i/o error"),
        "the store's file cannot be opened or written: check that its folder exists and "
        "is writable",
    ),
    (
        ("no such table",),
        "the store's tables are gone (was the file deleted or replaced while in use?): "
        "run again to create a new store",
    ),
    (
        ("database is locked",),
        "another process kept the store locked too long: try again",
    ),
)


def _reason(exc: BaseException) -> str:
    """The driver's words (not SQLAlchemy's wrapping, which adds the SQL), on one line."""
    text = str(getattr(exc, "orig", None) or exc)
    return _redact.text(" ".join(line.strip() for line in text.splitlines() if line.strip()))


def _advice(reason: str) -> str | None:
    lowered = reason.lower()
    return next((text for words, text in _ADVICE if any(word in lowered for word in words)), None)


def _explain(url: str, exc: BaseException) -> StoreError:
    reason = _reason(exc)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        advice = (
            f"the store file {path} is gone (deleted while in use, or its folder is missing): "
            "run again to create a new store, or restore the file"
        )
    else:
        advice = _advice(reason) or "check the database behind `store:` and run again"
    return StoreError(f"store {_shown(url)}: {reason}; {advice}")


# --- the store ----------------------------------------------------------------------------------


class Store:
    """The state of a project's flows in a SQL database: cursors, runs, tasks and leases.

    ``Store(url)`` opens (and creates or migrates) the database at any SQLAlchemy URL; the
    default is ``sqlite:///.bcbridge/state.db``. Each method is one transaction. `FlowRunner`
    drives it; programs mostly read it (`runs`, `tasks`, `task`, `count_tasks`). Errors of
    the database are one-line `StoreError`s naming the store (its password masked).
    """

    def __init__(self, url: str = DEFAULT_URL, *, lease_ttl: float | None = None):
        self.url = url
        self.lease_ttl = lease_ttl if lease_ttl is not None else lease_ttl_from_env()
        try:
            self.engine = _store_engine(url)
            migrate(url)
        except (sa.exc.SQLAlchemyError, ImportError, OSError) as exc:
            reason = _reason(exc)
            advice = _advice(reason)
            raise ConfigError(
                f"cannot open the store at {_shown(url)}: {reason}"
                + (f"; {advice}" if advice else ""),
                field="store",
            ) from None

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """One transaction; a database error rolls it back whole and becomes a StoreError."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise _explain(self.url, exc) from None

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise _explain(self.url, exc) from None

    # --- cursors -------------------------------------------------------------------------

    def cursor(self, incoming: str) -> dict[str, Any] | None:
        """The saved state of a cursor (an incoming's read position, or a ``writer:<flow>``
        file offset); None before the first save."""
        with self._connect() as conn:
            text = conn.execute(
                sa.select(cursors.c.state).where(cursors.c.incoming == incoming)
            ).scalar()
        return orjson.loads(text) if text else None

    def save_cursor(self, incoming: str, state: dict[str, Any]) -> None:
        """Replace a cursor's state."""
        with self._begin() as conn:
            _put_cursor(conn, incoming, state)

    def rename_flow(self, old: str, new: str) -> None:
        """Move what the store keeps of flow `old` (runs, tasks and their attempts, its
        positions in its incoming, its writer's offset) to the name `new`, so that a renamed
        flow goes on where it was (a record it sent is not sent again). FlowBusy while a
        process runs the flow; StoreError if the store holds a flow named `new` already."""
        lease = self.acquire_lease(old)  # no run of it may start meanwhile
        try:
            with self._begin() as conn:
                taken = (
                    conn.execute(sa.select(runs.c.id).where(runs.c.flow == new).limit(1)).first()
                    or conn.execute(
                        sa.select(tasks.c.id).where(tasks.c.flow == new).limit(1)
                    ).first()
                )
                if taken:
                    raise StoreError(
                        f"the store holds runs or tasks of a flow named {new!r} already: "
                        "choose another name"
                    )
                conn.execute(runs.update().where(runs.c.flow == old).values(flow=new))
                conn.execute(tasks.update().where(tasks.c.flow == old).values(flow=new))
                for name in conn.execute(sa.select(cursors.c.incoming)).scalars().all():
                    moved = _renamed_cursor(name, flow=(old, new))
                    if moved != name:
                        conn.execute(
                            cursors.update()
                            .where(cursors.c.incoming == name)
                            .values(incoming=moved)
                        )
        finally:
            self.release_lease(lease)

    def rename_incoming(self, old: str, new: str) -> None:
        """Keep the flows' positions in incoming `old` under its new name `new` (a cursor is
        named <flow>:<incoming>): the next run reads on from where the last one stopped."""
        with self._begin() as conn:
            for name in conn.execute(sa.select(cursors.c.incoming)).scalars().all():
                moved = _renamed_cursor(name, incoming=(old, new))
                if moved != name:
                    conn.execute(
                        cursors.update().where(cursors.c.incoming == name).values(incoming=moved)
                    )

    # --- leases --------------------------------------------------------------------------

    def acquire_lease(self, flow: str, holder: str | None = None) -> Lease:
        """Take the flow's lease if it is free, expired (its holder stopped heartbeating), held
        by a process of this machine that is gone (killed), or already `holder`'s; else raise
        FlowBusy naming the live holder. One statement decides (insert, or take over), so two
        processes can never both get it."""
        now = _now()
        values = {
            "flow": flow,
            "holder": holder or new_holder(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "acquired_at": now,
            "heartbeat_at": now,
            "expires_at": now + timedelta(seconds=self.lease_ttl),
        }
        lease = self._take(values, now)
        if lease.holder != values["holder"] and _died_here(lease):
            lease = self._take(values, now, dead=lease.holder)  # unless another was quicker
        if lease.holder != values["holder"]:
            raise FlowBusy(lease)
        return lease

    def _take(self, values: dict[str, Any], now: datetime, dead: str | None = None) -> Lease:
        """Insert the lease, or take it over if expired, ours, or `dead`'s; the lease after."""
        taken = [leases.c.expires_at < now, leases.c.holder == values["holder"]]
        if dead is not None:
            taken.append(leases.c.holder == dead)
        with self._begin() as conn:
            dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
            if dialect is None:
                raise StoreError(
                    f"store {_shown(self.url)}: flow leases need SQLite or PostgreSQL, "
                    f"not {conn.dialect.name}; point `store:` at one of them"
                )
            conn.execute(
                dialect.insert(leases)
                .values(**values)
                .on_conflict_do_update(
                    index_elements=[leases.c.flow],
                    set_={k: v for k, v in values.items() if k != "flow"},
                    where=sa.or_(*taken),
                )
            )
            row = (
                conn.execute(sa.select(leases).where(leases.c.flow == values["flow"]))
                .mappings()
                .one()
            )
        return _lease(row)

    def renew_lease(self, lease: Lease) -> bool:
        """Move the lease's heartbeat and expiry on; False if it is no longer ours."""
        now = _now()
        with self._begin() as conn:
            changed = conn.execute(
                leases.update()
                .where(leases.c.flow == lease.flow, leases.c.holder == lease.holder)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=self.lease_ttl))
            )
        return changed.rowcount == 1

    def release_lease(self, lease: Lease) -> None:
        """Give the flow free (only if the lease is still ours)."""
        with self._begin() as conn:
            conn.execute(
                leases.delete().where(leases.c.flow == lease.flow, leases.c.holder == lease.holder)
            )

    def lease(self, flow: str) -> Lease | None:
        """Who holds the flow's lease, expired or not; None when nobody does."""
        with self._connect() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.flow == flow)).mappings().first()
        return _lease(row) if row else None

    # --- runs ----------------------------------------------------------------------------

    def start_run(self, flow: str, *, recover: bool = True, holder: str | None = None) -> int:
        """A new run. With `holder`, the run's process must hold the flow's lease (LeaseLost
        if not), checked in the same transaction. With `recover`, runs of this flow still
        marked running were killed: they become `crashed`, and the new run resumes their work.
        That is only true while one runner per flow works at a time, which the lease ensures;
        a caller without a lease must ensure it itself."""
        with self._begin() as conn:
            if holder is not None:
                owner = conn.execute(
                    sa.select(leases.c.holder).where(leases.c.flow == flow)
                ).scalar()
                if owner != holder:
                    raise LeaseLost(
                        f"store {_shown(self.url)}: the lease of flow {flow!r} was taken "
                        "over before its run started; run again"
                    )
            if recover:
                conn.execute(
                    runs.update()
                    .where(runs.c.flow == flow, runs.c.status == RunStatus.RUNNING)
                    .values(status=RunStatus.CRASHED, ended_at=_now())
                )
            result = conn.execute(
                runs.insert().values(
                    flow=flow, started_at=_now(), status=RunStatus.RUNNING, counts="{}"
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def end_run(self, run_id: int, status: str, counts: dict[str, int]) -> None:
        """Close a run with its `RunStatus` value and counts per outcome."""
        with self._begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(ended_at=_now(), status=status, counts=orjson.dumps(counts).decode())
            )

    def runs(
        self, flow: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The latest runs (of `flow`, or of all flows), newest first, as dicts; `offset`
        leaves out that many of the newest (a page of a long history)."""
        stmt = sa.select(runs).order_by(runs.c.id.desc()).limit(limit).offset(offset)
        if flow:
            stmt = stmt.where(runs.c.flow == flow)
        with self._connect() as conn:
            return [
                {**row, "counts": orjson.loads(row["counts"])}
                for row in conn.execute(stmt).mappings()
            ]

    # --- tasks ---------------------------------------------------------------------------

    def register(
        self,
        flow: str,
        run_id: int,
        items: Sequence[tuple[str | None, dict[str, Any]]],
        *,
        stage: str = "send",
        redeliver_done: bool = True,
        resend_in_flight: bool = True,
    ) -> list[Task]:
        """One task per record, in input order, found by payload hash.

        A record this flow has seen before gets its task back. If that task is `done` in this run
        or in an unfinished one (crashed, interrupted), the record was delivered and the caller
        skips it: that is how a restarted run resumes. `unknown` and `skipped` tasks stay as they
        are: only a probe of BC or a person (`tasks retry`, `tasks skip`) settles them.

        Any other earlier task (done in a finished run, failed, or in flight when a run died) is
        moved to this run as `pending`: the record came again and is sent again; the target
        matches what it writes first (updates, upserts, deletes, creates on a key field), so
        nothing doubles. Two kinds of target take less:
        - without `redeliver_done` (a writer that appends, a bound action), a task done in any run
          stays done: the same record is not written or acted on twice;
        - without `resend_in_flight` (a bound action), a task found `sending` from an earlier
          run, whose answer nobody saw, becomes `unknown` instead of being sent again."""
        now = _now()
        digests = [payload_hash(payload) for _, payload in items]
        with self._begin() as conn:
            known = self._by_hash(conn, flow, digests)
            self._claim(
                conn,
                run_id,
                list(known.values()),
                redeliver_done=redeliver_done,
                resend_in_flight=resend_in_flight,
            )
            new = {
                digest: (key, payload)
                for digest, (key, payload) in zip(digests, items, strict=True)
                if digest not in known
            }
            if new:
                conn.execute(
                    tasks.insert(),
                    [
                        {
                            "flow": flow,
                            "run_id": run_id,
                            "record_key": key,
                            "hash": digest,
                            "status": TaskStatus.PENDING,
                            "stage": stage,
                            "attempts": 0,
                            "payload": _json.store_dumps(payload).decode(),
                            "created_at": now,
                            "updated_at": now,
                        }
                        for digest, (key, payload) in new.items()
                    ],
                )
            known = self._by_hash(conn, flow, digests)
        return [known[digest] for digest in digests]

    # Task statuses no run changes by itself: "unknown" (sent, answer lost: did BC act?) waits for
    # a probe of BC or a person; "skipped" is a person's word that the task needs nothing more.
    SETTLED_BY_HAND = (TaskStatus.UNKNOWN, TaskStatus.SKIPPED)

    @staticmethod
    def _claim(
        conn: sa.Connection,
        run_id: int,
        found: list[Task],
        *,
        redeliver_done: bool = True,
        resend_in_flight: bool = True,
    ) -> None:
        earlier = [t for t in found if t.run_id != run_id and t.status not in Store.SETTLED_BY_HAND]
        if not earlier:
            return
        unfinished = set(
            conn.execute(
                sa.select(runs.c.id).where(
                    runs.c.id.in_({t.run_id for t in earlier}), runs.c.status.in_(UNFINISHED)
                )
            ).scalars()
        )
        resumed, again, lost = [], [], []
        for task in earlier:
            if task.status == TaskStatus.DONE and (task.run_id in unfinished or not redeliver_done):
                resumed.append(task.id)
            elif task.status == TaskStatus.SENDING and not resend_in_flight:
                lost.append(task)
            else:
                again.append(task.id)
        if resumed:
            conn.execute(tasks.update().where(tasks.c.id.in_(resumed)).values(run_id=run_id))
        if again:
            conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(again))
                .values(run_id=run_id, status=TaskStatus.PENDING, updated_at=_now())
            )
        Store._mark_lost(conn, run_id, lost)

    @staticmethod
    def _mark_lost(conn: sa.Connection, run_id: int, lost: Sequence[Task]) -> None:
        """`sending` tasks of a run that ended before their answer was recorded become `unknown`."""
        for task in lost:
            conn.execute(
                tasks.update()
                .where(tasks.c.id == task.id, tasks.c.status == TaskStatus.SENDING)
                .values(
                    run_id=run_id,
                    status=TaskStatus.UNKNOWN,
                    updated_at=_now(),
                    last_error=(
                        f"run {task.run_id} was sending it and ended before BC's answer was "
                        "recorded (killed?), so BC may or may not have carried it out; it is not "
                        f"sent again by itself: check BC, then `bcbridge tasks retry {task.id}` "
                        f"to send it or `bcbridge tasks skip {task.id}` if it is done"
                    ),
                )
            )

    def unclear(self, flow: str, run_id: int, *, stale_sending: bool) -> list[Task]:
        """The tasks of `flow` whose outcome nobody knows, moved to `run_id`: the `unknown` ones,
        and with `stale_sending` (a target that cannot be sent twice) those an earlier run left
        `sending` (it was killed before BC's answer was recorded), which become `unknown` here.
        A run calls this first, to settle them by reading BC where it can."""
        with self._begin() as conn:
            if stale_sending:
                stale = conn.execute(
                    sa.select(tasks).where(
                        tasks.c.flow == flow,
                        tasks.c.status == TaskStatus.SENDING,
                        tasks.c.run_id != run_id,
                    )
                ).mappings()
                self._mark_lost(conn, run_id, [_task(row) for row in stale])
            conn.execute(
                tasks.update()
                .where(tasks.c.flow == flow, tasks.c.status == TaskStatus.UNKNOWN)
                .values(run_id=run_id)
            )
            rows = conn.execute(
                sa.select(tasks)
                .where(tasks.c.flow == flow, tasks.c.status == TaskStatus.UNKNOWN)
                .order_by(tasks.c.id)
            ).mappings()
            return [_task(row) for row in rows]

    @staticmethod
    def _by_hash(conn: sa.Connection, flow: str, digests: list[str]) -> dict[str, Task]:
        found: dict[str, Task] = {}
        for start in range(0, len(digests), 500):  # bound the IN list for every backend
            stmt = sa.select(tasks).where(
                tasks.c.flow == flow, tasks.c.hash.in_(digests[start : start + 500])
            )
            found.update((row["hash"], _task(row)) for row in conn.execute(stmt).mappings())
        return found

    def mark(
        self,
        task_ids: Iterable[int],
        status: str,
        *,
        error: str | None = None,
        result_id: str | None = None,
        attempt: bool = False,
    ) -> None:
        """Set the status (and error, result id) of tasks in one transaction; `attempt` counts
        one more delivery attempt, as when tasks are marked `sending`."""
        ids = list(task_ids)
        if not ids:
            return
        values: dict[str, Any] = {
            "status": status,
            "updated_at": _now(),
            "last_error": _masked(error),
        }
        if result_id is not None:
            values["result_id"] = result_id
        if attempt:
            values["attempts"] = tasks.c.attempts + 1
        with self._begin() as conn:
            conn.execute(tasks.update().where(tasks.c.id.in_(ids)).values(**values))

    def settle(
        self,
        updates: Sequence[TaskUpdate],
        *,
        cursor: tuple[str, dict[str, Any]] | None = None,
        attempts: Sequence[Attempt] = (),
        requests: Sequence[str] = (),
    ) -> None:
        """Record the outcome of many tasks in one transaction, with the `cursor` (name, state)
        they bring, if any: a file writer's offset is saved with the tasks it wrote, or not;
        and the `attempts` that brought them, one delivery whose `requests` (request-log lines)
        served them all (see `Attempt`)."""
        if not updates and cursor is None and not attempts:
            return
        now = _now()
        with self._begin() as conn:
            if cursor is not None:
                _put_cursor(conn, *cursor)
            if attempts:
                _add_attempts(conn, attempts, requests)
            _update_tasks(conn, [_task_values(update, now) for update in updates])

    def attempts(self, task_id: int, limit: int = KEPT_ATTEMPTS) -> list[Attempt]:
        """The latest attempts of a task, newest first."""
        stmt = (
            sa.select(task_attempts, task_deliveries.c.requests)
            .outerjoin(task_deliveries, task_deliveries.c.id == task_attempts.c.delivery_id)
            .where(task_attempts.c.task_id == task_id)
            .order_by(task_attempts.c.attempt.desc(), task_attempts.c.id.desc())
            .limit(limit)
        )
        with self._connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            Attempt(
                **{k: v for k, v in row.items() if k not in ("id", "delivery_id", "requests")},
                requests=orjson.loads(row["requests"]) if row["requests"] else [],
            )
            for row in rows
        ]

    def task(self, task_id: int) -> Task | None:
        """One task by id; None when there is none."""
        with self._connect() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
        return _task(row) if row else None

    # --- chunks of a run split over workers (bcbridge.engine) ---------------------------

    def chunk_done(self, flow: str, run_id: int, seq: int, counts: dict[str, int]) -> None:
        """Record that chunk `seq` of run `run_id` was delivered (once: a repeat is ignored)."""
        with self._begin() as conn:
            exists = conn.execute(
                sa.select(chunks.c.seq).where(chunks.c.run_id == run_id, chunks.c.seq == seq)
            ).first()
            if exists is None:
                conn.execute(
                    chunks.insert().values(
                        run_id=run_id,
                        seq=seq,
                        flow=flow,
                        counts=orjson.dumps(counts).decode(),
                        done_at=_now(),
                    )
                )

    def chunks_done(self, run_id: int) -> dict[int, dict[str, int]]:
        """The delivered chunks of run `run_id`: seq -> counts."""
        with self._connect() as conn:
            rows = conn.execute(
                sa.select(chunks.c.seq, chunks.c.counts).where(chunks.c.run_id == run_id)
            ).all()
        return {int(seq): orjson.loads(counts) for seq, counts in rows}

    def drop_chunks(self, run_id: int) -> None:
        """Forget the chunks of a run that ended (its counts are in the run)."""
        with self._begin() as conn:
            conn.execute(chunks.delete().where(chunks.c.run_id == run_id))

    def live_leases(self, prefix: str) -> list[Lease]:
        """The leases whose name starts with `prefix` and that are alive: not expired, and
        not held by a process of this machine that is gone."""
        now = _now()
        with self._connect() as conn:
            rows = conn.execute(
                sa.select(leases).where(leases.c.flow.startswith(prefix, autoescape=True))
            ).mappings()
            found = [_lease(row) for row in rows]
        return [lease for lease in found if lease.expires_at >= now and not _died_here(lease)]

    def tasks_by_id(self, task_ids: Sequence[int]) -> list[Task]:
        """The tasks with these ids, in id order (a chunk handed to a worker, `bcbridge.engine`)."""
        ids = sorted(set(task_ids))
        found: list[Task] = []
        with self._connect() as conn:
            for start in range(0, len(ids), 500):  # bound the IN list for every backend
                stmt = sa.select(tasks).where(tasks.c.id.in_(ids[start : start + 500]))
                found.extend(_task(row) for row in conn.execute(stmt).mappings())
        return sorted(found, key=lambda task: task.id)

    def tasks(
        self, flow: str | None = None, status: str | None = None, limit: int | None = 50
    ) -> list[Task]:
        """The latest tasks, newest first, of `flow` and in `status` when given."""
        stmt = sa.select(tasks).order_by(tasks.c.id.desc()).limit(limit)
        if flow:
            stmt = stmt.where(tasks.c.flow == flow)
        if status:
            stmt = stmt.where(tasks.c.status == status)
        with self._connect() as conn:
            return [_task(row) for row in conn.execute(stmt).mappings()]

    def failed_tasks(self, flow: str, run_id: int, *, known: Collection[int] = ()) -> list[Task]:
        """The tasks of run `run_id` of `flow` that need a person (``failed`` or ``unknown``),
        oldest first, but for the ids in `known`: a caller reporting failures while the run goes
        on reads each one once."""
        need_a_person = (TaskStatus.FAILED, TaskStatus.UNKNOWN)
        mine = (tasks.c.flow == flow) & (tasks.c.run_id == run_id)
        found: list[Task] = []
        with self._connect() as conn:
            ids = conn.execute(
                sa.select(tasks.c.id).where(mine, tasks.c.status.in_(need_a_person))
            ).scalars()
            new = sorted(set(ids) - set(known))
            for start in range(0, len(new), 500):  # bound the IN list for every backend
                stmt = sa.select(tasks).where(tasks.c.id.in_(new[start : start + 500]))
                found.extend(_task(row) for row in conn.execute(stmt).mappings())
        return sorted(found, key=lambda task: task.id)

    def count_runs(self, flow: str | None = None) -> int:
        """How many runs (of `flow`) the store holds."""
        stmt = sa.select(sa.func.count()).select_from(runs)
        if flow:
            stmt = stmt.where(runs.c.flow == flow)
        with self._connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def search_tasks(
        self, search: TaskSearch, *, limit: int | None = 50, offset: int = 0
    ) -> list[Task]:
        """The tasks `search` matches, newest first; `offset` leaves out that many."""
        stmt = sa.select(tasks).where(*search.where()).order_by(tasks.c.id.desc())
        stmt = stmt.limit(limit).offset(offset)
        with self._connect() as conn:
            return [_task(row) for row in conn.execute(stmt).mappings()]

    def count_search(self, search: TaskSearch) -> int:
        """How many tasks `search` matches."""
        stmt = sa.select(sa.func.count()).select_from(tasks).where(*search.where())
        with self._connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def skip(self, chosen: Sequence[Task]) -> None:
        """Settle tasks by hand (`bcbridge tasks skip`, the dashboard's Skip): they are never
        sent again, not even when their record comes again; the error keeps what they were."""
        self.settle(
            [
                TaskUpdate(
                    task.id,
                    TaskStatus.SKIPPED,
                    error=f"skipped by hand (was {task.status}: {task.last_error or '-'})",
                )
                for task in chosen
            ]
        )

    def count_tasks(self, flow: str) -> dict[str, int]:
        """How many tasks of `flow` are in each status."""
        stmt = (
            sa.select(tasks.c.status, sa.func.count())
            .where(tasks.c.flow == flow)
            .group_by(tasks.c.status)
        )
        with self._connect() as conn:
            return {str(status): int(count) for status, count in conn.execute(stmt)}


def _put_cursor(conn: sa.Connection, name: str, state: dict[str, Any]) -> None:
    """Insert or replace the cursor `name`, in the caller's transaction."""
    values = {"state": orjson.dumps(state).decode(), "updated_at": _now()}
    changed = conn.execute(cursors.update().where(cursors.c.incoming == name).values(**values))
    if changed.rowcount == 0:
        conn.execute(cursors.insert().values(incoming=name, **values))


def _renamed_cursor(
    name: str, *, flow: tuple[str, str] | None = None, incoming: tuple[str, str] | None = None
) -> str:
    """A cursor's name after a flow or an incoming is renamed: `<flow>:<incoming>` (a flow's
    position in an incoming) or `writer:<flow>` (a file writer's offset)."""
    if flow is not None:
        old, new = flow
        if name == f"writer:{old}":
            return f"writer:{new}"
        if name.startswith(f"{old}:"):
            return new + name[len(old) :]
    if incoming is not None and not name.startswith("writer:"):
        old, new = incoming
        if name.endswith(f":{old}"):
            return name[: -len(old)] + new
    return name


def _task_values(update: TaskUpdate, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        "task_id": update.id,
        "status": update.status,
        "last_error": _masked(update.error),
        "updated_at": now,
    }
    if update.result_id is not None:
        values["result_id"] = update.result_id
    if update.payload is not None:
        values["payload"] = _json.store_dumps(update.payload).decode()
        values["stage"] = update.stage
    return values


def _update_tasks(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Update tasks by id, one statement per set of columns run over all its rows at once
    (executemany: PostgreSQL gets them pipelined, not one round trip per task)."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for columns, group in shapes.items():
        values: dict[str, Any] = {n: sa.bindparam(n) for n in columns if n != "task_id"}
        stmt = tasks.update().where(tasks.c.id == sa.bindparam("task_id")).values(**values)
        conn.execute(stmt, group)


def _add_attempts(
    conn: sa.Connection, attempts: Sequence[Attempt], requests: Sequence[str]
) -> None:
    """Insert the delivery (its request-log lines, once) and the attempts, then drop the
    attempts of these tasks that are KEPT_ATTEMPTS behind, and deliveries left without one."""
    delivery_id = None
    if requests:
        # the lines come masked from the request log; masked again, as errors are
        lines = _redact.text(orjson.dumps(list(requests)).decode())
        inserted = conn.execute(task_deliveries.insert().values(requests=lines))
        key = inserted.inserted_primary_key  # PostgreSQL too (RETURNING), unlike lastrowid
        delivery_id = key[0] if key else None
    conn.execute(
        task_attempts.insert(),
        [
            {
                "task_id": a.task_id,
                "attempt": a.attempt,
                "delivery_id": delivery_id,
                "started_at": a.started_at,
                "ended_at": a.ended_at,
                "outcome": a.outcome,
                "method": a.method,
                "http_status": a.http_status,
                "error_code": a.error_code and a.error_code[:200],
                "error_message": _masked(a.error_message),
                "request_id": a.request_id and a.request_id[:200],
            }
            for a in attempts
        ],
    )
    old = [a for a in attempts if a.attempt > KEPT_ATTEMPTS]  # rare: only then is any dropped
    for a in old:
        stale = sa.and_(
            task_attempts.c.task_id == a.task_id,
            task_attempts.c.attempt <= a.attempt - KEPT_ATTEMPTS,
        )
        gone = [row[0] for row in conn.execute(sa.select(task_attempts.c.delivery_id).where(stale))]
        conn.execute(task_attempts.delete().where(stale))
        used = sa.select(task_attempts.c.id).where(
            task_attempts.c.delivery_id == task_deliveries.c.id
        )
        conn.execute(
            task_deliveries.delete().where(
                task_deliveries.c.id.in_([d for d in gone if d is not None]), ~sa.exists(used)
            )
        )


def _masked(error: str | None) -> str | None:
    """An error is kept with its secrets masked (a transformer's message may quote one)."""
    return None if error is None else _redact.text(error)


def _task(row: Any) -> Task:
    return Task(**{**row, "payload": _json.store_loads(row["payload"])})


class LeaseKeeper:
    """Holds a flow's lease for the length of a run: a thread renews its heartbeat every third
    of the TTL, and the lease is released at the end, also on an error or Ctrl-C. A process
    killed outright leaves the lease to expire after the TTL. `check()` raises when the lease
    was lost (the heartbeat could not be written for a whole TTL, or another process took the
    flow over): the run must stop rather than work next to another runner."""

    def __init__(self, store: Store, lease: Lease):
        self.store = store
        self.lease = lease
        self.problem: StoreError | None = None
        self._renewed_at = time.monotonic()  # taken (or renewed) just before the keeper starts
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease {lease.flow}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stopped.set()
        self._thread.join()
        with suppress(StoreError):  # an unusable store: the lease expires after its TTL anyway
            self.store.release_lease(self.lease)

    def check(self) -> None:
        """Raise the problem that lost the lease, if any (`LeaseLost` or a `StoreError`). A
        lease not renewed for a whole TTL counts as lost at once, before the heartbeat thread
        learns it: a process frozen (SIGSTOP, a VM paused) past the TTL wakes up to find
        another process may hold the flow, and must not write first."""
        if self.problem is not None:
            raise self.problem
        ttl = self.store.lease_ttl
        if time.monotonic() - self._renewed_at > ttl:
            raise LeaseLost(
                f"store {_shown(self.store.url)}: the lease of flow {self.lease.flow!r} was "
                f"not renewed for longer than its {ttl:g} s TTL (this process stalled); "
                "another process may hold it: run again"
            )

    def _beat(self) -> None:
        ttl = self.store.lease_ttl
        while not self._stopped.wait(ttl / 3):
            try:
                asked = time.monotonic()  # held from here on: the renewal reaches the store later
                if not self.store.renew_lease(self.lease):
                    self.problem = LeaseLost(
                        f"store {_shown(self.store.url)}: the lease of flow "
                        f"{self.lease.flow!r} was taken over by another process (this run's "
                        f"heartbeat stalled longer than the {ttl:g} s TTL); run again"
                    )
                    return
                self._renewed_at = asked
            except StoreError as exc:  # e.g. locked for a moment: try again until it expires
                if time.monotonic() - self._renewed_at >= ttl:
                    self.problem = exc
                    return
