"""`bcbridge pull`: the subscriber from the command line.

`pull --state` saves, with the cursor and in the same atomic write, the size of the output file
at the last committed chunk; a rerun cuts the file back to that size before appending, so the
lines a stopped pull wrote past its saved cursor are not written twice.

Two kinds of transformers, named apart: `--transform` shapes each record before it is written
(as a flow's ``transform:``), `--params-transform` the query parameters before the request is
sent. The output leaves OData annotations (``@odata.etag``) out unless `--annotations`. A read
that gives nothing says why on stderr ("0 records: the filter matched none", "nothing new since
<cursor>") and exits 0. The bar is determinate once BC has counted the records (``$count``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.console import Console

from bcbridge._files import write_atomic
from bcbridge.cli._common import counts_table, file_of, progress_bar
from bcbridge.cli._complete import entity_names
from bcbridge.cli._settings import CONFIG_OPTION, fail, load_settings
from bcbridge.client import BusinessCentralClient
from bcbridge.errors import (
    BCBridgeError,
    ConfigError,
)
from bcbridge.odata import format_datetime
from bcbridge.partition import Partitions, parse_partitions
from bcbridge.sinks import SqlWriter, Writer, open_writer
from bcbridge.subscriber import CursorState, Subscriber
from bcbridge.transform import Chain, load_chain_file

stderr = Console(stderr=True)


def _params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"expected k=v, got {pair!r}", field="--param")
        params[name] = value
    return params


def _chain(path: Path | None, flag: str) -> Chain | None:
    """The steps of a --transform / --params-transform file; its errors name the flag."""
    if path is None:
        return None
    try:
        return load_chain_file(path)
    except ConfigError as exc:
        raise ConfigError(str(exc), field=flag) from None


def _partitions(text: str | None) -> Partitions | None:
    try:
        return parse_partitions(text, "--partitions")
    except ValueError as exc:
        raise ConfigError(str(exc).removeprefix("--partitions: "), field="--partitions") from None


_SINCE_FORMS = (
    "an ISO date (2026-11-25), an ISO datetime (2026-11-25T08:00:00Z), "
    "a time ago (30m, 24h, 7d, 2w), today or yesterday"
)
_AGO = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since_value(text: str, now: datetime | None = None) -> str:
    """`--since` as the cursor value BC compares with: a UTC datetime as BC writes them.

    Dates, ``today`` and ``yesterday`` start at midnight UTC, and a datetime without an offset
    is UTC (BC's lastModifiedDateTime values are UTC); anything else is a ConfigError."""
    now = now or datetime.now(UTC)
    word = text.strip().lower()
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if word in ("today", "yesterday"):
        return format_datetime(midnight - timedelta(days=word == "yesterday"))
    if match := _AGO.fullmatch(word):
        ago = timedelta(**{_UNITS[match[2]]: int(match[1])})
        return format_datetime(now - ago)
    try:
        if len(word) == 10:  # 2026-11-25
            day = date.fromisoformat(word)
            return format_datetime(datetime(day.year, day.month, day.day, tzinfo=UTC))
        return format_datetime(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError:
        pass
    raise ConfigError(f"cannot read {text!r} as a time; give {_SINCE_FORMS}", field="--since")


def pull(
    entity: str = typer.Argument(
        ..., help="Entity set, e.g. customers.", autocompletion=entity_names
    ),
    company: str | None = typer.Option(None, help="Company name or id (BC_COMPANY)."),
    key: str | None = typer.Option(
        None, help="A record id, or a path like salesOrders(<id>)/salesOrderLines."
    ),
    filter: str | None = typer.Option(None, "--filter", help="OData $filter."),
    select: str | None = typer.Option(None, help="OData $select."),
    expand: str | None = typer.Option(None, help="OData $expand."),
    orderby: str | None = typer.Option(None, help="OData $orderby."),
    top: int | None = typer.Option(None, help="OData $top."),
    param: list[str] = typer.Option([], "--param", help="Any other query parameter, k=v."),
    page_size: int = typer.Option(
        1000, help="Prefer: odata.maxpagesize; one page is held in memory at a time."
    ),
    partitions: str | None = typer.Option(
        None,
        help="Read as N concurrent streams over key ranges (at most BC's 5 in flight), or "
        "auto; the same records as one stream.",
    ),
    since: str | None = typer.Option(
        None,
        help="Incremental: records changed since then (lastModifiedDateTime): "
        + _SINCE_FORMS
        + "; dates and datetimes without an offset are UTC. A --state cursor wins over it.",
    ),
    state: Path | None = typer.Option(
        None,
        help="Incremental cursor file, saved after each flushed chunk together with the output "
        "file's size; a rerun cuts the output back to that size, then appends.",
    ),
    transform: Path | None = typer.Option(
        None,
        help="YAML record transformers (keep, rename, filter, ...) applied to each record "
        "before it is written, as a flow's transform:.",
    ),
    params_transform: Path | None = typer.Option(
        None,
        "--params-transform",
        help="YAML transformers applied to the request's query parameters ($filter, $top, ...) "
        "before it is sent.",
    ),
    annotations: bool = typer.Option(
        False,
        "--annotations",
        help="Keep OData annotations such as @odata.etag in the output (left out by default).",
    ),
    out: str = typer.Option("-", help="Output: FILE.jsonl, FILE.csv, sqlite:///db#table, or - ."),
    format: str | None = typer.Option(None, help="jsonl or csv (default: from --out)."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Read an entity from Business Central.

    Example: bcbridge pull customers --company "CRONUS USA, Inc." --state c.json --out c.jsonl
    """
    counts: Counter[str] = Counter()
    try:
        request = PullRequest.from_options(locals())
        cursor_at_start = anyio.run(_pull, request, counts)
    except BCBridgeError as exc:
        if counts:
            counts_table(f"pull {entity} (stopped)", counts)
        raise fail(exc) from None
    if counts["read"]:
        counts_table(f"pull {entity}", counts)
    else:
        stderr.print(_nothing_read(request, cursor_at_start))


def _nothing_read(request: PullRequest, cursor: str | None) -> str:
    """Why a pull read no record, in words (an empty table says nothing)."""
    if cursor is not None:
        return f"nothing new since {cursor}"
    if "$filter" in request.params:
        return "0 records: the filter matched none"
    if request.key is not None:
        return f"0 records at {request.key}"
    return f"0 records: {request.entity} is empty"


@dataclass
class PullRequest:
    """What one `bcbridge pull` asks for, checked before anything is sent."""

    entity: str
    company: str | None
    key: str | None
    params: dict[str, Any]
    page_size: int
    partitions: Partitions | None
    since: str | None
    record_steps: Chain | None  # --transform: applied to each record
    params_steps: Chain | None  # --params-transform: applied to the query parameters
    annotations: bool
    out: str
    format: str | None
    state: Path | None
    config: Path | None

    @classmethod
    def from_options(cls, opts: dict[str, Any]) -> PullRequest:
        params = {
            name: value
            for name, value in (
                ("$filter", opts["filter"]),
                ("$select", opts["select"]),
                ("$expand", opts["expand"]),
                ("$orderby", opts["orderby"]),
                ("$top", opts["top"]),
            )
            if value is not None
        }
        params.update(_params(opts["param"]))
        return cls(
            entity=opts["entity"],
            company=opts["company"],
            key=opts["key"],
            params=params,
            page_size=opts["page_size"],
            partitions=_partitions(opts["partitions"]),
            since=since_value(opts["since"]) if opts["since"] is not None else None,
            record_steps=_chain(opts["transform"], "--transform"),
            params_steps=_chain(opts["params_transform"], "--params-transform"),
            annotations=opts["annotations"],
            out=opts["out"],
            format=opts["format"],
            state=opts["state"],
            config=opts["config"],
        )


@dataclass
class _PullState:
    """The --state file: the cursor, and where the output stood when it was saved.

    ``{"field": ..., "value": ..., "boundary": {...}, "output": {"path": ABS, "offset": BYTES}}``
    — one JSON object, replaced atomically, so the cursor and the offset always match."""

    path: Path | None
    cursor: CursorState | None
    output: Path | None  # the output file, when --out is one
    offset: int = 0  # bytes of the output file that the saved cursor covers
    delivered: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, request: PullRequest) -> _PullState:
        path = request.state
        output = file_of(request.out)
        data: dict[str, Any] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot read the state: {exc}; delete it to pull everything again",
                    source=str(path),
                ) from None
        cursor = None
        if path is not None or request.since:
            cursor = CursorState.from_json(data)
            if request.since and cursor.value is None:
                cursor.value = request.since
            elif request.since:
                stderr.print(
                    f"--since {request.since} not used: {path} holds a cursor at {cursor.value} "
                    "(delete it to start from --since)"
                )
        state = cls(path, cursor, output)
        if path is not None and output is not None:
            state.offset = state._cut_back(data.get("output"))
        return state

    def _cut_back(self, saved: Any) -> int:
        """Cut the output back to what the saved cursor covers; the new committed offset."""
        assert self.output is not None and self.path is not None
        size = self.output.stat().st_size if self.output.exists() else 0
        if not isinstance(saved, dict) or Path(str(saved.get("path"))) != self.output.resolve():
            return size  # no offset for this file yet: append to what is there
        offset = int(saved.get("offset") or 0)
        if size < offset:
            raise ConfigError(
                f"{self.output} has {size:,} bytes but the state says {offset:,} were written: "
                f"the file was changed or replaced; delete {self.path} to pull everything again",
                source=str(self.path),
            )
        if size > offset:
            with self.output.open("r+b") as handle:
                handle.truncate(offset)
            stderr.print(
                f"{self.output}: removed {size - offset:,} bytes written after the last saved "
                "cursor (the previous pull stopped); they are read again"
            )
        return offset

    def commit(self) -> None:
        """Move the cursor over the records now flushed downstream; save it with the offset."""
        if self.cursor is None:
            self.delivered.clear()
            return
        for record in self.delivered:
            self.cursor.advance(record)
        self.delivered.clear()
        if self.output is not None and self.output.exists():
            self.offset = self.output.stat().st_size
        if self.path is None:
            return
        data = self.cursor.to_json()
        if self.output is not None:
            data["output"] = {"path": str(self.output.resolve()), "offset": self.offset}
        write_atomic(self.path, json.dumps(data, indent=2))

    def undo_uncommitted(self) -> None:
        """After a failure: drop what was written past the saved state, as a rerun would."""
        output = self.output
        if self.path and output and output.exists() and output.stat().st_size > self.offset:
            with output.open("r+b") as handle:
                handle.truncate(self.offset)


async def _pull(request: PullRequest, counts: Counter[str]) -> str | None:
    """Read, transform and write; the cursor value the read started from."""
    settings = load_settings(request.config)
    state = _PullState.load(request)
    cursor_at_start = state.cursor.value if state.cursor else None
    async with BusinessCentralClient(settings) as bc:
        subscriber = Subscriber(
            bc,
            request.entity,
            company=request.company,
            key=request.key,
            params=request.params,
            transform=request.params_steps,
            page_size=request.page_size,
            cursor=state.cursor,
            count_total=True,
            partitions=request.partitions,
        )
        _warn_of_lost_options(request, subscriber)
        writer = open_writer(
            request.out,
            request.format,
            key="id",
            append=state.cursor is not None,
            annotations=request.annotations,
        )
        try:
            await _copy(request, subscriber, writer, state, counts, cursor=cursor_at_start)
        except BaseException:
            writer.pending.clear()  # not covered by the saved cursor: read again next time
            writer.close()
            state.undo_uncommitted()
            raise
        writer.close()
    return str(cursor_at_start) if cursor_at_start is not None else None


async def _copy(
    request: PullRequest,
    subscriber: Subscriber,
    writer: Writer,
    state: _PullState,
    counts: Counter[str],
    *,
    cursor: Any,
) -> None:
    """Each record read: through --transform, to the writer; the cursor moves over the records
    as BC sent them (a transform may drop the fields it needs), filtered ones included."""
    context = {"cursor": cursor, "company": request.company, "entity": request.entity}
    steps = request.record_steps
    with progress_bar() as bar:
        task = bar.add_task(f"pull {request.entity}", total=None, detail="")
        try:
            async for record in subscriber.records():
                counts["read"] += 1
                shaped = steps.apply(record, context) if steps else record
                if shaped is None:
                    counts["filtered"] += 1
                else:
                    _check_key(writer, shaped)
                    writer.write(shaped)
                state.delivered.append(record)
                if len(state.delivered) >= writer.batch_size:
                    writer.flush()
                    state.commit()
                bar.update(
                    task,
                    total=subscriber.total,
                    completed=counts["read"] + subscriber.skipped,
                    detail=f"page {subscriber.pages}",
                )
            writer.flush()
            state.commit()
        finally:
            counts["written"] = writer.written  # what reached the output, not what was sent to it
        done = counts["read"] + subscriber.skipped
        if not counts["read"]:
            bar.remove_task(task)  # no 0/0 bar: the reason is said instead
        else:  # the read is over: what was read is the whole (BC's count may have moved meanwhile)
            bar.update(task, total=done if subscriber.total is not None else None, completed=done)


def _check_key(writer: Writer, record: dict[str, Any]) -> None:
    """A SQL --out upserts on the record's id: say how to keep it, not only that it is missing."""
    if isinstance(writer, SqlWriter) and writer.key and record.get(writer.key) is None:
        raise ConfigError(
            f"the records have no {writer.key!r} (left out by --select or --transform), and a "
            f"table is upserted on it: add {writer.key} to them, or write to a .jsonl/.csv file",
            field="--out",
        )


def _warn_of_lost_options(request: PullRequest, subscriber: Subscriber) -> None:
    """--params-transform is easily mistaken for --transform: say when it removed options."""
    if request.params_steps is None:
        return
    sent = subscriber.query(datetime.now(UTC))
    lost = [name for name in request.params if name not in sent]
    if lost:
        stderr.print(
            f"[yellow]--params-transform removed {', '.join(lost)} from the request; "
            "to transform the records, use --transform[/]"
        )


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
