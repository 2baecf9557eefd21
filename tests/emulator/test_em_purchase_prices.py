"""Purchase documents name their price as BC does: order lines directUnitCost, invoice lines
unitCost; receiveAndInvoice carries the price from one to the other."""

from __future__ import annotations

import httpx


def test_receive_and_invoice_carries_the_price(api: httpx.Client, company: str) -> None:
    vendor = api.get(f"{company}/vendors", params={"$top": 1}).json()["value"][0]
    item = api.get(f"{company}/items", params={"$top": 1}).json()["value"][0]
    order = api.post(
        f"{company}/purchaseOrders",
        json={
            "vendorNumber": vendor["number"],
            "purchaseOrderLines": [
                {"lineObjectNumber": item["number"], "quantity": 3, "directUnitCost": 12.5}
            ],
        },
    )
    assert order.status_code == 201, order.text
    order_id = order.json()["id"]
    assert order.json()["totalAmountExcludingTax"] == 37.5
    done = api.post(f"{company}/purchaseOrders({order_id})/Microsoft.NAV.receiveAndInvoice")
    assert done.status_code == 204, done.text
    (invoice,) = api.get(
        f"{company}/purchaseInvoices", params={"$filter": f"orderId eq {order_id}"}
    ).json()["value"]
    assert invoice["totalAmountExcludingTax"] == 37.5
    (line,) = api.get(f"{company}/purchaseInvoices({invoice['id']})/purchaseInvoiceLines").json()[
        "value"
    ]
    assert line["unitCost"] == 12.5 and "directUnitCost" not in line


def test_an_invoice_line_is_priced_by_unit_cost(api: httpx.Client, company: str) -> None:
    vendor = api.get(f"{company}/vendors", params={"$top": 1}).json()["value"][0]
    invoice = api.post(
        f"{company}/purchaseInvoices",
        json={
            "vendorNumber": vendor["number"],
            "purchaseInvoiceLines": [{"lineType": "Account", "quantity": 2, "unitCost": 4}],
        },
    )
    assert invoice.status_code == 201, invoice.text
    assert invoice.json()["totalAmountExcludingTax"] == 8
