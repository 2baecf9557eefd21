"""The emulator's write path made cheaper (bench/bench_emulator_writes.py) answers as before:
path splitting, ``or`` chains, new records' blanks, webhook changes of batch operations."""

from __future__ import annotations

import re

import httpx
from hypothesis import given
from hypothesis import strategies as st

from bcbridge.catalog import EntitySet, Field, FieldType
from bcbridge.emulator.query import split_top_level
from bcbridge.emulator.store import now_text
from bcbridge.emulator.validation import blank_record
from bcbridge.testing import InProcessEmulator
from tests.emulator.conftest import assert_bc_error


def _split_by_characters(text: str, separator: str) -> list[str]:
    """The character-by-character splitter the emulator used before (the reference)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == separator and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


@given(st.text(alphabet="ab(),/; "), st.sampled_from([",", "/", ";"]))
def test_split_top_level_splits_as_the_character_loop_did(text: str, separator: str) -> None:
    assert split_top_level(text, separator) == _split_by_characters(text, separator)


def test_now_text_is_bc_datetime_text_in_milliseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now_text())


def test_a_blank_record_is_new_each_time() -> None:
    """The blanks are worked out once per set; a record must still get its own lists."""
    fields = (Field("id", FieldType.GUID), Field("tags", FieldType.COLLECTION))

    entity_set = EntitySet("things", "thing", fields=fields)
    first = blank_record(entity_set)
    first["tags"].append("x")
    first["id"] = "changed"
    assert blank_record(entity_set) == {
        "id": "00000000-0000-0000-0000-000000000000",
        "tags": [],
    }


def test_an_or_on_a_second_field_deep_in_a_long_chain_is_refused(
    api: httpx.Client, company: str
) -> None:
    """Only the top of an ``or`` chain is checked now; it sees every field below it."""
    chain = " or ".join(f"number eq 'C{n:05d}'" for n in range(10, 50))
    for condition in (f"city eq 'Miami' or {chain}", f"{chain} or city eq 'Miami'"):
        message = assert_bc_error(
            api.get(f"{company}/customers", params={"$filter": condition}), 400, "BadRequest"
        )
        assert "'OR' operator is not supported on distinct fields" in message
    inside = f"displayName ne 'x' and ({chain} or city eq 'Miami')"
    response = api.get(f"{company}/customers", params={"$filter": inside})
    assert response.status_code == 400
    found = api.get(f"{company}/customers", params={"$filter": f"displayName ne 'x' and ({chain})"})
    assert found.status_code == 200, found.text
    assert {row["number"] for row in found.json()["value"]} <= {f"C{n:05d}" for n in range(10, 50)}


def test_batch_operations_commit_one_by_one_on_one_connection(
    api: httpx.Client, company: str, emulator: InProcessEmulator
) -> None:
    """A failed operation is rolled back while the ones before it stay (default mode)."""
    requests = [
        {
            "id": str(n),
            "method": "POST",
            "url": f"{company}/items",
            "headers": {"Content-Type": "application/json"},
            "body": {"number": number, "displayName": "speed"},
        }
        for n, number in enumerate(["WS-1", "WS-2", "WS-1", "WS-3"])
    ]
    response = api.post("$batch", json={"requests": requests})
    statuses = [r["status"] for r in response.json()["responses"]]
    assert statuses == [201, 201, 409]
    numbers = api.get(f"{company}/items", params={"$filter": "startswith(number,'WS-')"})
    assert sorted(row["number"] for row in numbers.json()["value"]) == ["WS-1", "WS-2"]
    item = numbers.json()["value"][0]
    patch = {
        "id": "p",
        "method": "PATCH",
        "url": f"{company}/items({item['id']})",
        "headers": {"Content-Type": "application/json", "If-Match": item["@odata.etag"]},
        "body": {"displayName": "speed changed"},
    }
    again = api.post("$batch", json={"requests": [patch, patch]}).json()["responses"]
    assert [r["status"] for r in again] == [200, 409]  # BC: the record changed
    assert again[0]["body"]["displayName"] == "speed changed"
