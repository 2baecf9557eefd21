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

__all__ = ["DEFAULT_URL", "Store", "Task", "payload_hash"]

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
    created_at: datetime
    updated_at: datetime


def migrate(url: str) -> None:
    """Bring the database at `url` to the newest schema (Alembic `upgrade head`)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


class Store:
    def __init__(self, url: str = DEFAULT_URL):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////:memory"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        migrate(url)
        self.engine = sa.create_engine(url)

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

    def start_run(self, flow: str) -> int:
        with self.engine.begin() as conn:
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
        self, flow: str, run_id: int, items: Sequence[tuple[str | None, dict[str, Any]]]
    ) -> list[Task]:
        """One task per record; a record already seen by this flow (same payload hash) reuses its
        task, so a restarted run finds what it had done and what was in flight."""
        now = _now()
        found: list[Task] = []
        with self.engine.begin() as conn:
            for key, payload in items:
                digest = payload_hash(payload)
                row = (
                    conn.execute(
                        sa.select(tasks).where(tasks.c.flow == flow, tasks.c.hash == digest)
                    )
                    .mappings()
                    .first()
                )
                if row is None:
                    conn.execute(
                        tasks.insert().values(
                            flow=flow,
                            run_id=run_id,
                            record_key=key,
                            hash=digest,
                            status="pending",
                            attempts=0,
                            payload=orjson.dumps(payload).decode(),
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    row = (
                        conn.execute(
                            sa.select(tasks).where(tasks.c.flow == flow, tasks.c.hash == digest)
                        )
                        .mappings()
                        .one()
                    )
                found.append(_task(row))
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
        values: dict[str, Any] = {"status": status, "updated_at": _now(), "last_error": error}
        if result_id is not None:
            values["result_id"] = result_id
        if attempt:
            values["attempts"] = tasks.c.attempts + 1
        with self.engine.begin() as conn:
            conn.execute(tasks.update().where(tasks.c.id.in_(ids)).values(**values))

    def task(self, task_id: int) -> Task | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
        return _task(row) if row else None

    def tasks(
        self, flow: str | None = None, status: str | None = None, limit: int = 50
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


def _task(row: Any) -> Task:
    return Task(**{**row, "payload": orjson.loads(row["payload"])})
