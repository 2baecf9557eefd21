"""`bcbridge push`: the publisher from the command line.

`push` is a flow run (`bcbridge.flows.FlowRunner`): the input is the flow's reader, `--transform`
its transformers, the push options its outgoing, and every record a task in a store (by default
`.bcbridge/push.db` in the current folder). The flow is named after the entity, the action, the
input and the company, so running the same command again after any stop (dropped connection,
SIGKILL, Ctrl-C) resumes it: records already done are skipped and creates are matched on
`--key-field`, so BC gets each record once. Failed records are appended to the failed-records
file chunk by chunk, with the payload that was sent and the record it came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
import typer
import yaml
from rich.console import Console

from bcbridge import _json, catalog
from bcbridge.cli._common import counts_table, ctrl_c_stops, file_of, progress_bar
from bcbridge.cli._complete import actions, entity_names
from bcbridge.cli._settings import CONFIG_OPTION, fail, load_settings
from bcbridge.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    BCBridgeError,
    ConfigError,
    TransformError,
)
from bcbridge.flowconfig import Endpoint, FlowConfig, OutgoingConfig, ProjectConfig
from bcbridge.flows import FlowRunner, RunResult
from bcbridge.publisher import WRITE_ACTIONS, FailedRecord, read_failed, write_failed
from bcbridge.sinks import open_reader
from bcbridge.store import RunStatus, Store, TaskStatus
from bcbridge.store import tasks as task_table
from bcbridge.transform import Chain, load_chain, load_chain_file

stderr = Console(stderr=True)

PUSH_STORE = "sqlite:///.bcbridge/push.db"
# The input record travels with its payload through the push's tasks, so that a failed record
# can be written out with both. Publisher drops every "@odata." name from what it sends (as it
# does BC's own annotations), so BC never receives it.
SOURCE = "@odata.bcbridge.source"
# unknown: an answer lost for a bound action (not resent)
TASK_FAILED = (TaskStatus.FAILED, TaskStatus.UNKNOWN)


class UsageError(Exception):
    """The command line cannot work as given (exit 2)."""


def _usage(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(EXIT_USAGE)


@dataclass
class _Push:
    """What a push sends where, from its flags or from a failed-records file."""

    entity: str
    action: str
    company: str | None
    key: str | None
    key_field: str | None
    etag: str
    batch_size: int
    source: str  # the reader spec
    format: str | None
    steps: list[Any]  # --transform steps (none on a replay: entries hold payloads)
    failed: Path
    replay: Path | None  # --retry-failed FILE
    allow_duplicates: bool
    flow: str = ""

    @property
    def label(self) -> str:
        return f"push {self.entity} ({self.action})"


_CHAINS: dict[str, Chain] = {}  # flow name -> --transform, for the push running in this process
_REPLAYS: dict[str, tuple[str, str]] = {}  # flow name -> (entity, action) a replay is for


def push_payload(record: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
    """The transform of a push flow: --transform, then the input record kept alongside."""
    chain = _CHAINS.get(str(context.get("flow")))
    payload = chain.apply(record, context) if chain is not None else record
    return None if payload is None else {**payload, SOURCE: record}


def replay_payload(entry: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
    """The transform of `push --retry-failed`: each entry's payload, not transformed again."""
    label = str(entry.get("record_key") or "?")
    wanted = _REPLAYS.get(str(context.get("flow")))
    if wanted is not None and (entry.get("entity"), entry.get("action")) != wanted:
        raise TransformError(
            f"this entry is for {entry.get('entity')} ({entry.get('action')}), not "
            f"{wanted[0]} ({wanted[1]}); retry it from a file of its own",
            step="retry-failed",
            record=label,
        )
    payload = entry.get("payload")
    if not isinstance(payload, dict):
        raise TransformError(
            "the transformers failed on this record, so it has no payload: fix the input and "
            "push it again, or write the payload to send into the entry's `payload`",
            step="retry-failed",
            record=label,
        )
    return {**payload, SOURCE: entry.get("record")}


