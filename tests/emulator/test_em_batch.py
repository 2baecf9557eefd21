"""JSON $batch (bc-api.md §6)."""

from __future__ import annotations

import httpx

from tests.emulator.conftest import assert_bc_error


def _ops(company: str, names: list[object]) -> list[dict[str, object]]:
    return [
        {
            "id": str(i),
            "method": "POST",
            "url": f"{company}/itemCategories",
            "headers": {"Content-Type": "application/json"},
            "body": {"code": name},
        }
        for i, name in enumerate(names)
    ]


def _codes(api: httpx.Client, company: str) -> set[str]:
    return {r["code"] for r in api.get(f"{company}/itemCategories").json()["value"]}


def test_stops_at_first_failure_by_default(api: httpx.Client, company: str) -> None:
    body = api.post("$batch", json={"requests": _ops(company, ["B1", 5, "B2"])}).json()
    assert [r["status"] for r in body["responses"]] == [201, 400]
    assert body["responses"][1]["body"]["error"]["code"] == "BadRequest"
    assert "B1" in _codes(api, company) and "B2" not in _codes(api, company)


def test_continue_on_error_runs_everything(api: httpx.Client, company: str) -> None:
    response = api.post(
        "$batch",
        json={"requests": _ops(company, ["B3", 5, "B4"])},
        headers={"Prefer": "odata.continue-on-error"},
    )
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["responses"]] == [201, 400, 201]
    assert {"B3", "B4"} <= _codes(api, company)


def test_snapshot_isolation_rolls_back_everything(api: httpx.Client, company: str) -> None:
    api.post(
        "$batch", json={"requests": _ops(company, ["B5", 5])}, headers={"Isolation": "snapshot"}
    )
    assert "B5" not in _codes(api, company)


def test_company_header_and_a_limit_of_100(api: httpx.Client, emulator) -> None:  # type: ignore[no-untyped-def]
    name = emulator.info.companies[1]["name"]
    op = {"id": "1", "method": "GET", "url": "customers?$top=1", "headers": {"Company": name}}
    body = api.post("$batch", json={"requests": [op]}).json()
    assert body["responses"][0]["status"] == 200
    too_many = api.post("$batch", json={"requests": [op] * 101})
    assert "A maximum number of '100'" in assert_bc_error(too_many, 400, "Unknown")
    assert_bc_error(
        api.post("$batch", content=b"--x", headers={"Content-Type": "multipart/mixed"}),
        501,
        "BadRequest_MethodNotImplemented",
    )
