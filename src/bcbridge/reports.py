"""What a flow and a task look like to a person, shared by the CLI and the dashboard: a flow's
summary (what it connects, its schedule, its last run, its tasks per status) and why a task
failed, in one reason and one message. Neither front end owns them; both import them here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bcbridge import _redact
from bcbridge.flowconfig import FlowConfig
from bcbridge.store import Store, Task, TaskStatus

__all__ = ["error_parts", "flow_summary", "task_failure", "utc"]

_STAGES = ("transform", "read")  # the runner's prefixes for records that never reached BC


def utc(moment: datetime | None) -> datetime | None:
    """The store writes UTC; SQLite gives it back without its zone, PostgreSQL with it."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def flow_summary(name: str, flow: FlowConfig, store: Store) -> dict[str, Any]:
    """A flow as `bcbridge flows --json` and the dashboard's Flows page show it (its
    locations' secrets masked)."""
    last = store.runs(name, limit=1)
    run = last[0] if last else None
    return {
        "name": name,
        "from": _redact.url(str(flow.source.incoming or flow.source.reader)),
        "to": _redact.url(str(flow.target.outgoing or flow.target.writer)),
        "schedule": flow.schedule,
        "last_run": run
        and {
            "id": run["id"],
            "status": run["status"],
            "started_at": utc(run["started_at"]),
            "ended_at": utc(run.get("ended_at")),
        },
        "tasks": dict(sorted(store.count_tasks(name).items())),
    }


def task_failure(task: Task) -> tuple[str, str]:
    """Why a failed or unknown task failed, as (reason, message): BC's error code (else `HTTP
    <status>`), or the stage that stopped the record (`transform`, `read`, `answer lost`)."""
    error = (task.last_error or "").strip()
    if task.status == TaskStatus.UNKNOWN:
        return "answer lost", error.split("; then `bcbridge", 1)[0] or "no answer from BC"
    for stage in _STAGES:
        if error.startswith(f"{stage}: "):
            return stage, error.removeprefix(f"{stage}: ")
    if not error:
        return "error", "no reason recorded"
    status, code, message = error_parts(error)
    reason = code or (f"HTTP {status}" if status else "error")
    return reason, message or reason


def error_parts(error: str) -> tuple[int | None, str | None, str | None]:
    """(status, code, message) from a task's last error, which the runner keeps as one line:
    "<status> <code> <message>", each part left out when unknown, "transform: <message>", or
    "read: <file:line: why>; <what to do>" (codes TransformError and ReadError)."""
    if error.startswith("transform: "):
        return None, "TransformError", error.removeprefix("transform: ")
    if error.startswith("read: "):
        return None, "ReadError", error.removeprefix("read: ")
    words = error.split(" ", 2)
    status = None
    if words and len(words[0]) == 3 and words[0].isdigit():
        status = int(words.pop(0))
    code = None
    if words and _looks_like_code(words[0]) and (status is not None or len(words) > 1):
        code = words.pop(0)
    return status, code, " ".join(words) or None


def _looks_like_code(word: str) -> bool:
    """BC's codes are one CamelCase word, often with a prefix: BadRequest_InvalidToken,
    Internal_RecordNotFound, Application_StringExceededLength."""
    letters = word.replace("_", "")
    capitals = sum(ch.isupper() for ch in letters)
    return (
        letters.isalnum()
        and word[0].isupper()
        and any(ch.islower() for ch in letters)
        and (capitals >= 2 or "_" in word)
    )
