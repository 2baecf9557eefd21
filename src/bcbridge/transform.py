"""Named transformer steps, chained in order, usable on request parameters, payloads and records.

Steps: map, rename, set, drop, keep, default, filter, convert, python. A chain is declared in
YAML (``- rename: {displayName: name}`` or ``- step: rename`` + ``fields: {...}``) or built in
code (``Chain([Rename({"displayName": "name"})])``). Steps never change their input record; a
failure names the step, the record and the field.
"""

from __future__ import annotations

import difflib
import importlib
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

import jmespath
import yaml

from bcbridge.errors import ConfigError, TransformError

__all__ = [
    "STEPS",
    "Chain",
    "Convert",
    "Default",
    "Drop",
    "Filter",
    "Keep",
    "Map",
    "Python",
    "Rename",
    "Set",
    "Step",
    "load_chain",
    "load_chain_file",
]

Record = dict[str, Any]


def _record_label(record: Mapping[str, Any], index: int | None) -> str:
    for key in ("number", "code", "id"):
        if record.get(key):
            return f"{key}={record[key]}"
    return f"#{index}" if index is not None else "?"


class Step:
    """One transformer step: `apply` takes a record and gives the new one, or None to drop it.

    `name` is the step's key in YAML (``rename``, ``convert``, ...).
    """

    name: ClassVar[str]

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record | None:
        """The record after this step; None drops it (a filter)."""
        raise NotImplementedError

    def fail(
        self, message: str, record: Mapping[str, Any], field: str | None = None
    ) -> TransformError:
        """The error to raise for `record`, naming this step, the record and the field."""
        return TransformError(
            message, step=self.name, record=_record_label(record, None), field=field
        )


@dataclass
class Map(Step):
    """target field <- JMESPath expression over the record (``{fullName: "join(' ', [a, b])"}``)."""

    fields: Mapping[str, str]
    name: ClassVar[str] = "map"
    _compiled: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for target, expression in self.fields.items():
            try:
                self._compiled[target] = jmespath.compile(expression)
            except jmespath.exceptions.ParseError as exc:
                raise ConfigError(f"map: {target}: not a JMESPath expression: {exc}") from None

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
        """The record with each target field set from its expression."""
        result = dict(record)
        for target, compiled in self._compiled.items():
            try:
                result[target] = compiled.search(record)
            except jmespath.exceptions.JMESPathError as exc:
                raise self.fail(str(exc), record, target) from None
        return result


@dataclass
class Rename(Step):
    """Rename fields: old name -> new name; other fields are kept."""

    fields: Mapping[str, str]
    name: ClassVar[str] = "rename"

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
        """The record with its fields renamed."""
        return {self.fields.get(key, key): value for key, value in record.items()}


class _Template(string.Formatter):
    """``{record.number}``, ``{cursor}``, ``{now}``: dotted names looked up in dicts; no eval."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        value: Any = kwargs
        for part in field_name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise KeyError(field_name)
            value = value[part]
        return value, field_name


_TEMPLATE = _Template()


@dataclass
class Set(Step):
    """Constants, or templates over the record and the run context (``"{record.number}-X"``)."""

    fields: Mapping[str, Any]
    name: ClassVar[str] = "set"

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
        """The record with each field set from its template."""
        result = dict(record)
        names = {**context, "record": record, "now": datetime.now(UTC).isoformat()}
        for target, value in self.fields.items():
            if isinstance(value, str) and "{" in value:
                try:
                    value = _TEMPLATE.format(value, **names)
                except (KeyError, ValueError, IndexError) as exc:
                    raise self.fail(
                        f"template {value!r} has no value for {exc}", record, target
                    ) from None
            result[target] = value
        return result


@dataclass
class Drop(Step):
    """Remove the fields listed."""

    fields: list[str]
    name: ClassVar[str] = "drop"

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
        """The record without the listed fields."""
        return {k: v for k, v in record.items() if k not in self.fields}


@dataclass
class Keep(Step):
    """Keep only the fields listed."""

    fields: list[str]
    name: ClassVar[str] = "keep"

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
        """The record with only the listed fields."""
        return {k: v for k, v in record.items() if k in self.fields}


@dataclass
class Default(Step):
    """Fill fields that are missing or null."""

    fields: Mapping[str, Any]
    name: ClassVar[str] = "default"

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
        """The record with missing or null fields filled."""
        result = dict(record)
        for target, value in self.fields.items():
            if result.get(target) is None:
                result[target] = value
        return result


@dataclass
class Filter(Step):
    """Keep records for which the JMESPath predicate is truthy; the chain counts the others."""

    expression: str
    name: ClassVar[str] = "filter"

    def __post_init__(self) -> None:
        try:
            self._compiled = jmespath.compile(self.expression)
        except jmespath.exceptions.ParseError as exc:
            raise ConfigError(f"filter: not a JMESPath expression: {exc}") from None

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record | None:
        """The record when the expression is true, else None."""
        return record if self._compiled.search(record) else None


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y"):
        return True
    if text in ("false", "0", "no", "n"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false, yes/no, y/n, 1/0)")


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# A full date and time, seconds optional, fraction optional, offset or Z optional (naive = UTC).
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}:?\d{2})?"
)


def _to_date(value: Any) -> str:
    """A full ``YYYY-MM-DD`` date, or the date part of a full valid datetime; nothing else."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    if _DATETIME.fullmatch(text):
        _parse_datetime(text)  # the time part must be valid too, not just well shaped
    elif not _DATE.fullmatch(text):
        raise ValueError(f"{value!r} is not a date such as 2024-01-31")
    return date.fromisoformat(text[:10]).isoformat()


