"""JSON that carries `decimal.Decimal` exactly: on the wire to BC, and in the store.

orjson cannot encode a Decimal, and a float cannot hold ``12345678901234567.12``. Two encodings:

- **wire** (`dumps`): a Decimal becomes a raw JSON number with its exact digits, in plain
  (non-exponent) notation (``12345678901234567.12``), the form BC documents for decimals
  (bc-api.md §1, "Decimals are JSON numbers"). NaN and infinities cannot be JSON numbers: they
  raise `orjson.JSONEncodeError` (a `TypeError`), as any value orjson cannot encode does.
  Reading back (`loads`) gives floats, as orjson does; `loads_exact` gives Decimals for every
  non-integer number (slower: the standard library's parser).
- **store** (`store_dumps`/`store_loads`): a Decimal becomes the string ``"\\u0000dec:<text>"``
  so that its type survives a round trip (a float stays a float, a Decimal a Decimal with the
  same digits and exponent). Text without a Decimal is exactly what orjson writes, so rows
  written before Decimals existed load unchanged and hash the same.

Both encoders first try plain orjson: a payload with no Decimal pays nothing extra. Only when
orjson refuses a value is the payload encoded again with a `default` that handles Decimals.
"""

from __future__ import annotations

import json
import re
import secrets
from decimal import Decimal
from typing import Any

import orjson

__all__ = [
    "OPT_APPEND_NEWLINE",
    "OPT_INDENT_2",
    "OPT_SORT_KEYS",
    "dumps",
    "loads",
    "loads_exact",
    "store_dumps",
    "store_loads",
]

OPT_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE
OPT_INDENT_2 = orjson.OPT_INDENT_2
OPT_SORT_KEYS = orjson.OPT_SORT_KEYS

loads = orjson.loads

# A random marker per process: no string a user sends can collide with it by accident.
_MARK = secrets.token_hex(16)
_PLACEHOLDER = re.compile(('"' + _MARK + r"([-0-9.]+)" + _MARK + '"').encode())

# The store's tag. It starts with NUL, which business text does not hold; a string that
# nevertheless starts with exactly this tag would load as a Decimal (documented limitation).
_TAG = "\x00dec:"
_TAG_IN_TEXT = b'"\\u0000dec:'
_TAG_IN_STR = _TAG_IN_TEXT.decode()


def _wire_number(value: Decimal) -> str:
    if not value.is_finite():
        raise TypeError(f"{value} is not a JSON number")
    return format(value, "f")


def _wire_default(value: Any) -> str:
    if isinstance(value, Decimal):
        return _MARK + _wire_number(value) + _MARK
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any, *, option: int = 0) -> bytes:
    """orjson's bytes, with each Decimal written as a JSON number holding its exact digits."""
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        pass  # a Decimal (or a type nobody can encode: the second attempt says which)
    encoded = orjson.dumps(value, default=_wire_default, option=option)
    return _PLACEHOLDER.sub(rb"\1", encoded)


def loads_exact(data: bytes | str) -> Any:
    """Parse JSON with every non-integer number as a Decimal holding its exact digits."""
    return json.loads(data, parse_float=Decimal)


def _store_default(value: Any) -> str:
    if isinstance(value, Decimal):
        return _TAG + str(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def store_dumps(value: Any, *, option: int = 0) -> bytes:
    """The store's JSON: Decimals tagged so that `store_loads` gives them back exactly."""
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        pass
    return orjson.dumps(value, default=_store_default, option=option)


def store_loads(data: bytes | str) -> Any:
    """Read `store_dumps` text (or any plain JSON); only text holding a tag is walked."""
    value = orjson.loads(data)
    tagged = _TAG_IN_TEXT in data if isinstance(data, bytes) else _TAG_IN_STR in data
    return _untag(value) if tagged else value


def _untag(value: Any) -> Any:
    if isinstance(value, str):
        return Decimal(value[len(_TAG) :]) if value.startswith(_TAG) else value
    if isinstance(value, dict):
        return {key: _untag(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_untag(item) for item in value]
    return value
