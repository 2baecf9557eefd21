"""`bcbridge pull` as a daily tool: record transformers and request-parameter transformers named
apart, honest empties, `--since` in the user's words, a progress bar that knows its total, and
no `@odata.*` annotations in the output unless asked (issue 12).

The CLI runs in this process (`bcbridge.cli.main`) against the session's emulator process; the
counting itself is checked on the library's `Subscriber` against the in-process emulator."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from bcbridge.cli import main
from bcbridge.cli.pull import since_value
from bcbridge.client import BusinessCentralClient
from bcbridge.errors import ConfigError
from bcbridge.subscriber import CursorState, Subscriber
from bcbridge.testing import InProcessEmulator, RunningEmulator

CRONUS = "CRONUS USA, Inc."


@pytest.fixture
def pull(
    bc_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    """`pull(*args)` -> (exit code, stdout, stderr) of `bcbridge pull ...` in this process."""
    for name, value in {**bc_emulator.info.env(), "BC_COMPANY": CRONUS}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            main(["pull", *args])
        captured = capsys.readouterr()
        return int(stopped.value.code or 0), captured.out, captured.err

    return run


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- two kinds of transformers -------------------------------------------------------------------


def test_transform_shapes_the_records_and_keeps_top(pull: Any, tmp_path: Path) -> None:
    """The observed bug: `--transform keep.yaml` was applied to the request parameters, so
    `keep: [number, displayName]` dropped `$top` and every full record came back."""
    keep = tmp_path / "keep.yaml"
    keep.write_text("- keep: [number, displayName]\n")
    out = tmp_path / "c.jsonl"
    code, _, err = pull("customers", "--top", "3", "--transform", str(keep), "--out", str(out))
    assert code == 0, err
    records = lines(out)
    assert len(records) == 3
    assert all(set(record) == {"number", "displayName"} for record in records)


def test_transform_filter_counts_the_records_left_out(pull: Any, tmp_path: Path) -> None:
    steps = tmp_path / "steps.yaml"
    steps.write_text(
        "transform:\n"
        "  - filter: \"number == 'C00010'\"\n"
        "  - rename: {displayName: name}\n"
        "  - keep: [number, name]\n"
    )
    out = tmp_path / "c.jsonl"
    code, _, err = pull(
        "customers", "--filter", "number le 'C00020'", "--transform", str(steps), "--out", str(out)
    )
    assert code == 0, err
    assert [set(r) for r in lines(out)] == [{"number", "name"}]
    assert "filtered" in err and "written" in err


def test_params_transform_changes_the_request(pull: Any, tmp_path: Path) -> None:
    steps = tmp_path / "params.yaml"
    steps.write_text("- set: {$top: 2, $select: 'number'}\n")
    out = tmp_path / "c.jsonl"
    code, _, err = pull("customers", "--params-transform", str(steps), "--out", str(out))
    assert code == 0, err
    assert [set(r) for r in lines(out)] == [{"number"}, {"number"}]


def test_params_transform_that_drops_options_is_called_out(pull: Any, tmp_path: Path) -> None:
    """The old meaning of --transform, now spelled --params-transform: removing the query options
    the user gave is said on stderr, with the flag that transforms records."""
    keep = tmp_path / "keep.yaml"
    keep.write_text("- keep: [number, displayName]\n")
    out = tmp_path / "c.jsonl"
    code, _, err = pull(
        "customers", "--top", "2", "--params-transform", str(keep), "--out", str(out)
    )
    assert code == 0, err
    assert "--params-transform removed $top" in err and "--transform" in err


@pytest.mark.parametrize("flag", ["--transform", "--params-transform"])
def test_a_transform_file_that_is_wrong_names_its_flag(
    pull: Any, tmp_path: Path, flag: str
) -> None:
    misspelled = tmp_path / "steps.yaml"
    misspelled.write_text("- kep: [number]\n")
    out = str(tmp_path / "c.jsonl")
    code, _, err = pull("customers", flag, str(misspelled), "--out", out)
    assert code == 2 and err.startswith(f"error: {flag}: "), err
    assert "did you mean keep?" in err
    code, _, err = pull("customers", flag, str(tmp_path / "missing.yaml"), "--out", out)
    assert code == 2 and err.startswith(f"error: {flag}: "), err
    assert "missing.yaml" in err and "Traceback" not in err


def test_a_record_transform_that_drops_the_cursor_fields_still_moves_the_cursor(
    pull: Any, tmp_path: Path
) -> None:
    keep = tmp_path / "keep.yaml"
    keep.write_text("- keep: [number]\n")
    state, out = tmp_path / "state.json", tmp_path / "c.jsonl"
    args = ["customers", "--state", str(state), "--transform", str(keep), "--out", str(out)]
    code, _, err = pull(*args)
    assert code == 0, err
    first = len(lines(out))
    saved = json.loads(state.read_text())
    assert first > 0 and saved["value"] and saved["boundary"]
    code, _, err = pull(*args, "--since", "2000-01-01")
    assert code == 0, err
    assert "--since 2000-01-01T00:00:00.000Z not used" in err  # the saved cursor wins, visibly
    assert f"nothing new since {saved['value']}" in err
    assert len(lines(out)) == first


def test_a_sql_output_without_ids_says_how_to_keep_them(pull: Any, tmp_path: Path) -> None:
    keep = tmp_path / "keep.yaml"
    keep.write_text("- keep: [number, displayName]\n")
    target = f"sqlite:///{tmp_path / 'bc.db'}#c"
    code, _, err = pull("customers", "--top", "3", "--transform", str(keep), "--out", target)
    assert code == 2
    assert "--out" in err and "no 'id'" in err and "--transform" in err and ".jsonl" in err
    assert "written" not in err  # nothing reached the table, and the counts do not pretend


# --- honest empties and --since ------------------------------------------------------------------


def test_a_filter_that_matches_nothing_says_so(pull: Any, tmp_path: Path) -> None:
    out = tmp_path / "none.jsonl"
    code, _, err = pull("customers", "--filter", "number eq 'NO-SUCH'", "--out", str(out))
    assert code == 0
    assert "0 records: the filter matched none" in err
    assert "Outcome" not in err and "0/0" not in err  # no empty table, no full bar of nothing


def test_since_after_every_change_says_nothing_new(pull: Any, tmp_path: Path) -> None:
    code, _, err = pull("customers", "--since", "2999-01-01", "--out", str(tmp_path / "c.jsonl"))
    assert code == 0
    assert "nothing new since 2999-01-01T00:00:00.000Z" in err


def test_since_as_a_date_reads_what_changed_after_it(pull: Any, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    code, _, err = pull("customers", "--since", "2000-01-01", "--top", "5", "--out", str(out))
    assert code == 0, err
    records = lines(out)
    assert len(records) == 5
    assert all(r["lastModifiedDateTime"] >= "2000-01-01" for r in records)


@pytest.mark.parametrize("given", ["yesterdy", "last week", "2026-13-01", "5 parsecs", "7x"])
def test_since_that_is_not_a_time_is_refused_naming_the_flag(
    pull: Any, tmp_path: Path, given: str
) -> None:
    code, _, err = pull("customers", "--since", given, "--out", str(tmp_path / "c.jsonl"))
    assert code == 2
    assert "--since" in err and repr(given) in err
    assert "ISO date" in err and "yesterday" in err and "24h" in err
    assert "Traceback" not in err
    assert not (tmp_path / "c.jsonl").exists()  # refused before anything was written


NOW = datetime(2026, 11, 26, 10, 30, 15, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("today", "2026-11-26T00:00:00.000Z"),
        ("Yesterday", "2026-11-25T00:00:00.000Z"),
        ("24h", "2026-11-25T10:30:15.123Z"),
        ("7d", "2026-11-19T10:30:15.123Z"),
        ("30m", "2026-11-26T10:00:15.123Z"),
        ("2w", "2026-11-12T10:30:15.123Z"),
        ("2026-11-01", "2026-11-01T00:00:00.000Z"),
        ("2026-11-01T08:00:00Z", "2026-11-01T08:00:00.000Z"),
        ("2026-11-01T08:00:00", "2026-11-01T08:00:00.000Z"),  # no offset: UTC
        ("2026-11-01T10:00:00+02:00", "2026-11-01T08:00:00.000Z"),
    ],
)
def test_since_forms(given: str, expected: str) -> None:
    assert since_value(given, now=NOW) == expected


def test_since_refuses_the_empty_string() -> None:
    with pytest.raises(ConfigError, match="--since"):
        since_value("", now=NOW)


# --- progress: the total BC counts ---------------------------------------------------------------


def test_the_subscriber_learns_the_total_from_the_first_page(
    bc_client: BusinessCentralClient,
) -> None:
    async def read(**options: Any) -> tuple[Subscriber, int]:
        subscriber = Subscriber(bc_client, "customers", company=CRONUS, page_size=7, **options)
        read = [record async for record in subscriber.records()]
        return subscriber, len(read)

    counted, number = anyio.run(lambda: read(count_total=True))
    assert counted.pages > 1  # the total arrives with the first of several pages
    assert counted.total == number
    limited, number = anyio.run(lambda: read(count_total=True, params={"$top": 9}))
    assert limited.total == number == 9
    uncounted, _ = anyio.run(lambda: read())
    assert uncounted.total is None  # flows do not ask


def test_a_refused_count_reads_on_without_a_total(
    inprocess_emulator_factory: Callable[..., InProcessEmulator],
) -> None:
    """BC's support for $count is not documented: a 400 on the counted first page is read again
    without it, and the bar stays indeterminate."""
    emulator = inprocess_emulator_factory()
    emulator.fault("status", status=400, path_contains="/customers", method="GET")

    async def read() -> tuple[Subscriber, int]:
        async with emulator.client(company=CRONUS) as bc:
            subscriber = Subscriber(bc, "customers", page_size=10, count_total=True)
            return subscriber, len([record async for record in subscriber.records()])

    subscriber, number = anyio.run(read)
    assert number > 10 and subscriber.pages > 1
    assert subscriber.total is None


def test_the_total_covers_the_records_skipped_at_the_cursor(
    bc_client: BusinessCentralClient,
) -> None:
    async def read(cursor: CursorState) -> tuple[Subscriber, list[dict[str, Any]]]:
        subscriber = Subscriber(
            bc_client, "customers", company=CRONUS, cursor=cursor, count_total=True
        )
        return subscriber, [record async for record in subscriber.records()]

    cursor = CursorState()
    _, first = anyio.run(read, cursor)
    for record in first:
        cursor.advance(record)
    again, records = anyio.run(read, cursor)
    assert records == []
    assert again.skipped == len(cursor.boundary) and again.total == again.skipped


def test_the_bar_shows_read_out_of_the_total(pull: Any, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    code, _, err = pull("customers", "--top", "12", "--page-size", "5", "--out", str(out))
    assert code == 0, err
    assert "12/12 records" in err


# --- annotations ----------------------------------------------------------------------------------


def test_annotations_are_left_out_of_csv_unless_asked(pull: Any, tmp_path: Path) -> None:
    plain, kept = tmp_path / "plain.csv", tmp_path / "kept.csv"
    args = ["customers", "--top", "2", "--select", "number,displayName"]
    code, _, err = pull(*args, "--out", str(plain))
    assert code == 0, err
    assert next(csv.reader(plain.open())) == ["number", "displayName"]
    code, _, err = pull(*args, "--annotations", "--out", str(kept))
    assert code == 0, err
    assert next(csv.reader(kept.open())) == ["@odata.etag", "number", "displayName"]


def test_annotations_are_left_out_of_sql_and_of_expanded_records(pull: Any, tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'bc.db'}#orders"
    code, _, err = pull("salesOrders", "--top", "2", "--expand", "salesOrderLines", "--out", target)
    assert code == 0, err
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'bc.db'}")
    try:
        with engine.connect() as conn:
            columns = [c["name"] for c in sa.inspect(conn).get_columns("orders")]
            lines_cell = conn.execute(sa.text("select salesOrderLines from orders")).scalar()
    finally:
        engine.dispose()
    assert "id" in columns and not [c for c in columns if "@odata." in c]
    assert lines_cell is not None and "@odata." not in lines_cell