def _parse_datetime(text: str) -> datetime:
    if not _DATETIME.fullmatch(text):
        raise ValueError(f"{text!r} is not a datetime such as 2024-01-31T12:00:00Z")
    return datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))


def _to_datetime(value: Any) -> str:
    """A full ISO 8601 datetime, written as BC writes it: UTC, milliseconds, ``Z``."""
    from bcbridge.odata import format_datetime

    moment = value if isinstance(value, datetime) else _parse_datetime(str(value).strip())
    try:
        return format_datetime(moment)
    except OverflowError:
        # 9999-12-31T23:00:00-05:00 is year 10000 in UTC: past what BC (and Python) can hold
        raise ValueError(f"{value!r} is out of range once moved to UTC") from None


# BC's Decimal is .NET's System.Decimal: a 96-bit integer scaled by 10**-0..28, so at most
# ±79,228,162,514,264,337,593,543,950,335 and 28 decimal places. bc-api.md only says "Decimals
# are JSON numbers" (§1, value formats); the .NET range is our reading of AL's Decimal type. What
# BC does with more digits than .NET holds (round, or refuse) is UNCONFIRMED, so we refuse: a
# value is sent exactly or not at all.
BC_DECIMAL_MAX = Decimal(2**96 - 1)
BC_DECIMAL_SCALE = 28
# BC's Integer is Int32, BigInteger Int64; `convert: int` does not know which the field is, so it
# allows the wider Int64 and leaves an Int32 overflow for BC to refuse on that record.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _to_decimal(value: Any) -> Decimal:
    """The exact number, as a Decimal (a float gives the digits of its shortest repr)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    if isinstance(value, float):
        value = repr(value)  # the digits the source wrote, not the binary float's expansion
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    _check_bc_decimal(value, number)
    return number


def _check_bc_decimal(value: Any, number: Decimal) -> None:
    # Decimal comparisons are exact; abs() and normalize() would round to the context's 28 digits
    if number.copy_abs() > BC_DECIMAL_MAX:
        raise ValueError(f"{value!r} is outside BC's decimal range (±{BC_DECIMAL_MAX})")
    _, digits, exponent = number.as_tuple()
    coefficient = int("".join(map(str, digits)))
    assert isinstance(exponent, int)  # finite, checked by the caller
    while coefficient and exponent < 0 and coefficient % 10 == 0:
        coefficient, exponent = coefficient // 10, exponent + 1  # 1.50 needs one place, not two
    if coefficient and (exponent < -BC_DECIMAL_SCALE or coefficient > BC_DECIMAL_MAX):
        raise ValueError(
            f"{value!r} has more digits than BC's decimal holds "
            f"({BC_DECIMAL_SCALE} decimal places, 28-29 significant digits)"
        )


def _to_int(value: Any) -> int:
    """A whole number within Int64; 12.0 and "12.0" are 12, 12.5 is an error (no truncation)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    if isinstance(value, int):
        number: int = value
    else:
        text = repr(value) if isinstance(value, float) else str(value).strip()
        try:
            exact = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a whole number") from None
        if not exact.is_finite() or exact != exact.to_integral_value():
            raise ValueError(f"{value!r} is not a whole number")
        if not INT64_MIN <= exact <= INT64_MAX:  # before int(): 1e999999999 is a huge int
            raise ValueError(f"{value!r} is outside BC's integer range (Int64)")
        number = int(exact)
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError(f"{value!r} is outside BC's integer range (Int64)")
    return number


def _to_str(value: Any) -> str:
    return "" if value is None else str(value)


CONVERTERS: Mapping[str, Callable[[Any], Any]] = {
    "str": _to_str,
    "int": _to_int,
    "decimal": _to_decimal,
    "float": _to_decimal,
    "bool": _to_bool,
    "date": _to_date,
    "datetime": _to_datetime,
}


