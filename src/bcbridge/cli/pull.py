"""`bcbridge pull`: the subscriber from the command line.

`pull --state` saves, with the cursor and in the same atomic write, the size of the output file
at the last committed chunk; a rerun cuts the file back to that size before appending, so the
lines a stopped pull wrote past its saved cursor are not written twice.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.console import Console

from bcbridge.cli._common import counts_table, file_of, progress_bar
from bcbridge.cli._complete import entity_names
from bcbridge.cli._settings import CONFIG_OPTION, fail, load_settings
from bcbridge.client import BusinessCentralClient
from bcbridge.errors import (
    BCBridgeError,
    ConfigError,
)
from bcbridge.sinks import open_writer
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


def _chain(path: Path | None) -> Chain | None:
    return load_chain_file(path) if path else None


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
    since: str | None = typer.Option(None, help="Incremental: lastModifiedDateTime to start from."),
    state: Path | None = typer.Option(
        None,
        help="Incremental cursor file, saved after each flushed chunk together with the output "
        "file's size; a rerun cuts the output back to that size, then appends.",
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
    counts: Counter[str] = Counter()
    try:
        anyio.run(_pull, locals(), counts)
    except BCBridgeError as exc:
        if counts:
            counts_table(f"pull {entity} (stopped)", counts)
        raise fail(exc) from None
    counts_table(f"pull {entity}", counts)


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
    def load(cls, opts: dict[str, Any]) -> _PullState:
        path: Path | None = opts["state"]
        output = file_of(opts["out"])
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
        if path is not None or opts["since"]:
            cursor = CursorState.from_json(data)
            if opts["since"] and cursor.value is None:
                cursor.value = opts["since"]
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
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        temporary.write_text(json.dumps(data, indent=2))
        os.replace(temporary, self.path)  # atomic: the old state or the new, never half

    def undo_uncommitted(self) -> None:
        """After a failure: drop what was written past the saved state, as a rerun would."""
        output = self.output
        if self.path and output and output.exists() and output.stat().st_size > self.offset:
            with output.open("r+b") as handle:
                handle.truncate(self.offset)


async def _pull(opts: dict[str, Any], counts: Counter[str]) -> None:
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
    state = _PullState.load(opts)
    async with BusinessCentralClient(settings) as bc:
        subscriber = Subscriber(
            bc,
            opts["entity"],
            company=opts["company"],
            key=opts["key"],
            params=params,
            transform=_chain(opts["transform"]),
            page_size=opts["page_size"],
            cursor=state.cursor,
        )
        writer = open_writer(opts["out"], opts["format"], key="id", append=state.cursor is not None)
        try:
            with progress_bar() as bar:
                task = bar.add_task(f"pull {opts['entity']}", total=None, detail="")
                async for record in subscriber.records():
                    writer.write(record)
                    state.delivered.append(record)
                    counts["read"] += 1
                    if len(state.delivered) >= writer.batch_size:
                        writer.flush()
                        state.commit()
                    bar.update(task, advance=1, detail=f"page {subscriber.pages}")
                writer.flush()
                state.commit()
        except BaseException:
            writer.pending.clear()  # not covered by the saved cursor: read again next time
            writer.close()
            state.undo_uncommitted()
            raise
        writer.close()


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
