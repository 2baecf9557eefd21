"""JSON has no NaN or infinity: orjson would write them as null, which BC stores as 0. A payload
holding one (from a `python:` step, say; `convert: decimal` already refuses them) fails its
record naming the field, and the others still land."""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from bcbridge.publisher import Outcome
from bcbridge.testing import InProcessEmulator, start_inprocess_emulator
from tests.subpub.test_sp_publisher import publish, read


@pytest.fixture(scope="module")
def emulator() -> Iterator[InProcessEmulator]:
    with start_inprocess_emulator() as running:
        yield running


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, Decimal("NaN")])
def test_a_non_finite_number_fails_its_record_and_is_never_sent_as_null(
    emulator: InProcessEmulator, bad: float | Decimal
) -> None:
    tag = f"NF{abs(hash(str(bad))) % 10000:04d}"
    records: list[dict[str, Any]] = [
        {"number": f"{tag}-1", "displayName": "fine", "unitPrice": 10.75},
        {"number": f"{tag}-2", "displayName": "not a number", "unitPrice": bad},
    ]
    results = publish(emulator, "items", "upsert", records, key_field="number")
    assert [r.outcome for r in results] == [Outcome.CREATED, Outcome.FAILED]
    assert results[1].code == "TransformError" and "unitPrice" in str(results[1].message)
    landed = read(emulator, "items", {"$filter": f"startswith(number,'{tag}')"})
    assert [(i["number"], i["unitPrice"]) for i in landed] == [(f"{tag}-1", 10.75)]


def test_a_non_finite_number_in_a_line_names_the_line(emulator: InProcessEmulator) -> None:
    order = {
        "customerNumber": "C00010",
        "externalDocumentNumber": "NF-LINE",
        "salesOrderLines": [
            {"lineObjectNumber": "I00010", "quantity": 1},
            {"lineObjectNumber": "I00010", "quantity": math.inf},
        ],
    }
    [result] = publish(
        emulator, "salesOrders", "create", [order], key_field="externalDocumentNumber"
    )
    assert result.outcome is Outcome.FAILED
    assert "salesOrderLines[1].quantity" in str(result.message)