@dataclass
class Convert(Step):
    """field -> type: str, int, decimal, bool, date, datetime (empty strings become null).

    ``decimal`` (alias ``float``) gives an exact `Decimal` that BC's decimal can hold; ``int`` a
    whole number within Int64 (12.0 is 12, 12.5 an error); ``date``/``datetime`` only full,
    valid values. Anything else fails the record, naming the field."""

    fields: Mapping[str, str]
    name: ClassVar[str] = "convert"

    def __post_init__(self) -> None:
        for target, kind in self.fields.items():
            if kind not in CONVERTERS:
                raise ConfigError(
                    f"convert: {target}: unknown type {kind!r}; valid: {', '.join(CONVERTERS)}"
                )

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
        """The record with each listed field converted to its type."""
        result = dict(record)
        for target, kind in self.fields.items():
            value = result.get(target)
            if value is None or (value == "" and kind != "str"):
                result[target] = None
                continue
            try:
                result[target] = CONVERTERS[kind](value)
            except (ValueError, TypeError) as exc:
                raise self.fail(
                    f"cannot convert {value!r} to {kind}: {exc}", record, target
                ) from None
        return result


@dataclass
class Python(Step):
    """The escape hatch: ``package.module:function`` called as ``function(record, context)``."""

    function: str
    name: ClassVar[str] = "python"

    def __post_init__(self) -> None:
        module_name, _, attribute = self.function.replace(":", ".").rpartition(".")
        try:
            self._callable = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"python: cannot load {self.function!r}: {exc}") from None

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record | None:
        """The function's answer for the record."""
        try:
            result = self._callable(dict(record), context)
        except TransformError:
            raise
        except Exception as exc:
            raise self.fail(f"{self.function} raised {type(exc).__name__}: {exc}", record) from exc
        if result is not None and not isinstance(result, dict):
            raise self.fail(f"{self.function} returned {type(result).__name__}, not a dict", record)
        return result


STEPS: Mapping[str, type[Step]] = {
    cls.name: cls for cls in (Map, Rename, Set, Drop, Keep, Default, Filter, Convert, Python)
}
_ARGUMENT = {"filter": "expression", "python": "function"}


@dataclass
class Chain:
    """Transformer steps applied in order; `counts` tallies records in, out and filtered by
    `run`. Made from YAML by `load_chain` or `load_chain_file`."""

    steps: list[Step] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0, "filtered": 0})

    def apply(self, record: Record, context: Mapping[str, Any] | None = None) -> Record | None:
        """The transformed record, or None when a filter dropped it."""
        current = record
        for step in self.steps:
            result = step.apply(current, context or {})
            if result is None:
                return None
            current = result
        return current

    def run(
        self, records: Iterable[Record], context: Mapping[str, Any] | None = None
    ) -> Iterator[Record]:
        """The transformed records, without those a filter dropped; a `TransformError` names
        the record by its position when the step could not."""
        for index, record in enumerate(records):
            self.counts["in"] += 1
            try:
                result = self.apply(record, context)
            except TransformError as exc:
                if exc.record not in (None, "?"):
                    raise
                raise TransformError(
                    exc.message, step=exc.step, record=f"#{index}", field=exc.field
                ) from exc.__cause__
            if result is None:
                self.counts["filtered"] += 1
                continue
            self.counts["out"] += 1
            yield result


def _step_from(spec: Any, position: int) -> Step:
    where = f"transform[{position}]"
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"expected a mapping such as {{rename: {{a: b}}}}, got {spec!r}", field=where
        )
    if "step" in spec:
        name, argument = str(spec["step"]), {k: v for k, v in spec.items() if k != "step"}
    elif len(spec) == 1:
        name, value = next(iter(spec.items()))
        argument = {_ARGUMENT.get(str(name), "fields"): value}
    else:
        raise ConfigError("a step is one key (its name) or has a 'step' key", field=where)
    cls = STEPS.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, STEPS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            f"unknown step {name!r}{hint}; valid steps: {', '.join(STEPS)}", field=f"{where}.step"
        )
    try:
        return cls(**argument)
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}", field=where) from None


def load_chain(specs: Iterable[Any] | None) -> Chain:
    """A chain from the parsed YAML list of steps (``[{rename: {a: b}}, {filter: "x > 1"}]``);
    a step that is not valid is a `ConfigError` naming ``transform[i]``."""
    return Chain([_step_from(spec, i) for i, spec in enumerate(specs or [])])


def load_chain_file(path: Path) -> Chain:
    """A YAML file holding a list of steps, or a mapping with a ``transform:`` list."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read transformers: {exc}", source=str(path)) from None
    if isinstance(data, Mapping):
        data = data.get("transform", [])
    if not isinstance(data, list):
        raise ConfigError("expected a list of steps or a 'transform:' list", source=str(path))
    try:
        return load_chain(data)
    except ConfigError as exc:
        raise ConfigError(str(exc), source=str(path)) from None
