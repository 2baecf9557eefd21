"""`bcbridge push`: the publisher from the command line.

`push` is a flow run (`bcbridge.flows.FlowRunner`): the input is the flow's reader, `--transform`
its transformers (handed to the runner as a built chain), the push options its outgoing, and
every record a task in a store (by default `.bcbridge/push.db` in the current folder). The flow
is named after the entity, the action, the input and the company, so running the same command
again after any stop (dropped connection, SIGKILL, Ctrl-C) resumes it: records already done are
skipped and creates are matched on `--key-field`, so BC gets each record once.

Failed records are appended to the failed-records file chunk by chunk (the file is created by
the first failure), each entry with what a replay needs: entity, action, keys, company, the
payload that was sent and the record it came from; an entry the transformers failed on has no
payload but keeps the steps, so `push --retry-failed FILE` transforms it again. The push ends
with the failures grouped by BC's error code and the command that retries them.

`--dry-run` sends nothing and opens no store: each record goes through the transformers and the
publisher's checks, and each payload through the catalog's prediction of BC's answer
(`bcbridge.catalog.refusal`, the rules the emulator answers with), counted as the real run
would count it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shlex
import signal
import stat
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import orjson
import typer
import yaml
from rich.console import Console

from bcbridge import _json, catalog
from bcbridge.cli._common import (
    counts_table,
    ctrl_c_stops,
    file_of,
    group_failures,
    print_failures,
    progress_bar,
)
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
from bcbridge.publisher import WRITE_ACTIONS, FailedRecord, preview, read_failed, write_failed
from bcbridge.reports import error_parts, task_failure
from bcbridge.sinks import BadRecord, read_records
from bcbridge.store import RunStatus, Store, Task, TaskStatus
from bcbridge.transform import Chain, Record, load_chain, load_chain_file

stderr = Console(stderr=True)

PUSH_STORE = "sqlite:///.bcbridge/push.db"
# The input record travels with its payload through the push's tasks, so that a failed record
# can be written out with both. Publisher drops every "@odata." name from what it sends (as it
# does BC's own annotations), so BC never receives it.
SOURCE = "@odata.bcbridge.source"
SHOWN = 3  # payloads a dry run shows unless --show says otherwise
STDIN = 0  # the descriptor `--in -` reads (sys.stdin.buffer)


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
    steps: list[Any]  # --transform steps (on a replay: for entries the transformers failed on)
    failed: Path
    replay: Path | None  # --retry-failed FILE
    allow_duplicates: bool
    flow: str = ""

    @property
    def label(self) -> str:
        return f"push {self.entity} ({self.action})"

    def chain(self) -> Chain:
        """The transform the runner applies to each input record (or failed-records entry)."""
        steps = load_chain(self.steps).steps
        if self.replay is not None:
            return _ReplayChain(steps, entity=self.entity, action=self.action)
        return _PushChain(steps)


# --- the push's transforms ----------------------------------------------------------------------


class _PushChain(Chain):
    """--transform's steps, with the input record kept alongside each payload (`SOURCE`)."""

    def apply(self, record: Record, context: Mapping[str, Any] | None = None) -> Record | None:
        payload = super().apply(record, context)
        return None if payload is None else {**payload, SOURCE: record}


@dataclass
class _ReplayChain(Chain):
    """`--retry-failed`: each entry's payload as it was kept (edited or not), not transformed
    twice. An entry the transformers failed on has no payload: its record goes through the
    transformers again, --transform's when given, else the steps kept in the entry."""

    entity: str = ""
    action: str = ""
    kept: dict[bytes, Chain] = field(default_factory=dict)

    def apply(self, entry: Record, context: Mapping[str, Any] | None = None) -> Record | None:
        label = str(entry.get("record_key") or entry.get("task") or "?")
        if (entry.get("entity"), entry.get("action")) != (self.entity, self.action):
            raise TransformError(
                f"this entry is for {entry.get('entity')} ({entry.get('action')}), not "
                f"{self.entity} ({self.action}); retry it from a file of its own",
                step="retry-failed",
                record=label,
            )
        record = entry.get("record")
        payload = entry.get("payload")
        if not isinstance(payload, dict):
            if not isinstance(record, dict):
                raise TransformError(
                    "the entry holds neither a payload nor a record: fix the input and push it "
                    "again, or write the payload to send into the entry's `payload`",
                    step="retry-failed",
                    record=label,
                )
            payload = self._transform_of(entry, label).apply(record, context)
            if payload is None:
                return None
        return {**payload, SOURCE: record}

    def _transform_of(self, entry: Mapping[str, Any], label: str) -> Chain:
        if self.steps:  # --transform
            return Chain(self.steps)
        steps = entry.get("transform") or []
        digest = orjson.dumps(steps, option=orjson.OPT_SORT_KEYS)
        if digest not in self.kept:
            try:
                self.kept[digest] = load_chain(steps)
            except ConfigError as exc:
                raise TransformError(
                    f"the entry's transform steps: {exc}", step="retry-failed", record=label
                ) from None
        return self.kept[digest]


