"""One status per BC error code: every error comes from one function in `emulator.errors`.

The codes that used to come with two statuses answer one now (bc-api.md §7): an unknown company
is 400 Internal_CompanyNotFound, a missing referenced record 404 Internal_RecordNotFound, an
unsupported bound action 501 BadRequest_MethodNotImplemented, a URL that is not an API URL 400
BadRequest_InvalidRequestUrl.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import httpx

import bcbridge.emulator
from bcbridge import catalog
from bcbridge.catalog import Field, FieldType
from bcbridge.emulator import errors
from bcbridge.emulator.errors import BCError
from tests.emulator.conftest import assert_bc_error

UNKNOWN = "00000000-0000-0000-0000-0000000000ab"


def test_an_unknown_company_is_400_by_path_by_parameter_and_by_header(api: httpx.Client) -> None:
    assert_bc_error(api.get(f"companies({UNKNOWN})/customers"), 400, "Internal_CompanyNotFound")
    assert_bc_error(api.get(f"companies({UNKNOWN})"), 400, "Internal_CompanyNotFound")
    assert_bc_error(
        api.get("customers", params={"company": "No Such Company"}),
        400,
        "Internal_CompanyNotFound",
    )
    assert_bc_error(api.get("customers"), 400, "Internal_CompanyNotFound")


def test_a_missing_record_is_404_whether_addressed_or_referenced(
    api: httpx.Client, company: str
) -> None:
    assert_bc_error(api.get(f"{company}/items({UNKNOWN})"), 404, "Internal_RecordNotFound")
    order = api.get(f"{company}/salesOrders", params={"$top": 1}).json()["value"][0]
    assert_bc_error(
        api.post(
            f"{company}/salesOrders({order['id']})/salesOrderLines",
            json={"lineType": "Item", "lineObjectNumber": "NO-SUCH-ITEM", "quantity": 1},
        ),
        404,
        "Internal_RecordNotFound",
    )


def test_what_is_not_supported_is_501(api: httpx.Client, company: str) -> None:
    invoice = api.get(f"{company}/salesInvoices", params={"$top": 1}).json()["value"][0]
    url = f"{company}/salesInvoices({invoice['id']})"
    assert_bc_error(api.post(f"{url}/Microsoft.NAV.fly"), 501, "BadRequest_MethodNotImplemented")
    order = api.get(f"{company}/salesOrders", params={"$top": 1}).json()["value"][0]
    deep = f"{company}/salesOrders({order['id']})/salesOrderLines({UNKNOWN})/item"
    assert_bc_error(api.get(deep), 501, "BadRequest_MethodNotImplemented")


def test_a_path_that_is_not_an_api_url_is_400(emulator: object, api: httpx.Client) -> None:
    root = str(api.base_url).split("/production/")[0]
    response = api.get(f"{root}/production/nothing-here")
    assert_bc_error(response, 400, "BadRequest_InvalidRequestUrl")


def _examples() -> list[BCError]:
    field = Field("code", FieldType.ENUM, max_length=3, options=("A", "B"))
    made = []
    for name, function in vars(errors).items():
        if not inspect.isfunction(function) or name.startswith("_"):
            continue
        if inspect.signature(function).return_annotation not in ("BCError", BCError):
            continue
        if name == "injected_fault":
            continue  # a test picks its status on purpose
        arguments = {
            "field": field,
            "value": "ABCD",
            "retry_after": 1.0,
            "limit": 100,
            "refusal": catalog.refusal(catalog.get("items"), "colour", "red"),
        }
        parameters = inspect.signature(function).parameters
        made.append(function(**{p: arguments.get(p, "x") for p in parameters}))
    return made


def test_each_code_has_one_status() -> None:
    statuses: dict[str, set[int]] = {}
    examples = _examples()
    assert len(examples) >= 20
    for error in examples:
        statuses.setdefault(error.code, set()).add(error.status)
    assert {code: s for code, s in statuses.items() if len(s) > 1} == {}
    assert statuses["BadRequest_MethodNotImplemented"] == {501}


def test_no_emulator_module_builds_a_bc_error_by_hand() -> None:
    root = Path(bcbridge.emulator.__file__).parent
    hand_built = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "errors.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "BCError":
                hand_built.append(f"{path.relative_to(root)}:{node.lineno}")
    assert hand_built == []
