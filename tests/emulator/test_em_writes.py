"""Writes, validation, ETags, deep insert, totals and bound actions (bc-api.md §5)."""

from __future__ import annotations

import httpx

from tests.emulator.conftest import assert_bc_error


def test_create_assigns_id_number_and_defaults(api: httpx.Client, company: str) -> None:
    created = api.post(f"{company}/customers", json={"displayName": "New customer"})
    assert created.status_code == 201
    body = created.json()
    assert body["number"].startswith("C") and len(body["id"]) == 36
    assert body["blocked"] == " " and body["currencyId"] == "00000000-0000-0000-0000-000000000000"
    assert body["@odata.context"].endswith("/customers/$entity")
    quiet = api.post(
        f"{company}/items", json={"displayName": "x"}, headers={"Prefer": "return-no-content"}
    )
    assert quiet.status_code == 204


def test_validation_errors_use_bc_codes(api: httpx.Client, company: str) -> None:
    assert_bc_error(api.post(f"{company}/customers", json={"nope": 1}), 400, "BadRequest")
    assert_bc_error(
        api.post(f"{company}/customers", json={"creditLimit": "lots"}), 400, "BadRequest"
    )
    assert_bc_error(
        api.post(f"{company}/customers", json={"balanceDue": 5}), 400, "BadRequest_InvalidOperation"
    )
    assert_bc_error(
        api.post(f"{company}/customers", json={"blocked": "Maybe"}),
        400,
        "Application_EvaluateException",
    )
    message = assert_bc_error(
        api.post(f"{company}/salesOrders", json={}), 400, "Application_DialogException"
    )
    assert 'A "customerNumber" or a "customerId" must be provided.' in message
    assert_bc_error(
        api.post(f"{company}/salesOrders", json={"customerNumber": "NOPE"}),
        404,  # one status per code: errors.record_not_found (bc-api.md §7)
        "Internal_RecordNotFound",
    )
    assert_bc_error(
        api.post(f"{company}/accounts", json={"displayName": "x"}),
        405,
        "BadRequest_MethodNotAllowed",
    )
    assert_bc_error(api.post("companies", json={}), 405, "BadRequest_MethodNotAllowed")


def test_patch_needs_a_current_etag(api: httpx.Client, company: str) -> None:
    record = api.post(f"{company}/vendors", json={"displayName": "Etag test"}).json()
    url = f"{company}/vendors({record['id']})"
    assert_bc_error(api.patch(url, json={"city": "Oslo"}), 400, "BadRequest_InvalidToken")
    updated = api.patch(url, json={"city": "Oslo"}, headers={"If-Match": record["@odata.etag"]})
    assert updated.status_code == 200 and updated.json()["city"] == "Oslo"
    assert updated.json()["@odata.etag"] != record["@odata.etag"]
    assert updated.json()["lastModifiedDateTime"] >= record["lastModifiedDateTime"]
    stale = api.patch(url, json={"city": "Bergen"}, headers={"If-Match": record["@odata.etag"]})
    assert_bc_error(stale, 409, "Request_EntityChanged")
    forced = api.patch(url, json={"city": "Bergen"}, headers={"If-Match": "*"})
    assert forced.json()["city"] == "Bergen"
    assert api.delete(url, headers={"If-Match": record["@odata.etag"]}).status_code == 409
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404


def test_deep_insert_computes_lines_and_totals(api: httpx.Client, company: str) -> None:
    item = api.get(f"{company}/items", params={"$top": 1}).json()["value"][0]
    invoice = api.post(
        f"{company}/salesInvoices",
        json={
            "customerNumber": "C00010",
            "salesInvoiceLines": [
                {"lineObjectNumber": item["number"], "quantity": 2},
                {"itemId": item["id"], "quantity": 1, "unitPrice": 10},
            ],
        },
    ).json()
    assert invoice["status"] == "Draft" and invoice["customerId"]
    expected = round(2 * item["unitPrice"] + 10, 2)
    assert invoice["totalAmountExcludingTax"] == expected
    assert invoice["totalAmountIncludingTax"] == round(expected + invoice["totalTaxAmount"], 2)
    lines_url = f"{company}/salesInvoices({invoice['id']})/salesInvoiceLines"
    lines = api.get(lines_url).json()["value"]
    assert [line["sequence"] for line in lines] == [10000, 20000]
    api.post(lines_url, json={"itemId": item["id"], "quantity": 1, "unitPrice": 5})
    header = api.get(f"{company}/salesInvoices({invoice['id']})").json()
    assert header["totalAmountExcludingTax"] == round(expected + 5, 2)
    bad = api.post(
        f"{company}/salesInvoices",
        json={"customerNumber": "C00010", "salesInvoiceLines": [{"quantity": "x"}]},
    )
    assert bad.status_code == 400
    after = api.get(f"{company}/salesInvoices", params={"$count": "true", "$top": 0}).json()
    before_bad = api.get(f"{company}/salesInvoices", params={"$count": "true", "$top": 0}).json()
    assert after["@odata.count"] == before_bad["@odata.count"]  # nothing half-inserted


def test_bound_actions_change_state(api: httpx.Client, company: str) -> None:
    invoice = api.post(
        f"{company}/salesInvoices",
        json={
            "customerNumber": "C00011",
            "salesInvoiceLines": [{"lineObjectNumber": "I00010", "quantity": 1}],
        },
    ).json()
    url = f"{company}/salesInvoices({invoice['id']})"
    assert api.post(f"{url}/Microsoft.NAV.post").status_code == 204
    posted = api.get(url).json()
    assert (
        posted["status"] == "Open"
        and posted["remainingAmount"] == posted["totalAmountIncludingTax"]
    )
    assert_bc_error(api.post(f"{url}/Microsoft.NAV.post"), 400, "Application_DialogException")
    assert_bc_error(api.post(f"{url}/Microsoft.NAV.fly"), 501, "BadRequest_MethodNotImplemented")

    order = api.post(
        f"{company}/salesOrders",
        json={
            "customerNumber": "C00012",
            "salesOrderLines": [{"lineObjectNumber": "I00011", "quantity": 4}],
        },
    ).json()
    assert (
        api.post(f"{company}/salesOrders({order['id']})/Microsoft.NAV.shipAndInvoice").status_code
        == 204
    )
    assert api.get(f"{company}/salesOrders({order['id']})").status_code == 404
    made = api.get(
        f"{company}/salesInvoices", params={"$filter": f"orderId eq {order['id']}"}
    ).json()["value"]
    assert len(made) == 1 and made[0]["status"] == "Open"
    assert made[0]["totalAmountExcludingTax"] == order["totalAmountExcludingTax"]


def test_custom_api_entities_registered_at_run_time(emulator, api: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    emulator.register_entity(
        publisher="contoso",
        group="fleet",
        version="v1.0",
        name="cars",
        entity="car",
        fields="id:guid:ro code displayName price:decimal lastModifiedDateTime:datetime:ro",
    )
    root = api.base_url.join("../contoso/fleet/v1.0/")
    company_id = emulator.info.company_id()
    created = api.post(
        root.join(f"companies({company_id})/cars"), json={"code": "C1", "price": 3.5}
    )
    assert created.status_code == 201, created.text
    listed = api.get(root.join(f"companies({company_id})/cars"), params={"$filter": "price gt 3"})
    assert [car["code"] for car in listed.json()["value"]] == ["C1"]
