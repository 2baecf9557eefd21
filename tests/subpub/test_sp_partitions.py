"""Partitioned reads (issue 16): several concurrent nextLink streams over key ranges give the
same records as one sequential nextLink read, once each, ties on the key and records added or
changed during the read included; incremental reads keep their order and their cursor."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from bcbridge.cli import main
from bcbridge.client import BusinessCentralClient
from bcbridge.errors import BCAPIError
from bcbridge.flowconfig import IncomingConfig
from bcbridge.partition import AUTO, Partitions
from bcbridge.subscriber import CursorState, Subscriber
from bcbridge.testing import InProcessEmulator, RunningEmulator, start_inprocess_emulator
from tests.flows.conftest import run_flow, write_project
from tests.subpub.conftest import with_client

CRONUS = "CRONUS USA, Inc."


@pytest.fixture(scope="module")
def emulator() -> Iterator[InProcessEmulator]:
    with start_inprocess_emulator(scale="customers=600,generalLedgerEntries=2000") as running:
        yield running


async def _read(
    bc: BusinessCentralClient, entity: str, partitions: Partitions | None, **options: Any
) -> tuple[list[dict[str, Any]], Subscriber]:
    subscriber = Subscriber(bc, entity, partitions=partitions, **options)
    return [record async for record in subscriber.records()], subscriber


def _ids(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(record["id"]) for record in records)


def test_a_partitioned_read_gives_the_records_of_a_nextlink_read_once_each(
    emulator: InProcessEmulator,
) -> None:
    async def work(bc: BusinessCentralClient) -> None:
        sequential, _ = await _read(bc, "generalLedgerEntries", None, page_size=100)
        parted, subscriber = await _read(
            bc, "generalLedgerEntries", 4, page_size=100, count_total=True
        )
        assert subscriber.ranges == 4 and subscriber.total == len(sequential) >= 2000
        assert _ids(parted) == _ids(sequential) and max(_ids(parted).values()) == 1
        assert sorted(parted, key=lambda r: r["id"]) == sorted(sequential, key=lambda r: r["id"])

    with_client(emulator, work)


def test_ties_on_the_key_fall_into_one_range(emulator: InProcessEmulator) -> None:
    async def work(bc: BusinessCentralClient) -> None:
        sequential, _ = await _read(bc, "generalLedgerEntries", None, page_size=100)
        dates = Counter(record["postingDate"] for record in sequential)
        assert max(dates.values()) > 1  # the key has ties, or this test proves nothing
        parted, subscriber = await _read(
            bc, "generalLedgerEntries", 5, page_size=100, partition_key="postingDate"
        )
        assert subscriber.ranges > 1
        assert _ids(parted) == _ids(sequential) and max(_ids(parted).values()) == 1
        # one value everywhere: every probe finds the same boundary, one range is left
        same, one = await _read(
            bc,
            "generalLedgerEntries",
            4,
            page_size=100,
            partition_key="documentType",
            params={"$filter": "documentType eq 'Payment'"},
        )
        expected = [r for r in sequential if r["documentType"] == "Payment"]
        assert one.ranges <= 2 and _ids(same) == _ids(expected)

    with_client(emulator, work)


def test_records_added_and_changed_during_the_read_are_read_once_at_most(
    inprocess_emulator_factory: Any,
) -> None:
    emulator = inprocess_emulator_factory(scale="customers=600")

    async def work(bc: BusinessCentralClient) -> None:
        before, _ = await _read(bc, "customers", None, page_size=40)
        subscriber = Subscriber(bc, "customers", partitions=4, page_size=40)
        read: list[dict[str, Any]] = []
        added: list[str] = []
        changed = [record["id"] for record in before[::50]]
        async for record in subscriber.records():
            read.append(record)
            if len(read) == 60:  # streams are under way: write behind and ahead of them
                for record_id in changed:
                    await bc.request(
                        "PATCH",
                        await _record_path(bc, record_id),
                        json={"displayName": "changed during the read"},
                        headers={"If-Match": "*"},
                    )
                for n in range(5):
                    made = await bc.request(
                        "POST", await _collection(bc), json={"displayName": f"new {n}"}
                    )
                    added.append(made.json()["id"])
        counts = _ids(read)
        assert subscriber.ranges == 4 and max(counts.values()) == 1
        assert set(_ids(before)) <= set(counts)  # every record there at the start, once
        assert set(counts) - set(_ids(before)) <= set(added)  # new ones: at most once each

    with_client(emulator, work)


async def _collection(bc: BusinessCentralClient) -> str:
    return await Subscriber(bc, "customers").path()


async def _record_path(bc: BusinessCentralClient, record_id: str) -> str:
    return await Subscriber(bc, "customers", key=record_id).path()


def test_an_incremental_read_keeps_the_sequential_order_and_cursor(
    emulator: InProcessEmulator,
) -> None:
    async def work(bc: BusinessCentralClient) -> None:
        results = []
        for partitions in (None, 4):
            cursor = CursorState("lastModifiedDateTime")
            records, subscriber = await _read(
                bc, "generalLedgerEntries", partitions, page_size=100, cursor=cursor
            )
            for record in records:
                cursor.advance(record)
            results.append(([r["id"] for r in records], cursor.to_json(), subscriber.ranges))
        (seq_ids, seq_cursor, _), (part_ids, part_cursor, ranges) = results
        assert ranges > 1 and part_ids == seq_ids and part_cursor == seq_cursor
        # and the next run from that cursor finds nothing new, as the sequential one does
        again, _ = await _read(
            bc,
            "generalLedgerEntries",
            4,
            page_size=100,
            cursor=CursorState.from_json(part_cursor),
        )
        assert again == []

    with_client(emulator, work)


def test_auto_splits_only_what_is_worth_it(emulator: InProcessEmulator) -> None:
    async def work(bc: BusinessCentralClient) -> None:
        _, small = await _read(bc, "vendors", AUTO, page_size=100)
        _, large = await _read(bc, "generalLedgerEntries", AUTO, page_size=100)
        assert small.ranges == 1
        assert large.ranges == bc.settings.max_concurrency  # never more than BC's in-flight limit
        # a read whose order or size the caller fixed stays one stream
        _, fixed = await _read(
            bc, "generalLedgerEntries", 4, page_size=100, params={"$orderby": "description"}
        )
        assert fixed.ranges == 1

    with_client(emulator, work)


def test_an_incoming_takes_partitions() -> None:
    assert IncomingConfig(entity="customers", partitions="auto").partitions == AUTO
    assert IncomingConfig(entity="customers", partitions=3).partitions == 3
    with pytest.raises(ValidationError):
        IncomingConfig(entity="customers", partitions=0)


def test_pull_partitions_writes_the_same_lines(
    bc_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for name, value in {**bc_emulator.info.env(), "BC_COMPANY": CRONUS}.items():
        monkeypatch.setenv(name, value)

    def pull(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            main(["pull", "items", "--page-size", "5", *args])
        return int(stopped.value.code or 0), capsys.readouterr().err

    assert pull("--out", str(tmp_path / "one.jsonl"))[0] == 0
    assert pull("--partitions", "3", "--out", str(tmp_path / "three.jsonl"))[0] == 0
    one, three = (
        sorted(json.loads(line)["id"] for line in (tmp_path / name).read_text().splitlines())
        for name in ("one.jsonl", "three.jsonl")
    )
    assert one == three and len(one) > 15
    code, err = pull("--partitions", "0")
    assert (
        code == 2 and "--partitions" in err and "auto" in err and len(err.strip().splitlines()) == 1
    )


def test_an_incremental_flow_with_partitions_delivers_once_and_moves_its_cursor(
    tmp_path: Path, inprocess_emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = inprocess_emulator_factory(scale="customers=300")
    for name, value in emulator.info.env().items():
        monkeypatch.setenv(name, value)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "store": f"sqlite:///{tmp_path / 'state.db'}",
            "incoming": {
                "customers": {
                    "entity": "customers",
                    "company": CRONUS,
                    "cursor": "lastModifiedDateTime",
                    "page_size": 20,
                    "partitions": 3,
                }
            },
            "flows": {
                "mirror": {
                    "from": "customers",
                    "transform": [{"keep": ["id", "number", "displayName"]}],
                    "to": {"writer": f"{target}#customers", "key": "id"},
                }
            },
        },
    )
    first = run_flow(project, "mirror", via=emulator)
    assert first.status == "ok" and first.counts["written"] >= 300, first

    async def rename(bc: BusinessCentralClient) -> str:
        records, _ = await _read(bc, "customers", None, params={"$top": 1}, paging=False)
        path = await Subscriber(bc, "customers", key=records[0]["id"]).path()
        await bc.request("PATCH", path, json={"displayName": "Renamed"}, headers={"If-Match": "*"})
        return str(records[0]["id"])

    renamed = with_client(emulator, rename)
    second = run_flow(project, "mirror", via=emulator)
    assert second.status == "ok" and second.counts["read"] == 1, second
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        rows: dict[str, str] = dict(
            conn.execute(sa.text('SELECT id, "displayName" FROM customers')).all()
        )
    engine.dispose()
    assert len(rows) == first.counts["written"] and rows[renamed] == "Renamed"


def test_a_failing_stream_raises_its_error_and_no_stream_is_left_running(
    emulator: InProcessEmulator,
) -> None:
    async def work(bc: BusinessCentralClient) -> None:
        # once the streams are under way, the next request of one of them fails
        faulted = False
        with pytest.raises(BCAPIError) as failed:
            async for _ in Subscriber(
                bc, "generalLedgerEntries", partitions=4, page_size=100
            ).records():
                if not faulted:
                    emulator.fault(status=400)
                    faulted = True
        assert failed.value.status == 400
        # a caller that stops reading early: the streams stop with it
        async for _ in Subscriber(
            bc, "generalLedgerEntries", partitions=4, page_size=100
        ).records():
            break
        await anyio.sleep(0.1)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    try:
        with_client(emulator, work)
    finally:
        emulator.clear_faults()
