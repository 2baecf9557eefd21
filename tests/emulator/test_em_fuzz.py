"""Random bodies and query values over real HTTP: the emulator answers < 500, never crashes.

One emulator serves the module. Control-endpoint examples undo what a valid random body changed
(faults, limits, seed), so the API examples meet a normal emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcbridge.testing import RunningEmulator, start_emulator
from tests.emulator.conftest import assert_bc_error, control_client

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
GUID = "5d115c9c-44e3-ea11-bb43-000d3a2feca1"

# Numbers stay small or absurd: a *valid* random limit must not slow the module down.
numbers = (
    st.integers(-3, 5)
    | st.sampled_from([10**12, -(10**12), 2**63, 2**64])
    | st.floats(-3, 5, allow_nan=False)
)
scalars = st.none() | st.booleans() | numbers | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
CONTROL_KEYS = [
    "kind", "count", "status", "retry_after", "seconds", "after", "path_contains", "method",
    "token_lifetime", "latency_ms", "rate_limit", "max_concurrent", "max_queue",
    "queue_timeout_s", "seed", "scale", "publisher", "group", "version", "name", "entity",
    "fields",
]  # fmt: skip
control_values = (
    json_values
    | st.sampled_from(["status", "drop", "stall", "0/5", "5/nan", "1/0", "abc", "customers"])
    | st.dictionaries(st.sampled_from(["customers", "items", "nosuch"]), numbers, max_size=2)
)
control_bodies = st.dictionaries(
    st.sampled_from(CONTROL_KEYS) | st.text(max_size=8), control_values, max_size=4
)
raw_bodies = st.binary(max_size=40) | st.sampled_from([b"", b"{", b"[]", b"null", b'"x"', b"1e999"])

FILTER_TOKENS = [
    "displayName", "number", "balanceDue", "blocked", "id", "lastModifiedDateTime", "eq", "ne",
    "gt", "le", "and", "or", "not", "add", "in", "(", ")", ",", "'a'", "''", "1", "-1", "1.5",
    "99999999999999999999999", "true", "null", "2020-01-01", "2020-01-01T00:00:00Z", GUID,
    "contains(displayName,'a')", "startswith(number,1)", "tolower(displayName)", "any", "/",
]  # fmt: skip
filters = st.lists(st.sampled_from(FILTER_TOKENS), min_size=1, max_size=7).map(" ".join) | st.text(
    max_size=20
)
expands = st.sampled_from(
    ["currency", "paymentTerm", "nosuch", "currency(", "currency)", "currency($select=code)",
     "currency($top=1)", "currency($bogus=1)", "salesOrderLines", "(", "a,,b",
     "currency($expand=x)"]
) | st.text(max_size=12)  # fmt: skip
query_values = {
    "$top": st.text(max_size=6) | st.sampled_from(["-1", "abc", "0", "99999999999999999999999"]),
    "$skip": st.text(max_size=6) | st.sampled_from(["x", "-5", "18446744073709551616"]),
    "$filter": filters,
    "$expand": expands,
    "$select": st.text(max_size=12) | st.sampled_from(["id,number", ",,", "nosuch"]),
    "$orderby": st.text(max_size=12) | st.sampled_from(["number desc", "number sideways", ","]),
    "$skiptoken": st.text(max_size=16) | st.sampled_from(["eyJhIjpbXX0", "eyJhIjpbMV0sImQiOi0xfQ"]),
    "$count": st.text(max_size=5),
}
queries = st.dictionaries(st.sampled_from(sorted(query_values)), st.just(""), max_size=3).flatmap(
    lambda chosen: st.fixed_dictionaries({key: query_values[key] for key in chosen})
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    """An emulator process over real HTTP: the fuzz also reads its log for tracebacks."""
    with start_emulator() as running:
        yield running


@pytest.fixture(scope="module")
def control(emulator: RunningEmulator) -> Iterator[httpx.Client]:
    with control_client(emulator) as client:
        yield client


@pytest.fixture(scope="module")
def customer(api: httpx.Client, company: str) -> dict[str, Any]:
    created: dict[str, Any] = api.post(f"{company}/customers", json={"displayName": "F"}).json()
    return created


def _no_crash(response: httpx.Response, sent: object) -> None:
    """Below 500, or 501 for what the emulator knowingly does not emulate (bc-api.md §7)."""
    if response.status_code == 501:
        assert response.json()["error"]["code"] == "BadRequest_MethodNotImplemented"
        return
    assert response.status_code < 500, (sent, response.text)


def _undo(emulator: RunningEmulator, control: httpx.Client, path: str, status: int) -> None:
    """Put back what a random body that happened to be valid changed."""
    emulator.clear_faults()
    if status < 400 and path == "config":
        emulator.configure(
            token_lifetime=3599,
            latency_ms=0,
            rate_limit="6000/300",
            max_concurrent=5,
            max_queue=95,
            queue_timeout_s=480,
        )
    if status < 400 and path == "seed":
        emulator.seed(seed=1, scale={})


def _check_control_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code == 400:
        error = response.json()["error"]
        assert error["code"] == "BadRequest" and isinstance(error["message"], str), error
        assert ": " in error["message"], error


@FUZZ
@given(
    path=st.sampled_from(["faults", "config", "seed", "entities", "reset"]),
    body=control_bodies,
)
def test_control_endpoints_with_random_objects(
    emulator: RunningEmulator, control: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    response = control.post(f"/_emulator/{path}", json=body)
    try:
        _check_control_answer(response)
    finally:
        _undo(emulator, control, path, response.status_code)


@FUZZ
@given(path=st.sampled_from(["faults", "config", "seed", "entities", "reset"]), raw=raw_bodies)
def test_control_endpoints_with_random_bytes(
    emulator: RunningEmulator, control: httpx.Client, path: str, raw: bytes
) -> None:
    response = control.post(f"/_emulator/{path}", content=raw)
    try:
        _check_control_answer(response)
    finally:
        _undo(emulator, control, path, response.status_code)


@FUZZ
@given(set_name=st.sampled_from(["customers", "salesOrders", "items"]), params=queries)
def test_reads_with_random_query_options(
    api: httpx.Client, company: str, set_name: str, params: dict[str, str]
) -> None:
    response = api.get(f"{company}/{set_name}", params=params)
    _no_crash(response, params)


@FUZZ
@given(key=st.text(max_size=40) | st.sampled_from(["", "'x'", "1,2", GUID.upper(), f"'{GUID}'"]))
def test_random_keys(api: httpx.Client, company: str, key: str) -> None:
    encoded = quote(key, safe="',")
    response = api.get(f"{company}/customers({encoded})")
    _no_crash(response, key)


@FUZZ
@given(body=json_values | st.dictionaries(st.sampled_from(["displayName", "number", "email",
       "creditLimit", "blocked", "type", "currencyId", "taxLiable", "city"]), json_values,
       max_size=4))  # fmt: skip
def test_writes_with_random_bodies(
    api: httpx.Client, company: str, customer: dict[str, Any], body: Any
) -> None:
    created = api.post(f"{company}/customers", json=body)
    _no_crash(created, body)
    patched = api.patch(
        f"{company}/customers({customer['id']})", json=body, headers={"If-Match": "*"}
    )
    _no_crash(patched, body)


@FUZZ
@given(raw=raw_bodies, requests=st.lists(json_values, max_size=3))
def test_batches_with_random_operations(
    api: httpx.Client, company: str, raw: bytes, requests: list[Any]
) -> None:
    response = api.post("$batch", content=raw, headers={"Content-Type": "application/json"})
    _no_crash(response, raw)
    response = api.post("$batch", json={"requests": requests})
    _no_crash(response, requests)


MALFORMED = [  # (method, path after the company, query, body, status, BC error code)
    ("POST", "customers", {}, b"{bad", 400, "BadRequest"),
    ("POST", "customers", {}, b"[1]", 400, "BadRequest"),
    ("GET", "customers", {"$top": "-1"}, None, 400, "BadRequest"),
    ("GET", "customers", {"$top": "abc"}, None, 400, "BadRequest"),
    ("GET", "customers", {"$top": "\u00b2"}, None, 400, "BadRequest"),
    ("GET", "customers", {"$top": "99999999999999999999999"}, None, 400, "BadRequest"),
    ("GET", "customers", {"$skip": "x"}, None, 400, "BadRequest"),
    ("GET", "customers", {"$skip": "99999999999999999999999"}, None, 400, "BadRequest"),
    ("GET", "customers(abc)", {}, None, 400, "BadRequest_NotFound"),
    ("GET", "customers", {"$filter": "(("}, None, 400, "BadRequest_NotFound"),
    ("GET", "customers", {"$filter": "1"}, None, 400, "BadRequest"),
    ("GET", "customers", {"$filter": "displayName"}, None, 400, "BadRequest"),
    ("GET", "customers", {"$expand": "nosuch"}, None, 400, "BadRequest"),
    ("GET", "customers", {"$expand": "currency("}, None, 400, "BadRequest_NotFound"),
    ("GET", "customers", {"$expand": "currency($bogus=1)"}, None, 400, "BadRequest"),
]


@pytest.mark.parametrize(("method", "path", "params", "body", "status", "code"), MALFORMED)
def test_malformed_api_requests_get_bc_errors(
    api: httpx.Client,
    company: str,
    method: str,
    path: str,
    params: dict[str, str],
    body: bytes | None,
    status: int,
    code: str,
) -> None:
    response = api.request(
        method,
        f"{company}/{path}",
        params=params,
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert_bc_error(response, status, code)


def test_huge_numbers_in_a_filter_are_compared_not_crashed(api: httpx.Client, company: str) -> None:
    response = api.get(f"{company}/customers", params={"$filter": f"creditLimit eq {2**70}"})
    assert response.status_code == 200 and response.json()["value"] == []


@pytest.mark.parametrize(
    "operation",
    [
        {"method": "GET", "url": "customers", "headers": [1]},
        {"method": "GET", "url": "customers", "headers": {"a": {"b": 1}}},
        {"method": 5, "url": "customers"},
        {"method": "GET", "url": "http://[::1"},
    ],
)
def test_malformed_batch_operations_fail_alone(api: httpx.Client, operation: Any) -> None:
    response = api.post("$batch", json={"requests": [operation]})
    assert response.status_code == 200, response.text
    (answer,) = response.json()["responses"]
    assert answer["status"] == 400 and answer["body"]["error"]["code"].startswith("BadRequest")


def test_no_traceback_in_the_log(emulator: RunningEmulator) -> None:
    assert not [line for line in emulator.log if "Traceback" in line], "\n".join(emulator.log)
