"""BC's field lengths (catalog `Field.max_length`): longer values get BC's 400; nothing lands."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bcbridge import catalog
from bcbridge.catalog import _fields
from bcbridge.testing import RunningEmulator
from tests.emulator.conftest import assert_bc_error

LIMITS = [
    ("customers", "displayName", 100),
    ("customers", "number", 20),
    ("customers", "email", 80),
    ("customers", "phoneNumber", 30),
    ("customers", "addressLine1", 100),
    ("customers", "city", 30),
    ("customers", "postalCode", 20),
    ("vendors", "displayName", 100),
    ("vendors", "number", 20),
    ("items", "displayName", 100),
    ("items", "number", 20),
]
_counter = iter(range(10_000))


def _unique(prefix: str, length: int) -> str:
    """A string of exactly `length` characters that no other test uses."""
    head = f"{prefix}{next(_counter)}-"
    return (head + "x" * length)[:length]


def _too_long(response: httpx.Response, length: int, limit: int) -> None:
    message = assert_bc_error(response, 400, "Application_StringExceededLength")
    assert message.startswith(
        f"The length of the string is {length}, but it must be less than or equal to "
        f"{limit} characters. Value: "
    ), message


@pytest.mark.parametrize(("set_name", "field", "limit"), LIMITS)
def test_catalog_carries_bc_lengths(set_name: str, field: str, limit: int) -> None:
    assert catalog.get(set_name).field(field).max_length == limit


@pytest.mark.parametrize(("set_name", "field", "limit"), LIMITS)
def test_a_value_one_longer_than_bc_allows_is_refused(
    api: httpx.Client, company: str, set_name: str, field: str, limit: int
) -> None:
    at_limit = _unique("L", limit)
    created = api.post(f"{company}/{set_name}", json={field: at_limit})
    assert created.status_code == 201, created.text
    assert created.json()[field] == at_limit
    too_long = _unique("T", limit + 1)
    _too_long(api.post(f"{company}/{set_name}", json={field: too_long}), limit + 1, limit)
    left = api.get(f"{company}/{set_name}", params={"$filter": f"{field} eq '{too_long}'"})
    assert left.json()["value"] == []


def test_patch_too_long_changes_nothing(api: httpx.Client, company: str) -> None:
    created = api.post(f"{company}/customers", json={"displayName": "Short name"}).json()
    url = f"{company}/customers({created['id']})"
    refused = api.patch(url, json={"city": "C" * 31}, headers={"If-Match": created["@odata.etag"]})
    _too_long(refused, 31, 30)
    after = api.get(url).json()
    assert after["city"] == created["city"] and after["@odata.etag"] == created["@odata.etag"]


def test_a_too_long_line_refuses_the_whole_deep_insert(api: httpx.Client, company: str) -> None:
    customer = api.get(f"{company}/customers", params={"$top": 1}).json()["value"][0]
    reference = _unique("DEEP", 30)
    body = {
        "customerNumber": customer["number"],
        "externalDocumentNumber": reference,
        "salesOrderLines": [
            {"lineType": "Comment", "description": "fine"},
            {"lineType": "Comment", "description": "d" * 101},
        ],
    }
    _too_long(api.post(f"{company}/salesOrders", json=body), 101, 100)
    found = api.get(
        f"{company}/salesOrders", params={"$filter": f"externalDocumentNumber eq '{reference}'"}
    )
    assert found.json()["value"] == []


def test_metadata_shows_max_length(api: httpx.Client) -> None:
    edmx = api.get("$metadata").text
    customer = edmx[edmx.index('<EntityType Name="customer">') :]
    customer = customer[: customer.index("</EntityType>")]
    assert re.search(
        r'<Property Name="displayName" Type="Edm.String" [^>]*MaxLength="100"', customer
    )
    assert re.search(r'<Property Name="number" Type="Edm.String" [^>]*MaxLength="20"', customer)
    assert 'Name="balanceDue" Type="Edm.Decimal" Nullable="true"/>' in customer


def test_seeded_data_fits_the_lengths(api: httpx.Client, emulator: RunningEmulator) -> None:
    for company in emulator.info.companies:
        for entity_set in catalog.CATALOG.values():
            limited = [f for f in entity_set.fields if f.max_length]
            if not limited or entity_set.parent or entity_set.scope is catalog.Scope.ROOT:
                continue
            rows = api.get(
                f"companies({company['id']})/{entity_set.name}", params={"$top": 5000}
            ).json()["value"]
            for row in rows:
                for field in limited:
                    assert len(row[field.name]) <= (field.max_length or 0), (entity_set.name, row)


def test_len_notation() -> None:
    (name,) = _fields("name:len=30")
    assert name.max_length == 30 and name.type is catalog.FieldType.STRING
    with pytest.raises(ValueError, match="string properties only"):
        _fields("price:decimal:len=5")
    with pytest.raises(ValueError, match="at least 1"):
        _fields("name:len=0")


# --- failed writes leave no state behind ------------------------------------------------------


def _category_ops(company: str, codes: list[str]) -> list[dict[str, object]]:
    return [
        {"id": str(i), "method": "POST", "url": f"{company}/itemCategories", "body": {"code": c}}
        for i, c in enumerate(codes)
    ]


def _category_codes(api: httpx.Client, company: str) -> set[str]:
    rows = api.get(f"{company}/itemCategories", params={"$top": 20000}).json()["value"]
    return {row["code"] for row in rows}


def test_an_overflow_in_an_isolated_batch_rolls_back_the_batch(
    api: httpx.Client, company: str
) -> None:
    good, bad = _unique("G", 12), "C" * 21  # itemCategories.code is Code[20]
    response = api.post(
        "$batch",
        json={"requests": _category_ops(company, [good, bad])},
        headers={"Isolation": "snapshot"},
    )
    statuses = [r["status"] for r in response.json()["responses"]]
    assert statuses == [201, 400]
    assert response.json()["responses"][1]["body"]["error"]["code"] == (
        "Application_StringExceededLength"
    )
    assert good not in _category_codes(api, company)


def test_concurrent_bad_requests_leave_nothing_behind(api: httpx.Client, company: str) -> None:
    before = _category_codes(api, company)
    goods = [_unique("K", 15) for _ in range(6)]

    def isolated_batch(index: int) -> int:
        ops = _category_ops(company, [_unique("R", 15), "Z" * 25])
        return api.post(
            "$batch", json={"requests": ops}, headers={"Isolation": "snapshot"}
        ).status_code

    def plain(index: int) -> int:
        return api.post(f"{company}/itemCategories", json={"code": "Y" * (21 + index)}).status_code

    def good(index: int) -> int:
        return api.post(f"{company}/itemCategories", json={"code": goods[index]}).status_code

    with ThreadPoolExecutor(6) as pool:
        jobs = [pool.submit(job, i) for i in range(6) for job in (isolated_batch, plain, good)]
        statuses = [job.result() for job in jobs]
    assert sorted(statuses) == sorted([200] * 6 + [400] * 6 + [201] * 6)
    assert _category_codes(api, company) == before | set(goods)
