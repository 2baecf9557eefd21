"""``$schemaversion=2.1``: what BC serves only with it in $filter (bc-api.md §4.1, §4.2)."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import pytest

from bcbridge import Subscriber
from bcbridge.emulator.inprocess import InProcessEmulator, start_inprocess_emulator
from bcbridge.errors import BCAPIError
from bcbridge.odata import needs_schema_21, with_schema_version
from tests.emulator.conftest import api_client, assert_bc_error


def numbers(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(row["number"] for row in response.json()["value"])


def two_customers(api: httpx.Client, company: str) -> list[str]:
    rows = api.get(f"{company}/customers", params={"$top": "2"}).json()["value"]
    return sorted(row["number"] for row in rows)


def test_in_needs_schema_21(api: httpx.Client, company: str) -> None:
    wanted = two_customers(api, company)
    text = f"number in ('{wanted[0]}','{wanted[1]}')"
    message = assert_bc_error(
        api.get(f"{company}/customers", params={"$filter": text}), 400, "BadRequest"
    )
    assert "$schemaversion=2.1" in message
    for version in ("2.0", "1.0"):
        refused = api.get(
            f"{company}/customers", params={"$filter": text, "$schemaversion": version}
        )
        assert_bc_error(refused, 400, "BadRequest")
    served = api.get(f"{company}/customers", params={"$filter": text, "$schemaversion": "2.1"})
    assert numbers(served) == wanted


def test_nested_functions_need_schema_21(api: httpx.Client, company: str) -> None:
    name = api.get(f"{company}/customers", params={"$top": "1"}).json()["value"][0]["displayName"]
    part = name[1:4].upper()
    text = f"contains(tolower(displayName),'{part.lower()}')"
    message = assert_bc_error(
        api.get(f"{company}/customers", params={"$filter": text}), 400, "BadRequest"
    )
    assert "nested" in message and "$schemaversion=2.1" in message
    served = api.get(f"{company}/customers", params={"$filter": text, "$schemaversion": "2.1"})
    assert served.status_code == 200
    found = [row["displayName"] for row in served.json()["value"]]
    assert name in found and all(part.lower() in n.lower() for n in found)
    # one function, not nested: schema 2.0 serves it
    plain = api.get(f"{company}/customers", params={"$filter": f"tolower(displayName) eq '{name}'"})
    assert plain.status_code == 200


def test_gates_apply_inside_expand_and_batch(
    emulator: InProcessEmulator, api: httpx.Client, company: str
) -> None:
    expand = "salesOrderLines($filter=lineType in ('Item','Account'))"
    assert_bc_error(
        api.get(f"{company}/salesOrders", params={"$expand": expand, "$top": "1"}),
        400,
        "BadRequest",
    )
    served = api.get(
        f"{company}/salesOrders",
        params={"$expand": expand, "$top": "1", "$schemaversion": "2.1"},
    )
    assert served.status_code == 200 and served.json()["value"][0]["salesOrderLines"]
    url = f"{company}/customers?$filter=number in ('x','y')"
    for inner, status in ((url, 400), (url + "&$schemaversion=2.1", 200)):
        batch = api.post("$batch", json={"requests": [{"id": "1", "method": "GET", "url": inner}]})
        assert batch.json()["responses"][0]["status"] == status, batch.text


def test_an_unknown_schema_version_is_refused(api: httpx.Client, company: str) -> None:
    message = assert_bc_error(
        api.get(f"{company}/customers", params={"$schemaversion": "3.7"}), 400, "BadRequest"
    )
    assert "'3.7'" in message


@pytest.fixture
def lenient() -> Iterator[InProcessEmulator]:
    with start_inprocess_emulator(schemaversion_gates=["in"]) as running:
        yield running


def test_gates_are_settings(lenient: InProcessEmulator) -> None:
    company = f"companies({lenient.info.company_id()})"
    with api_client(lenient) as api:
        nested = {"$filter": "contains(tolower(displayName),'a')"}
        assert api.get(f"{company}/customers", params=nested).status_code == 200
        assert_bc_error(
            api.get(f"{company}/customers", params={"$filter": "number in ('x','y')"}),
            400,
            "BadRequest",
        )
        lenient.configure(schemaversion_gates=[])
        assert api.get(f"{company}/customers", params={"$filter": "number in ('x','y')"}).is_success
        lenient.configure(schemaversion_gates=["in", "nested"])
        assert_bc_error(api.get(f"{company}/customers", params=nested), 400, "BadRequest")


def test_client_sends_schema_21_when_the_filter_needs_it(
    emulator: InProcessEmulator, api: httpx.Client, company: str
) -> None:
    wanted = two_customers(api, company)
    text = f"number in ('{wanted[0]}','{wanted[1]}')"

    async def read(**settings: str) -> list[str]:
        async with emulator.client(**settings) as bc:
            reader = Subscriber(
                bc, "customers", company=emulator.info.company_id(), params={"$filter": text}
            )
            return sorted([record["number"] async for record in reader.records()])

    assert anyio.run(read) == wanted
    with pytest.raises(BCAPIError, match=r"\$schemaversion=2\.1"):
        anyio.run(lambda: read(schema_version="2.0"))


def test_which_filters_need_schema_21() -> None:
    assert needs_schema_21("number in ('a','b')")
    assert needs_schema_21("city eq 'x' and contains(tolower(displayName),'a')")
    assert not needs_schema_21("contains(displayName,'a') and tolower(city) eq 'x'")
    assert needs_schema_21("number in ('a')")  # a one-value list, which odata-query cannot read
    assert not needs_schema_21("name eq 'in (' and (")
    assert not needs_schema_21("not a filter ((")
    assert not needs_schema_21(None)
    assert with_schema_version({"$filter": "a in ('x')"}, None)["$schemaversion"] == "2.1"
    assert with_schema_version({"$filter": "a eq 'x'"}, "2.0")["$schemaversion"] == "2.0"
    assert "$schemaversion" not in with_schema_version({"$filter": "a eq 'x'"}, None)
    kept = {"$filter": "a in ('x')", "$schemaversion": "2.0"}
    assert with_schema_version(kept, "2.1") == kept


def test_in_with_one_value(api: httpx.Client, company: str) -> None:
    wanted = two_customers(api, company)[0]
    params = {"$filter": f"number in ('{wanted}')", "$schemaversion": "2.1"}
    assert numbers(api.get(f"{company}/customers", params=params)) == [wanted]
    assert_bc_error(
        api.get(f"{company}/customers", params={"$filter": f"number in ('{wanted}')"}),
        400,
        "BadRequest",
    )