# --- the command --------------------------------------------------------------------------------


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
    transform: Path | None = typer.Option(
        None,
        help="YAML record transformers applied to each record (with --retry-failed: to the "
        "records that failed in the transformers, instead of the steps kept in the file).",
    ),
    failed: Path | None = typer.Option(
        None,
        help="Where failed records are appended as they fail (default failed.jsonl; with "
        "--retry-failed, that file). Created by the first failure.",
    ),
    retry_failed: Path | None = typer.Option(
        None,
        help="Send the records of a failed-records file again; nothing else is needed (entity, "
        "action, keys, company and transform come from the file). What still fails is written "
        "back to it.",
    ),
    store: str = typer.Option(
        PUSH_STORE,
        "--store",
        help="Where the push keeps its tasks, so that a rerun resumes (any SQLAlchemy URL).",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Send nothing: transform each record, check each payload against the catalog (as "
        "BC would answer), show some payloads and count what would fail.",
    ),
    show: int = typer.Option(
        SHOWN, min=0, help="Payloads a dry run shows (0: none); failures are always summed up."
    ),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Write records to Business Central, exactly once: run the same command again after any
    stop to resume. Failed records go to --failed and are replayed with --retry-failed.

    Example: bcbridge push items --action upsert --key-field number --in items.csv
    (add --dry-run --show 5 first to see the payloads and what BC would refuse)
    """
    opts = dict(locals())
    try:
        plan = _plan(opts)
        if dry_run:
            raise typer.Exit(_dry_run(plan, show))
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
        if not _stdin_piped():
            example = f"cat {opts['entity']}.jsonl | bcbridge push {opts['entity']} ... --in -"
            raise UsageError(
                "no input: give --in FILE (.jsonl, .csv or a SQL URL#table), or pipe records "
                f"into the command with --in - (e.g. {example})"
            )
        source = "-"
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
        steps=_steps(opts["transform"]),
        failed=opts["failed"] or Path("failed.jsonl"),
        replay=None,
        allow_duplicates=opts["allow_duplicates"],
    )
    _check(plan)
    return plan


def _stdin_piped() -> bool:
    """Whether records are piped or redirected into stdin. A terminal (or /dev/null, as cron
    gives) is not read without --in -: the push would wait for input nobody sends."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except io.UnsupportedOperation:
        return True  # an in-memory stdin (a test runner's) holds what it was given
    except (AttributeError, OSError, ValueError):
        return False  # no stdin at all, or closed
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def _replay_plan(opts: dict[str, Any], replay: Path) -> _Push:
    for flag, name in (("input", "--in"), ("failed", "--failed")):
        if opts[flag] is not None:
            raise UsageError(
                f"--retry-failed sends the records kept in {replay} and writes what still "
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
        steps=_steps(opts["transform"]),
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
    """The push as a one-flow project: reader -> (the chain given to the runner) -> outgoing."""
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
    flow = FlowConfig(
        source=Endpoint(reader=plan.source, format=plan.format),
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


# --- failures, grouped --------------------------------------------------------------------------


def _reason(status: int | None, code: str, message: str) -> tuple[str, str]:
    """(reason, example) for `group_failures`, named as `task_failure` names a task's, so that
    push and run group alike; BC's CorrelationId left out (the failed-records file keeps it)."""
    reason = code or (f"HTTP {status}" if status else "error")
    return reason, _without_correlation(message) or reason


def _without_correlation(message: str) -> str:
    """BC's message without the `CorrelationId: <guid>.` it appends (the same on every line
    of a kind; a support case asks for it, and the failed-records file keeps it)."""
    return message.split("  CorrelationId:", 1)[0].strip()


# --- dry run ------------------------------------------------------------------------------------


def _dry_run(plan: _Push, show: int) -> int:
    """Everything but sending, streamed: each record through the transformers and each payload
    through the publisher's checks and the catalog (`publisher.preview`); failures counted and
    grouped as the real run would count them. Returns the exit code (1: some would fail)."""
    counts: Counter[str] = Counter()
    reasons: list[tuple[str, str]] = []
    chain = plan.chain()
    left_out: Counter[str] = Counter()
    shown = 0
    for number, record in enumerate(_dry_run_input(plan), 1):
        counts["read"] += 1
        failure: tuple[int | None, str, str] | None = None
        payload: dict[str, Any] | None = None
        if isinstance(record, BadRecord):
            failure = (None, "read", str(record))
        else:
            try:
                payload = chain.apply(record, {"flow": "dry-run"})
            except TransformError as exc:
                failure = (None, "transform", str(exc))
            if payload is None and failure is None:
                counts["filtered"] += 1
                continue
        if payload is not None:
            check = preview(
                plan.entity, plan.action, payload, key=plan.key, key_field=plan.key_field
            )
            left_out.update(check.left_out)
            if not check.ok:
                failure = (check.status, str(check.code), str(check.message))
            if shown < show:
                _show_payload(number, plan, check.body, check.target, failure)
                shown += 1
        if failure is None:
            counts["would send"] += 1
        else:
            counts["failed"] += 1
            reasons.append(_reason(*failure))
    counts_table(f"{plan.label}: dry run", counts)
    if left_out:
        names = ", ".join(f"{name} ({n:,})" for name, n in left_out.most_common(8))
        stderr.print(f"not sent (read-only in BC): {names}", markup=False)
    if reasons:
        print_failures(f"{plan.label}: dry run", group_failures(reasons), [], outcome="would fail")
        return EXIT_FAILED
    if counts["would send"]:
        stderr.print(
            "[green]no failure predicted[/] (the catalog checks properties, types and lengths; "
            "BC also checks references and business rules)"
        )
    return EXIT_OK


def _dry_run_input(plan: _Push) -> Iterator[dict[str, Any] | BadRecord]:
    if plan.replay is not None:
        source = Path(plan.source)
        yield from read_failed(source if source.exists() else plan.replay)
        return
    if plan.source == "-" and sys.stdin.isatty():
        stderr.print("reading records from the terminal: one JSON object a line, Ctrl-D ends")
    yield from read_records(plan.source, plan.format)


def _show_payload(
    number: int,
    plan: _Push,
    body: dict[str, Any] | None,
    target: str | None,
    failure: tuple[int | None, str, str] | None,
) -> None:
    where = f"{plan.entity}" + (f" {plan.key_field or 'id'}={target}" if target else "")
    sent = "(no body)" if body is None else _json.dumps(body).decode()
    stderr.print(f"record {number}: {plan.action} {where}: {sent}", markup=False, soft_wrap=True)
    if failure is not None:
        status, code, message = failure
        code_text = f"{status} {code}" if status else code
        stderr.print(f"  would fail: {code_text}: {message}", markup=False, soft_wrap=True)


# --- the failed-records file --------------------------------------------------------------------


@dataclass
class _FailedJournal:
    """Appends the push's failed tasks (read through the store) to the failed-records file
    after each chunk, and counts them per reason."""

    plan: _Push
    store: Store
    written: set[int] = field(default_factory=set)
    reasons: list[tuple[str, str]] = field(default_factory=list)
    transform_failed: int = 0
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
        tasks = self.store.failed_tasks(self.plan.flow, self.run_id, known=self.written)
        failures = [self._failure(task) for task in tasks]
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
        self.written.update(task.id for task in tasks)
        for task in tasks:
            reason, message = task_failure(task)
            self.reasons.append((reason, _without_correlation(message) or reason))
            self.transform_failed += reason == "transform"

    def _failure(self, task: Task) -> FailedRecord:
        status, code, message = error_parts(task.last_error or "")
        stored = dict(task.payload)
        key, steps = task.record_key, self.plan.steps
        if task.stage == "read":  # a line of the input that is not a record: nothing to send
            return FailedRecord(None, None, status, code, message, key, task.id)
        if task.stage != "transform":  # BC's refusal: the payload sent, and its record
            source = stored.pop(SOURCE, None)
            return FailedRecord(source, stored, status, code, message, key, task.id)
        # the transformers failed: the task holds their input, a record or (on a replay) an entry
        record: dict[str, Any] | None = stored
        if self.plan.replay is not None:
            kept = stored.get("transform")
            steps = steps or (kept if isinstance(kept, list) else [])
            key = stored.get("record_key") or key
            record = stored.get("record")
            if not isinstance(record, dict) and not isinstance(stored.get("payload"), dict):
                # still no record (an input line that was not one): kept as it was
                reason = (stored.get("status"), stored.get("code"), stored.get("message"))
                return FailedRecord(None, None, *reason, key, task.id)
        return FailedRecord(record, None, status, code, message, key, task.id, steps)


# --- the run ------------------------------------------------------------------------------------


class _PushDisplay:
    def __init__(self, plan: _Push, total: int | None):
        self.bar = progress_bar()
        self.task = self.bar.add_task(plan.label, total=total, detail="")

    def update(self, counts: Counter[str]) -> None:
        detail = "  ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if k != "read" and v)
        self.bar.update(self.task, completed=counts.get("read", 0), detail=detail)


def _input_size(plan: _Push) -> int | None:
    """How many records a file input holds (for a determinate bar); None for stdin and SQL."""
    source = file_of(plan.source)
    if source is None or not source.exists():
        return None
    return sum(1 for _ in read_records(plan.source, plan.format))


@contextlib.contextmanager
def _ctrl_c_ends_stdin(reading_stdin: bool) -> Iterator[None]:
    """Ctrl-C (`ctrl_c_stops`, installed before this) asks the runner to stop after the chunk in
    flight; but a push reading stdin may be waiting for a line that never comes (a terminal, an
    idle pipe), and would not see it. So the first Ctrl-C also ends the input: stdin becomes
    /dev/null, the waiting read returns end-of-file (Python resumes a read a signal
    interrupted), the records read so far are delivered, and the push stops."""
    if not reading_stdin:
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # no fd 0 to replace: nothing is waiting on it
            empty = os.open(os.devnull, os.O_RDONLY)
            os.dup2(empty, STDIN)
            os.close(empty)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
    if plan.source == "-" and sys.stdin.isatty():
        stderr.print("reading records from the terminal: one JSON object a line, Ctrl-D ends")
    result: RunResult | None = None
    try:
        with ctrl_c_stops(stop), _ctrl_c_ends_stdin(plan.source == "-"), display.bar:
            # errors come back as the result
            result = anyio.run(lambda: runner.run(plan.flow, transform=plan.chain()))
    except KeyboardInterrupt:  # Ctrl-C pressed twice: the run record holds its counts
        result = _interrupted_run(store, plan.flow)
    cut_short = plan.source == "-" and stop.is_set()  # Ctrl-C ended stdin, not the input
    if cut_short and result.status in (RunStatus.OK, RunStatus.FAILED):
        result.status = RunStatus.INTERRUPTED
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
    if not result.counts.get("read") and result.status in (RunStatus.OK, RunStatus.FAILED):
        where = "stdin" if plan.source == "-" else plan.source
        stderr.print(f"nothing to push: {where} held no records", markup=False)
    if journal.written:
        retry = [_retry_command(plan, opts)]
        print_failures(plan.label, group_failures(journal.reasons), retry)
        stderr.print(f"kept in {plan.failed} with their payloads and records", markup=False)
        if journal.transform_failed:
            stderr.print(
                f"{journal.transform_failed:,} of them failed in the transformers: a retry "
                "transforms them again (fix the record in the file, or give --transform FILE)",
                markup=False,
            )
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


__all__ = ["SOURCE", "register"]
