"""`bcbridge pull` and `bcbridge push`: the subscriber and the publisher from the command line."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bcbridge.cli._settings import CONFIG_OPTION, fail, load_settings
from bcbridge.client import BusinessCentralClient
from bcbridge.errors import BCBridgeError, ConfigError
from bcbridge.publisher import Publisher, RecordResult, read_failed, write_failed
from bcbridge.sinks import open_reader, open_writer
from bcbridge.subscriber import CursorState, Subscriber
from bcbridge.transform import Chain, load_chain_file

stderr = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} records  {task.fields[detail]}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
    )


def _summary(title: str, counts: Counter[str]) -> None:
    table = Table(title=title)
    table.add_column("Outcome")
    table.add_column("Records", justify="right")
    for outcome, count in sorted(counts.items()):
        table.add_row(outcome, f"{count:,}")
    stderr.print(table)


def _params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"expected k=v, got {pair!r}", field="--param")
        params[name] = value
    return params


def _chain(path: Path | None) -> Chain | None:
    return load_chain_file(path) if path else None


def _save_state(path: Path, cursor: CursorState) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(cursor.to_json(), indent=2))
    os.replace(temporary, path)  # atomic: a crash leaves the old state or the new, never half


def pull(
    entity: str = typer.Argument(..., help="Entity set, e.g. customers."),
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
    since: str | None = typer.Option(None, help="Incremental: lastModifiedDateTime to start from."),
    state: Path | None = typer.Option(
        None, help="Incremental cursor file; updated after output is flushed."
    ),
    transform: Path | None = typer.Option(
        None, help="YAML transformers applied to the request parameters."
    ),
    out: str = typer.Option("-", help="Output: FILE.jsonl, FILE.csv, sqlite:///db#table, or - ."),
    format: str | None = typer.Option(None, help="jsonl or csv (default: from --out)."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Read an entity from Business Central.

    Example: bcbridge pull customers --company "CRONUS USA, Inc." --state c.json --out c.jsonl
    """
    try:
        counts = anyio.run(_pull, locals())
    except BCBridgeError as exc:
        raise fail(exc) from None
    _summary(f"pull {entity}", counts)


async def _pull(opts: dict[str, Any]) -> Counter[str]:
    settings = load_settings(opts["config"])
    params = {
        k: v
        for k, v in (
            ("$filter", opts["filter"]),
            ("$select", opts["select"]),
            ("$expand", opts["expand"]),
            ("$orderby", opts["orderby"]),
            ("$top", opts["top"]),
        )
        if v is not None
    }
    params.update(_params(opts["param"]))
    state_path: Path | None = opts["state"]
    cursor = None
    if state_path is not None or opts["since"]:
        cursor = CursorState()
        if state_path is not None and state_path.exists():
            cursor = CursorState.from_json(json.loads(state_path.read_text()))
        if opts["since"] and cursor.value is None:
            cursor.value = opts["since"]
    counts: Counter[str] = Counter()
    async with BusinessCentralClient(settings) as bc:
        subscriber = Subscriber(
            bc,
            opts["entity"],
            company=opts["company"],
            key=opts["key"],
            params=params,
            transform=_chain(opts["transform"]),
            page_size=opts["page_size"],
            cursor=cursor,
        )
        delivered: list[dict[str, Any]] = []
        with (
            open_writer(opts["out"], opts["format"], key="id", append=cursor is not None) as writer,
            _progress() as bar,
        ):
            task = bar.add_task(f"pull {opts['entity']}", total=None, detail="")
            async for record in subscriber.records():
                writer.write(record)
                delivered.append(record)
                counts["read"] += 1
                if len(delivered) >= writer.batch_size:
                    writer.flush()
                    _commit(cursor, delivered, state_path)
                bar.update(task, advance=1, detail=f"page {subscriber.pages}")
            writer.flush()
            _commit(cursor, delivered, state_path)
    return counts


def _commit(
    cursor: CursorState | None, delivered: list[dict[str, Any]], state_path: Path | None
) -> None:
    """Move the cursor over records that are now flushed downstream, then save it."""
    if cursor is not None:
        for record in delivered:
            cursor.advance(record)
        if state_path is not None:
            _save_state(state_path, cursor)
    delivered.clear()


def push(
    entity: str = typer.Argument(..., help="Entity set, e.g. items."),
    action: str = typer.Option(
        ..., help="create, update, upsert, delete, or a bound action such as post."
    ),
    company: str | None = typer.Option(None, help="Company name or id (BC_COMPANY)."),
    input: str = typer.Option(
        "-", "--in", help="Input: FILE.jsonl, FILE.csv, sqlite:///db#table, or - ."
    ),
    format: str | None = typer.Option(None, help="jsonl or csv (default: from --in)."),
    key: str | None = typer.Option(None, help="A record id or a template such as {id}."),
    key_field: str | None = typer.Option(None, help="Match records on this field, e.g. number."),
    etag: str = typer.Option("fetch", help="fetch, record, or force (If-Match: *)."),
    batch_size: int = typer.Option(500, help="Records per round (sent 100 per $batch)."),
    transform: Path | None = typer.Option(None, help="YAML transformers applied to each payload."),
    failed: Path = typer.Option(Path("failed.jsonl"), help="Where failed records are kept."),
    retry_failed: Path | None = typer.Option(
        None, help="Replay a failed-records file instead of --in."
    ),
    dry_run: bool = typer.Option(False, help="Transform and validate only; send nothing."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Write records to Business Central; failures go to --failed and can be replayed.

    Example: bcbridge push items --action upsert --key-field number --in items.csv
    """
    try:
        counts = anyio.run(_push, locals())
    except BCBridgeError as exc:
        raise fail(exc) from None
    _summary(f"push {entity} ({action})", counts)
    if counts.get("failed"):
        stderr.print(
            f"[red]{counts['failed']} record(s) failed; kept in {retry_failed or failed}[/red]"
        )
        raise typer.Exit(1)


async def _push(opts: dict[str, Any]) -> Counter[str]:
    chain = _chain(opts["transform"])
    if opts["retry_failed"] is not None:
        records = [entry["record"] for entry in read_failed(opts["retry_failed"])]
    else:
        records = list(open_reader(opts["input"], opts["format"]))
    counts: Counter[str] = Counter()
    if opts["dry_run"]:
        for record in records:
            counts["filtered" if chain and chain.apply(record, {}) is None else "would send"] += 1
        return counts
    settings = load_settings(opts["config"])
    results: list[RecordResult] = []
    async with BusinessCentralClient(settings) as bc:
        publisher = Publisher(
            bc,
            opts["entity"],
            opts["action"],
            company=opts["company"],
            key=opts["key"],
            key_field=opts["key_field"],
            transform=chain,
            etag=opts["etag"],
            batch_size=opts["batch_size"],
        )
        with _progress() as bar:
            task = bar.add_task(f"push {opts['entity']}", total=len(records), detail="")
            async for result in publisher.publish(records):
                results.append(result)
                counts[result.outcome.value] += 1
                bar.update(task, advance=1, detail=f"{counts['failed']} failed")
    target: Path = opts["retry_failed"] or opts["failed"]
    if opts["retry_failed"] is not None:
        target.unlink()  # replaced by what still fails
    write_failed(target, results, entity=opts["entity"], action=opts["action"])
    return counts


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
    app.command("push")(push)
