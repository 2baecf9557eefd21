"""Which records a transaction changed, handed on only once it commits (for webhooks).

`Records` notes each insert, update and delete on its connection; `watch` passes the notes of a
committed transaction to a sink and forgets those of a rolled-back one. So a failed request, a
failed `$batch` operation or a batch rolled back under ``Isolation: snapshot`` notifies nothing,
as in BC, where notifications come from committed change-log entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

ChangeType = Literal["created", "updated", "deleted"]
_KEY = "bcbridge.changes"


@dataclass(frozen=True)
class Change:
    """One record written: where, which, how, and when (its lastModifiedDateTime)."""

    route: str
    set_name: str
    company_id: str
    record_id: str
    change_type: ChangeType
    last_modified: str
    header_set: str | None = None  # a document line's header set, e.g. salesOrders
    header_id: str | None = None


def note(conn: sa.Connection, change: Change) -> None:
    conn.info.setdefault(_KEY, []).append(change)


def forget(conn: sa.Connection) -> None:
    """Drop the changes noted so far on `conn` (the seed's writes notify nobody)."""
    conn.info.pop(_KEY, None)


def watch(engine: sa.Engine, sink: Callable[[list[Change]], None]) -> None:
    """Call `sink` (on the committing thread) with each committed transaction's changes."""

    def committed(conn: sa.Connection) -> None:
        changes = conn.info.pop(_KEY, None)
        if changes:
            sink(changes)

    def rolled_back(conn: sa.Connection) -> None:
        conn.info.pop(_KEY, None)

    sa.event.listen(engine, "commit", committed)
    sa.event.listen(engine, "rollback", rolled_back)