def push(
    entity: str | None = typer.Argument(
        None,
        help="Entity set, e.g. items (with --retry-failed: from the file).",
        autocompletion=entity_names,
    ),
    action: str | None = typer.Option(
        None,
        help="create, update, upsert, delete, or a bound action such as post "
        "(with --retry-failed: from the file).",
        autocompletion=actions,
    ),
    company: str | None = typer.Option(None, help="Company name or id (BC_COMPANY)."),
    input: str | None = typer.Option(
        None,
        "--in",
        help="Input: FILE.jsonl, FILE.csv, sqlite:///db#table, or - for stdin (the default "
        "when records are piped in).",
    ),
    format: str | None = typer.Option(None, help="jsonl or csv (default: from --in)."),
    key: str | None = typer.Option(None, help="A record id or a template such as {id}."),
    key_field: str | None = typer.Option(
        None, help="Match records on this field, e.g. number; needed by create and upsert."
    ),
    allow_duplicates: bool = typer.Option(
        False,
        "--allow-duplicates",
        help="Create without --key-field. BC has no idempotency keys: a create re-sent after "
        "a lost answer or a crash makes a second record.",
    ),
    etag: str = typer.Option("fetch", help="fetch, record, or force (If-Match: *)."),
    batch_size: int = typer.Option(
        500, min=1, help="Records per committed chunk (sent 100 per $batch)."
    ),
    transform: Path | None = typer.Option(None, help="YAML transformers applied to each record."),
    failed: Path | None = typer.Option(
        None,
        help="Where failed records are appended as they fail (default failed.jsonl; with "
        "--retry-failed, that file). Not created when nothing fails.",
    ),
    retry_failed: Path | None = typer.Option(
        None,
        help="Send the payloads of a failed-records file again (entity, action and keys come "
        "from the file); what still fails is written back to it.",
    ),
    store: str = typer.Option(
        PUSH_STORE,
        "--store",
        help="Where the push keeps its tasks, so that a rerun resumes (any SQLAlchemy URL).",
    ),
    dry_run: bool = typer.Option(False, help="Transform and validate only; send nothing."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Write records to Business Central, exactly once: run the same command again after any
    stop to resume. Failed records go to --failed and are replayed with --retry-failed.

    Example: bcbridge push items --action upsert --key-field number --in items.csv
    """
    opts = dict(locals())
    try:
        plan = _plan(opts)
        if dry_run:
            counts = _dry_run(plan)
            counts_table(f"{plan.label}: dry run", counts)
            return
        settings = load_settings(config)
        plan.company = plan.company or settings.company
        plan.flow = _flow_name(plan)
        _prepare_failed_file(plan)
        project = _project(plan, settings, store)
        push_store = Store(store)
    except UsageError as exc:
        raise _usage(str(exc)) from None
    except BCBridgeError as exc:
        raise fail(exc) from None
    try:
        code = _run_push(plan, project, push_store, opts)
    finally:
        push_store.close()
    raise typer.Exit(code)


def _plan(opts: dict[str, Any]) -> _Push:
    replay: Path | None = opts["retry_failed"]
    if replay is not None:
        return _replay_plan(opts, replay)
    if not opts["entity"] or not opts["action"]:
        raise UsageError(
            "give the entity and --action (e.g. push items --action upsert --key-field number "
            "--in items.csv), or --retry-failed FILE"
        )
    source = opts["input"]
    if source is None:
        if sys.stdin.isatty():
            raise UsageError(
                "no input: give --in FILE (.jsonl, .csv or a SQL URL#table) or pipe records "
                "into the command (--in - reads stdin)"
            )
        source = "-"
    steps = _steps(opts["transform"])
    plan = _Push(
        entity=opts["entity"],
        action=opts["action"],
        company=opts["company"],
        key=opts["key"],
        key_field=opts["key_field"],
        etag=opts["etag"],
        batch_size=opts["batch_size"],
        source=source,
        format=opts["format"],
        steps=steps,
        failed=opts["failed"] or Path("failed.jsonl"),
        replay=None,
        allow_duplicates=opts["allow_duplicates"],
    )
    _check(plan)
    return plan


def _replay_plan(opts: dict[str, Any], replay: Path) -> _Push:
    for flag, name in (("input", "--in"), ("transform", "--transform"), ("failed", "--failed")):
        if opts[flag] is not None:
            raise UsageError(
                f"--retry-failed sends the payloads kept in {replay} and writes what still "
                f"fails back to it: leave out {name}"
            )
    source = _replaying(replay)
    if not source.exists() and not replay.exists():
        raise UsageError(f"--retry-failed: {replay} does not exist")
    with contextlib.closing(read_failed(source if source.exists() else replay)) as entries:
        first = next(entries, None)
    if first is None:
        raise UsageError(f"--retry-failed: {replay} holds no failed records; nothing to retry")
    for flag in ("entity", "action"):
        if opts[flag] and opts[flag] != first[flag]:
            raise UsageError(
                f"{replay} holds records for {first['entity']} ({first['action']}), not "
                f"{opts['entity'] or first['entity']} ({opts['action'] or first['action']}); "
                "leave out the entity and --action"
            )
    plan = _Push(
        entity=str(first["entity"]),
        action=str(first["action"]),
        company=opts["company"] or first.get("company"),
        key=opts["key"] or first.get("key"),
        key_field=opts["key_field"] or first.get("key_field"),
        etag=opts["etag"],
        batch_size=opts["batch_size"],
        source=str(source),
        format="jsonl",
        steps=[],
        failed=replay,
        replay=replay,
        allow_duplicates=opts["allow_duplicates"],
        flow=str(first.get("flow") or ""),
    )
    _check(plan)
    return plan


def _replaying(replay: Path) -> Path:
    """Where a failed-records file is read from while it is being replayed (and rewritten)."""
    return replay.with_name(f"{replay.stem}.replaying{replay.suffix or '.jsonl'}")


def _steps(path: Path | None) -> list[Any]:
    """The --transform steps as a list, checked now so that a bad file fails before any work."""
    if path is None:
        return []
    load_chain_file(path)
    data = yaml.safe_load(path.read_text())
    steps = data.get("transform", []) if isinstance(data, dict) else data
    return list(steps or [])


def _check(plan: _Push) -> None:
    entity_set = catalog.get(plan.entity)  # an unknown name fails with the close ones
    if plan.action not in WRITE_ACTIONS and plan.action not in entity_set.actions:
        valid = ", ".join([*WRITE_ACTIONS, *entity_set.actions])
        raise ConfigError(
            f"{entity_set.name} has no action {plan.action!r}; valid: {valid}", field="--action"
        )
    if plan.action == "upsert" and not plan.key_field:
        raise UsageError("--action upsert matches records on a field: give --key-field (number)")
    if plan.action == "create" and not plan.key_field and not plan.allow_duplicates:
        raise UsageError(
            "--action create needs --key-field (e.g. number): BC has no idempotency keys, so a "
            "create re-sent after a lost answer or a crash would make a second record, and the "
            "key field is how a rerun finds the ones that landed; --allow-duplicates accepts "
            "that risk"
        )


def _flow_name(plan: _Push) -> str:
    """Stable across reruns of one command, so that a rerun resumes the same tasks. A replay
    keeps the flow of the push its records failed in."""
    if plan.flow:
        return plan.flow
    source = "stdin" if plan.source == "-" else plan.source.rstrip("/").rsplit("/", 1)[-1]
    name = f"push:{plan.entity}:{plan.action}:{source}"
    if plan.company:  # the same file pushed to another company is other work
        name += f"@{plan.company}"
    if len(name) > 200:  # the store's column
        name = name[:183] + "~" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return name


def _prepare_failed_file(plan: _Push) -> None:
    """Start the failed-records file afresh for this push, without losing another's records.

    The file is rebuilt by each run of a push: the records that failed before are sent again
    (their tasks are not done) and written again if they still fail. A file that holds another
    push's failures is left alone: the user has not retried those yet. A replay reads from a
    copy (`NAME.replaying.jsonl`) while it rewrites the file, and deletes the copy when done;
    a replay that stopped finds its copy and starts from it again."""
    if plan.replay is not None:
        source = Path(plan.source)
        if not source.exists():
            os.replace(plan.replay, source)
        else:
            plan.replay.unlink(missing_ok=True)  # the stopped replay's failures: written again
        return
    if not plan.failed.exists():
        return
    try:
        with contextlib.closing(read_failed(plan.failed)) as entries:
            first = next(entries, None)
    except ConfigError:
        first = {}
    if first is not None and first.get("flow") != plan.flow:
        raise UsageError(
            f"{plan.failed} holds failed records of another push ({first.get('flow') or '?'}); "
            f"retry them (bcbridge push --retry-failed {shlex.quote(str(plan.failed))}), move "
            "the file away, or give --failed OTHER"
        )
    plan.failed.unlink()


def _project(plan: _Push, settings: Any, store: str) -> ProjectConfig:
    """The push as a one-flow project: reader -> transform -> outgoing."""
    outgoing: dict[str, Any] = {
        "entity": plan.entity,
        "action": plan.action,
        "company": plan.company,
        "key": plan.key,
        "key_field": plan.key_field,
        "etag": plan.etag,
        "batch_size": plan.batch_size,
    }
    if plan.allow_duplicates:
        outgoing["allow_duplicates"] = True
    step = "replay_payload" if plan.replay is not None else "push_payload"
    flow = FlowConfig(
        source=Endpoint(reader=plan.source, format=plan.format),
        transform=[{"python": f"bcbridge.cli.push:{step}"}],
        target=Endpoint(outgoing="push"),
        chunk_size=plan.batch_size,
    )
    try:
        return ProjectConfig(
            store=store,
            clients={"default": settings},
            outgoing={"push": OutgoingConfig(**outgoing)},
            flows={plan.flow: flow},
            source="the push command line",
        )
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[-1]) from None


def _dry_run(plan: _Push) -> Counter[str]:
    """Transform and count, streaming; nothing is sent and no store is opened."""
    counts: Counter[str] = Counter()
    if plan.replay is not None:
        source = Path(plan.source)
        for entry in read_failed(source if source.exists() else plan.replay):
            counts["would send" if isinstance(entry.get("payload"), dict) else "no payload"] += 1
        return counts
    chain = load_chain(plan.steps)
    for record in open_reader(plan.source, plan.format):
        counts["filtered" if chain.apply(record, {}) is None else "would send"] += 1
    return counts


@dataclass
class _FailedJournal:
    """Appends the push's failed tasks to the failed-records file after each chunk."""

    plan: _Push
    store: Store
    written: set[int] = field(default_factory=set)
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    seen_failed: int = 0
    run_id: int | None = None

    def sweep(self, counts: Counter[str] | None = None) -> None:
        """Write the tasks that failed since the last sweep. With `counts` (after a chunk),
        only when the run's failed count moved; without (at the end), always."""
        if counts is not None:
            failed = counts.get(TaskStatus.FAILED, 0) + counts.get(TaskStatus.UNKNOWN, 0)
            if failed == self.seen_failed:
                return
            self.seen_failed = failed
        if self.run_id is None:
            runs = self.store.runs(self.plan.flow, limit=1)
            if not runs:
                return
            self.run_id = int(runs[0]["id"])
        columns = task_table.c
        mine = (columns.flow == self.plan.flow) & (columns.run_id == self.run_id)
        with self.store.engine.connect() as conn:
            ids = set(
                conn.execute(
                    sa.select(columns.id).where(mine, columns.status.in_(TASK_FAILED))
                ).scalars()
            )
            new = sorted(ids - self.written)
            rows: list[Any] = []
            for start in range(0, len(new), 500):
                stmt = sa.select(
                    columns.id,
                    columns.record_key,
                    columns.stage,
                    columns.last_error,
                    columns.payload,
                ).where(columns.id.in_(new[start : start + 500]))
                rows.extend(conn.execute(stmt).mappings())
        failures = [self._failure(row) for row in sorted(rows, key=lambda row: row["id"])]
        plan = self.plan
        write_failed(
            plan.failed,
            failures,
            entity=plan.entity,
            action=plan.action,
            company=plan.company,
            key=plan.key,
            key_field=plan.key_field,
            flow=plan.flow,
        )
        self.written.update(new)
        for failure in failures:
            reason = failure.code or (f"HTTP {failure.status}" if failure.status else "error")
            self.reasons[reason] += 1
            self.examples.setdefault(reason, failure.message or "")

    def _failure(self, row: Any) -> FailedRecord:
        stored = _json.store_loads(row["payload"])
        status, code, message = _error_parts(row["last_error"] or "")
        if row["stage"] == "transform":  # the transformers failed: the task holds the input
            if self.plan.replay is not None:
                return FailedRecord(
                    stored.get("record"),
                    stored.get("payload"),
                    status,
                    code or "TransformError",
                    message,
                    stored.get("record_key"),
                    row["id"],
                )
            record, payload = stored, None
            code = code or "TransformError"
        else:
            record = stored.pop(SOURCE, None)
            payload = stored
        return FailedRecord(record, payload, status, code, message, row["record_key"], row["id"])


def _error_parts(error: str) -> tuple[int | None, str | None, str | None]:
    """(status, code, message) from a task's last error, which the runner keeps as one line:
    "<status> <code> <message>", each part left out when unknown, or "transform: <message>"."""
    if error.startswith("transform: "):
        return None, "TransformError", error.removeprefix("transform: ")
    words = error.split(" ", 2)
    status = None
    if words and len(words[0]) == 3 and words[0].isdigit():
        status = int(words.pop(0))
    code = None
    # BC's codes are one CamelCase word, often with a prefix: BadRequest, Internal_RecordNotFound
    if words and _looks_like_code(words[0]) and (status is not None or len(words) > 1):
        code = words.pop(0)
    return status, code, " ".join(words) or None


def _looks_like_code(word: str) -> bool:
    letters = word.replace("_", "")
    capitals = sum(ch.isupper() for ch in letters)
    return (
        letters.isalnum()
        and word[0].isupper()
        and any(ch.islower() for ch in letters)
        and (capitals >= 2 or "_" in word)
    )


class _PushDisplay:
    def __init__(self, plan: _Push, total: int | None):
        self.bar = progress_bar(total)
        self.task = self.bar.add_task(plan.label, total=total, detail="")

    def update(self, counts: Counter[str]) -> None:
        detail = "  ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if k != "read" and v)
        self.bar.update(self.task, completed=counts.get("read", 0), detail=detail)


def _input_size(plan: _Push) -> int | None:
    """How many records a file input holds (for a determinate bar); None for stdin and SQL."""
    source = file_of(plan.source)
    if source is None or not source.exists():
        return None
    return sum(1 for _ in open_reader(plan.source, plan.format))


def _run_push(plan: _Push, project: ProjectConfig, store: Store, opts: dict[str, Any]) -> int:
    stop = threading.Event()
    journal = _FailedJournal(plan, store)
    try:
        total = _input_size(plan)
    except BCBridgeError as exc:
        raise fail(exc) from None
    display = _PushDisplay(plan, total)

    def progress(flow: str, counts: Counter[str]) -> None:
        display.update(counts)
        journal.sweep(counts)

    runner = FlowRunner(project, store, stop=stop, progress=progress)
    if plan.replay is not None:
        _REPLAYS[plan.flow] = (plan.entity, plan.action)
    else:
        _CHAINS[plan.flow] = load_chain(plan.steps)
    result: RunResult | None = None
    try:
        with ctrl_c_stops(stop), display.bar:
            result = anyio.run(runner.run, plan.flow)  # errors come back as the result
    except KeyboardInterrupt:  # Ctrl-C pressed twice: the run record holds its counts
        result = _interrupted_run(store, plan.flow)
    finally:
        _CHAINS.pop(plan.flow, None)
        _REPLAYS.pop(plan.flow, None)
    journal.sweep()
    return _report(plan, result, journal, opts)


def _interrupted_run(store: Store, flow: str) -> RunResult:
    runs = store.runs(flow, limit=1)
    if not runs:
        return RunResult(flow, None, RunStatus.INTERRUPTED, Counter())
    counts = Counter({k: int(v) for k, v in runs[0]["counts"].items()})
    return RunResult(flow, int(runs[0]["id"]), RunStatus.INTERRUPTED, counts)


def _report(plan: _Push, result: RunResult, journal: _FailedJournal, opts: dict[str, Any]) -> int:
    """The summary, what failed and why, and how to go on; returns the exit code."""
    counts_table(plan.label, result.counts)
    if journal.written:
        stderr.print(f"[red]{len(journal.written):,} record(s) failed; kept in {plan.failed}[/]")
        for reason, count in journal.reasons.most_common(5):
            example = journal.examples.get(reason) or ""
            stderr.print(f"  {count:>7,}  {reason}  e.g. {example[:160]}")
        stderr.print(f"retry them with: {_retry_command(plan, opts)}")
    finished = result.status in (RunStatus.OK, RunStatus.FAILED)
    if finished and plan.replay is not None:
        Path(plan.source).unlink(missing_ok=True)  # replayed; what still fails is in the file
    if not finished:
        again = _command(opts)
        stderr.print(
            f"[yellow]{result.status}: the push stopped before the end; run it again to resume "
            f"({again}): records already done are skipped[/]"
        )
    if result.status == RunStatus.INTERRUPTED:
        return EXIT_INTERRUPTED
    if result.status not in (RunStatus.OK, RunStatus.FAILED):
        if result.exception is not None:  # the run's own error: its documented exit code
            raise fail(result.exception)
        typer.secho(f"error: {result.error or 'the push stopped'}", fg=typer.colors.RED, err=True)
        return EXIT_FAILED
    return EXIT_FAILED if result.failed or journal.written else EXIT_OK


def _retry_command(plan: _Push, opts: dict[str, Any]) -> str:
    words = ["bcbridge", "push", "--retry-failed", str(plan.failed)]
    if opts["store"] != PUSH_STORE:
        words += ["--store", opts["store"]]
    if opts["config"] is not None:
        words += ["--config", str(opts["config"])]
    if plan.allow_duplicates:
        words.append("--allow-duplicates")
    return shlex.join(words)


def _command(opts: dict[str, Any]) -> str:
    """The command as the user gave it, for 'run it again'."""
    return shlex.join(["bcbridge", *sys.argv[1:]]) if sys.argv[1:] else "the same command"


def register(app: typer.Typer) -> None:
    app.command("push")(push)


__all__ = ["SOURCE", "push_payload", "register", "replay_payload"]
