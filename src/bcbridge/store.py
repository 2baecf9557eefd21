"""The state store: cursors, runs and tasks, in any SQLAlchemy database (SQLite by default).

The schema is owned by Alembic migrations (`bcbridge/migrations`), applied on open, so an
upgrade of bcbridge keeps the data of an older store. Every change that matters for crash safety
is its own committed transaction: a task is marked `sending` before its record goes to BC and
`done`/`failed` after; a cursor moves only after the records before it are written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bcbridge import _redact
from bcbridge.errors import ConfigError
from bcbridge.sinks import sql_engine

__all__ = ["DEFAULT_URL", "UNFINISHED", "Store", "Task", "TaskUpdate", "migrate", "payload_hash"]

UNFINISHED = ("running", "crashed", "interrupted")  # runs whose done tasks a new run resumes

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
)


def payload_hash(record: Any) -> str:
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Task:
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


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to the newest schema (Alembic `upgrade head`), or to an
    older `revision` (tests of an upgrade start from one)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)


class Store:
    def __init__(self, url: str = DEFAULT_URL):
        try:
            self.engine = sql_engine(url)
            migrate(url)
        except (sa.exc.SQLAlchemyError, ImportError, OSError) as exc:
            reason = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's
            raise ConfigError(
                f"cannot open the store at {_redact.url(url)}: {_redact.text(str(reason))}",
                field="store",
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    # --- cursors -------------------------------------------------------------------------

    def cursor(self, incoming: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            text = conn.execute(
                sa.select(cursors.c.state).where(cursors.c.incoming == incoming)
            ).scalar()
        return orjson.loads(text) if text else None

    def save_cursor(self, incoming: str, state: dict[str, Any]) -> None:
        values = {"state": orjson.dumps(state).decode(), "updated_at": _now()}
        with self.engine.begin() as conn:
            changed = conn.execute(
                cursors.update().where(cursors.c.incoming == incoming).values(**values)
            )
            if changed.rowcount == 0:
                conn.execute(cursors.insert().values(incoming=incoming, **values))

    # --- runs ----------------------------------------------------------------------------

    def start_run(self, flow: str, *, recover: bool = True) -> int:
        """A new run. With `recover`, runs of this flow still marked running were killed: they
        become `crashed`, and the new run resumes their work (one runner per flow at a time)."""
        with self.engine.begin() as conn:
            if recover:
                conn.execute(
                    runs.update()
                    .where(runs.c.flow == flow, runs.c.status == "running")
                    .values(status="crashed", ended_at=_now())
                )
            result = conn.execute(
                runs.insert().values(flow=flow, started_at=_now(), status="running", counts="{}")
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def end_run(self, run_id: int, status: str, counts: dict[str, int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(ended_at=_now(), status=status, counts=orjson.dumps(counts).decode())
            )

    def runs(self, flow: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        stmt = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if flow:
            stmt = stmt.where(runs.c.flow == flow)
        with self.engine.connect() as conn:
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
    ) -> list[Task]:
        """One task per record, in input order, found by payload hash.

        A record this flow has seen before gets its task back. If that task is `done` in this run
        or in an unfinished one (crashed, interrupted), the record was delivered and the caller
        skips it: that is how a restarted run resumes. Any other earlier task (done in a finished
        run, failed, or in flight when a run died) is moved to this run as `pending`: the record
        came again and is sent again; creates are matched on the key field, so nothing doubles."""
        now = _now()
        digests = [payload_hash(payload) for _, payload in items]
        with self.engine.begin() as conn:
            known = self._by_hash(conn, flow, digests)
            self._claim(conn, run_id, list(known.values()))
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
                            "status": "pending",
                            "stage": stage,
                            "attempts": 0,
                            "payload": orjson.dumps(payload).decode(),
                            "created_at": now,
                            "updated_at": now,
                        }
                        for digest, (key, payload) in new.items()
                    ],
                )
            known = self._by_hash(conn, flow, digests)
        return [known[digest] for digest in digests]

    @staticmethod
    def _claim(conn: sa.Connection, run_id: int, found: list[Task]) -> None:
        earlier = {task.run_id for task in found if task.run_id != run_id}
        if not earlier:
            return
        unfinished = set(
            conn.execute(
                sa.select(runs.c.id).where(runs.c.id.in_(earlier), runs.c.status.in_(UNFINISHED))
            ).scalars()
        )
        resumed = [t.id for t in found if t.status == "done" and t.run_id in unfinished]
        again = [
            t.id
            for t in found
            if t.run_id != run_id and not (t.status == "done" and t.run_id in unfinished)
        ]
        if resumed:
            conn.execute(tasks.update().where(tasks.c.id.in_(resumed)).values(run_id=run_id))
        if again:
            conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(again))
                .values(run_id=run_id, status="pending", updated_at=_now())
            )

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
        with self.engine.begin() as conn:
            conn.execute(tasks.update().where(tasks.c.id.in_(ids)).values(**values))

    def settle(self, updates: Sequence[TaskUpdate]) -> None:
        """Record the outcome of many tasks in one transaction."""
        if not updates:
            return
        now = _now()
        with self.engine.begin() as conn:
            for update in updates:
                values: dict[str, Any] = {
                    "status": update.status,
                    "last_error": _masked(update.error),
                    "updated_at": now,
                }
                if update.result_id is not None:
                    values["result_id"] = update.result_id
                if update.payload is not None:
                    values["payload"] = orjson.dumps(update.payload).decode()
                    values["stage"] = "send"
                conn.execute(tasks.update().where(tasks.c.id == update.id).values(**values))

    def task(self, task_id: int) -> Task | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
        return _task(row) if row else None

    def tasks(
        self, flow: str | None = None, status: str | None = None, limit: int | None = 50
    ) -> list[Task]:
        stmt = sa.select(tasks).order_by(tasks.c.id.desc()).limit(limit)
        if flow:
            stmt = stmt.where(tasks.c.flow == flow)
        if status:
            stmt = stmt.where(tasks.c.status == status)
        with self.engine.connect() as conn:
            return [_task(row) for row in conn.execute(stmt).mappings()]

    def count_tasks(self, flow: str) -> dict[str, int]:
        stmt = (
            sa.select(tasks.c.status, sa.func.count())
            .where(tasks.c.flow == flow)
            .group_by(tasks.c.status)
        )
        with self.engine.connect() as conn:
            return {str(status): int(count) for status, count in conn.execute(stmt)}


def _masked(error: str | None) -> str | None:
    """An error is kept with its secrets masked (a transformer's message may quote one)."""
    return None if error is None else _redact.text(error)


def _task(row: Any) -> Task:
    return Task(**{**row, "payload": orjson.loads(row["payload"])})
