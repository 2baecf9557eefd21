from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from bcbridge import catalog, odata
from bcbridge.errors import ConfigError

COMPANY = "a0a0a0a0-bbbb-cccc-dddd-e1e1e1e1e1e1"
RECORD = "f2a5738a-44e3-ea11-bb43-000d3a2feca1"


def test_literals_follow_bc_filter_syntax() -> None:
    assert odata.literal("O'Brien & Co, Ltd.") == "'O''Brien & Co, Ltd.'"
    assert odata.literal(True) == "true"
    assert odata.literal(None) == "null"
    assert odata.literal(Decimal("10.50")) == "10.50"
    assert odata.literal(uuid.UUID(RECORD)) == RECORD
    assert odata.literal(date(2024, 1, 31)) == "2024-01-31"
    moment = datetime(2024, 1, 31, 13, 5, 6, 789123, tzinfo=timezone(timedelta(hours=2)))
    assert odata.literal(moment) == "2024-01-31T11:05:06.789Z"
    with pytest.raises(ConfigError):
        odata.literal(object())


def test_datetimes_round_trip_through_text() -> None:
    text = "2020-08-21T07:38:44.293Z"
    parsed = odata.parse_datetime(text)
    assert parsed.tzinfo is not None and odata.format_datetime(parsed) == text
    assert odata.parse_datetime("2020-08-21T07:38:44").tzinfo == UTC
    with pytest.raises(ConfigError, match="ISO 8601"):
        odata.parse_datetime("yesterday")


def test_keys_are_bare_guids_or_quoted_strings() -> None:
    assert odata.key_segment(catalog.get("customers"), RECORD) == f"customers({RECORD})"
    assert odata.key_segment(catalog.get("subscriptions"), "a'b") == "subscriptions('a''b')"
    assert odata.parse_key("'a''b'") == "a'b"
    assert odata.parse_key(RECORD) == RECORD
    with pytest.raises(ConfigError, match="GUID"):
        odata.key_segment(catalog.get("customers"), "10000")


def test_entity_paths_cover_sets_records_lines_and_actions() -> None:
    customers = catalog.get("customers")
    assert odata.entity_path(customers, company_id=COMPANY) == f"companies({COMPANY})/customers"
    lines = catalog.get("salesOrderLines")
    assert (
        odata.entity_path(lines, company_id=COMPANY, parent_key=RECORD)
        == f"companies({COMPANY})/salesOrders({RECORD})/salesOrderLines"
    )
    invoices = catalog.get("salesInvoices")
    assert odata.entity_path(invoices, company_id=COMPANY, key=RECORD, action="post").endswith(
        f"salesInvoices({RECORD})/Microsoft.NAV.post"
    )
    assert odata.entity_path(catalog.get("companies")) == "companies"
    with pytest.raises(ConfigError, match="valid: post"):
        odata.entity_path(invoices, company_id=COMPANY, key=RECORD, action="ship")
    with pytest.raises(ConfigError, match="company"):
        odata.entity_path(customers)
