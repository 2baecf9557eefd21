"""OData details clients trip on: an unknown field in `$filter` is named as it was written, and
every API answer says it is OData 4.0 and carries its correlation id."""

from __future__ import annotations

import httpx

from tests.emulator.conftest import assert_bc_error


def test_an_unknown_filter_field_is_named(api: httpx.Client, company: str) -> None:
    answer = api.get(f"{company}/customers", params={"$filter": "nosuchfield eq 1"})
    message = assert_bc_error(answer, 400, "BadRequest")
    assert "Could not find a property named 'nosuchfield' on type 'Microsoft.NAV.customer'" in (
        message
    )


def test_every_answer_is_odata_4_with_a_request_id(api: httpx.Client, company: str) -> None:
    for answer in (
        api.get(f"{company}/customers", params={"$top": 1}),
        api.get(f"{company}/nosuchset"),
        api.get("$metadata"),
    ):
        assert answer.headers["odata-version"] == "4.0", answer.url
        assert answer.headers["request-id"], answer.url
