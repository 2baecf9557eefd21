"""Exact numbers and strict dates: the converters, the wire JSON and the store's JSON."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from decimal import Decimal as _D
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bcbridge import _json
from bcbridge.errors import TransformError
from bcbridge.publisher import _same
from bcbridge.sinks import jsonl_text, open_writer
from bcbridge.store import Store, payload_hash
from bcbridge.transform import Convert

BC_DECIMAL_MAX = _D(2**96 - 1)

BIG = "12345678901234567890.123456789"


def convert(kind: str, value: Any) -> Any:
    return Convert({"price": kind}).apply({"number": "I1", "price": value}, {})["price"]


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("decimal", "10.75", Decimal("10.75")),
        ("decimal", " 0 ", Decimal("0")),
        ("decimal", BIG, Decimal(BIG)),
        ("decimal", 0.1, Decimal("0.1")),  # a float's shortest digits, not its binary expansion
        ("decimal", 7, Decimal(7)),
        ("decimal", str(BC_DECIMAL_MAX), BC_DECIMAL_MAX),
        ("decimal", "-" + str(BC_DECIMAL_MAX), BC_DECIMAL_MAX.copy_negate()),
        ("decimal", "0.0000000000000000000000000001", Decimal("1E-28")),
        ("decimal", "1.50000000000000000000000000000", Decimal("1.5")),  # trailing zeros
        ("int", "  12 ", 12),
        ("int", 12.0, 12),
        ("int", "12.0", 12),
        ("int", str(2**63 - 1), 2**63 - 1),
        ("bool", "Y", True),
        ("bool", 0, False),
        ("date", "2024-02-29", "2024-02-29"),
        ("datetime", "2024-01-31T12:00:00Z", "2024-01-31T12:00:00.000Z"),
        ("datetime", "2024-01-31 12:00", "2024-01-31T12:00:00.000Z"),
        ("datetime", "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
    ],
)
def test_converters_keep_exact_values(kind: str, value: Any, expected: Any) -> None:
    result = convert(kind, value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("decimal", "1e400", "outside BC's decimal range"),
        ("decimal", "NaN", "not a finite number"),
        ("decimal", "Infinity", "not a finite number"),
        ("decimal", "-inf", "not a finite number"),
        ("decimal", float("nan"), "not a finite number"),
        ("decimal", str(2**96), "outside BC's decimal range"),
        ("decimal", "0.00000000000000000000000000001", "more digits than BC's decimal holds"),
        ("decimal", "7.9228162514264337593543950336", "more digits than BC's decimal holds"),
        ("decimal", "12,5", "not a number"),
        ("decimal", True, "a boolean"),
        ("int", "99999999999999999999999", "outside BC's integer range"),
        ("int", str(2**63), "outside BC's integer range"),
        ("int", "1e999999999", "outside BC's integer range"),
        ("int", "1.5", "not a whole number"),
        ("int", 12.5, "not a whole number"),
        ("int", "NaN", "not a whole number"),
        ("int", "twelve", "not a whole number"),
        ("int", False, "a boolean"),
        ("bool", "maybe", "not a boolean"),
        ("bool", 2, "not a boolean"),
        ("date", "2024-01-01garbage", "not a date"),
        ("date", "2024-1-1", "not a date"),
        ("date", "2024-02-30", "day is out of range"),
        ("date", "2024-01-01T25:00:00", "hour must be in"),
        ("date", "99999-01-01", "not a date"),
        ("datetime", "2024-01-01", "not a datetime"),
        ("datetime", "2024-01-01T10:00:00garbage", "not a datetime"),
        ("datetime", "10000-01-01T00:00:00Z", "not a datetime"),
        ("datetime", "99999-01-01", "not a datetime"),
        ("datetime", "9999-12-31T23:59:59-05:00", "out of range once moved to UTC"),
    ],
)
def test_bad_values_fail_the_record_naming_the_field(kind: str, value: Any, reason: str) -> None:
    with pytest.raises(TransformError, match=reason) as info:
        convert(kind, value)
    assert (info.value.step, info.value.record, info.value.field) == (
        "convert",
        "number=I1",
        "price",
    )


# --- wire JSON -----------------------------------------------------------------------------------


def test_dumps_writes_decimals_as_exact_json_numbers() -> None:
    payload = {"a": Decimal(BIG), "b": [Decimal("1E+2"), Decimal("-0.000")], "c": 1.5, "d": "x"}
    assert _json.dumps(payload) == (
        b'{"a":12345678901234567890.123456789,"b":[100,-0.000],"c":1.5,"d":"x"}'
    )
    assert _json.loads_exact(_json.dumps(payload))["a"] == Decimal(BIG)
    assert _json.dumps({"a": Decimal("1")}, option=_json.OPT_APPEND_NEWLINE) == b'{"a":1}\n'


def test_dumps_without_decimals_is_plain_orjson() -> None:
    payload = {"number": "I1", "unitPrice": 10.75, "lines": [{"q": 1}], "blocked": False}
    assert _json.dumps(payload) == orjson.dumps(payload)
    assert _json.dumps(payload, option=_json.OPT_SORT_KEYS) == orjson.dumps(
        payload, option=orjson.OPT_SORT_KEYS
    )


def test_dumps_refuses_what_json_cannot_carry() -> None:
    for bad in (Decimal("NaN"), Decimal("Infinity"), object()):
        with pytest.raises(TypeError):
            _json.dumps({"x": bad})


def test_a_string_that_looks_like_a_number_stays_a_string() -> None:
    payload = {"text": "12.5", "price": Decimal("12.5")}
    assert orjson.loads(_json.dumps(payload)) == {"text": "12.5", "price": 12.5}


# --- store JSON ----------------------------------------------------------------------------------


def test_store_encoding_keeps_types_and_digits() -> None:
    payload = {"a": Decimal("10.750"), "b": [Decimal("1E+2"), 0.1, 3], "c": {"d": Decimal("-0")}}
    back = _json.store_loads(_json.store_dumps(payload))
    assert back == payload
    assert [str(back["a"]), str(back["b"][0]), str(back["c"]["d"])] == ["10.750", "1E+2", "-0"]
    assert type(back["b"][1]) is float
    assert _json.store_loads(_json.store_dumps(payload).decode()) == payload


def test_rows_written_before_decimals_load_and_hash_as_before() -> None:
    old_text = orjson.dumps({"number": "I1", "unitPrice": 12.5})
    assert _json.store_loads(old_text) == {"number": "I1", "unitPrice": 12.5}
    record = {"unitPrice": 12.5, "number": "I1"}
    assert (
        payload_hash(record)
        == hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )


def test_a_decimal_task_comes_back_from_the_store_exactly(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        run_id = store.start_run("load")
        payload = {"number": "I1", "unitPrice": Decimal(BIG)}
        [task] = store.register("load", run_id, [("I1", payload)])
        again = store.task(task.id)
        assert again is not None and again.payload == payload
        assert str(again.payload["unitPrice"]) == BIG
        # the same record registered again is found again (deterministic hash), not doubled
        [same] = store.register("load", run_id, [("I1", {**payload})])
        assert same.id == task.id
        different = {"number": "I1", "unitPrice": Decimal(BIG) + Decimal("1E-9")}
        [other] = store.register("load", run_id, [("I1", different)])
        assert other.id != task.id
    finally:
        store.close()


# --- properties ----------------------------------------------------------------------------------

bc_decimals = st.builds(
    lambda sign, coefficient, scale: Decimal((sign, tuple(map(int, str(coefficient))), -scale)),
    st.integers(0, 1),
    st.integers(0, 2**96 - 1),
    st.integers(0, 28),
)


@given(bc_decimals)
def test_any_bc_decimal_round_trips_exactly_on_the_wire(value: Decimal) -> None:
    text = _json.dumps({"v": value})
    back = _json.loads_exact(text)["v"]
    assert back == value
    assert convert("decimal", str(value)) == value  # and the converter accepts it


# text without NUL: a string starting with the store's tag "\x00dec:" is the documented exception
plain_text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=8
)
numbers = bc_decimals | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-9, 9)


@given(st.dictionaries(plain_text, numbers | plain_text))
def test_any_payload_round_trips_through_the_store_and_hashes_deterministically(
    payload: dict[str, Any],
) -> None:
    back = _json.store_loads(_json.store_dumps(payload))
    assert back == payload
    assert [str(v) for v in back.values()] == [str(v) for v in payload.values()]
    assert payload_hash(back) == payload_hash(payload)


@pytest.mark.parametrize(
    ("ours", "theirs", "same"),
    [
        (Decimal("0.1"), 0.1, True),  # BC's JSON 0.1 read as a float is the Decimal we sent
        (Decimal("10.750"), 10.75, True),
        (Decimal("12"), 12, True),
        (Decimal("0.1"), 0.10000000000000002, False),
        (Decimal(BIG), float(BIG), False),  # a float cannot hold it: changed, sent again
        (12, 12.0, True),
    ],
)
def test_upsert_compares_decimals_exactly(ours: Any, theirs: Any, same: bool) -> None:
    assert _same(ours, theirs) is same


def test_decimals_reach_json_lines_and_csv_files_exactly(tmp_path: Path) -> None:
    records = [{"number": "I1", "price": Decimal(BIG), "tags": [Decimal("0.1")]}]
    assert jsonl_text(records) == f'{{"number":"I1","price":{BIG},"tags":[0.1]}}\n'
    writer = open_writer(str(tmp_path / "out.csv"))
    writer.write_many(records)
    writer.close()
    assert (tmp_path / "out.csv").read_text().splitlines()[1] == f"I1,{BIG},[0.1]"
