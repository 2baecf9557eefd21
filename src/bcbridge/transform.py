"""Named transformer steps, chained in order, usable on request parameters, payloads and records.

Steps: map, rename, set, drop, keep, default, filter, convert, python. A chain is declared in
YAML (``- rename: {displayName: name}`` or ``- step: rename`` + ``fields: {...}``) or built in
code (``Chain([Rename({"displayName": "name"})])``). Steps never change their input record; a
failure names the step, the record and the field.
"""

from __future__ import annotations

import difflib
import importlib
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
    name: ClassVar[str]

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record | None:
        raise NotImplementedError

    def fail(
        self, message: str, record: Mapping[str, Any], field: str | None = None
    ) -> TransformError:
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
        result = dict(record)
        for target, compiled in self._compiled.items():
            try:
                result[target] = compiled.search(record)
            except jmespath.exceptions.JMESPathError as exc:
                raise self.fail(str(exc), record, target) from None
        return result


@dataclass
class Rename(Step):
    fields: Mapping[str, str]
    name: ClassVar[str] = "rename"

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
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
    fields: list[str]
    name: ClassVar[str] = "drop"

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
        return {k: v for k, v in record.items() if k not in self.fields}


@dataclass
class Keep(Step):
    fields: list[str]
    name: ClassVar[str] = "keep"

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
        return {k: v for k, v in record.items() if k in self.fields}


@dataclass
class Default(Step):
    """Fill fields that are missing or null."""

    fields: Mapping[str, Any]
    name: ClassVar[str] = "default"

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
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
        return record if self._compiled.search(record) else None


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y"):
        return True
    if text in ("false", "0", "no", "n", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _to_date(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return date.fromisoformat(str(value).strip()[:10]).isoformat()


def _to_datetime(value: Any) -> str:
    from bcbridge.odata import format_datetime, parse_datetime

    if isinstance(value, datetime):
        return format_datetime(value)
    return format_datetime(parse_datetime(str(value).strip()))


def _to_decimal(value: Any) -> float:
    # BC decimals travel as JSON numbers; Decimal parses exactly, float is what JSON carries.
    try:
        return float(Decimal(str(value).strip()))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None


CONVERTERS: Mapping[str, Callable[[Any], Any]] = {
    "str": lambda v: "" if v is None else str(v),
    "int": lambda v: int(str(v).strip()) if not isinstance(v, int) else v,
    "decimal": _to_decimal,
    "float": _to_decimal,
    "bool": _to_bool,
    "date": _to_date,
    "datetime": _to_datetime,
}


@dataclass
class Convert(Step):
    """field -> type: str, int, decimal, bool, date, datetime (empty strings become null)."""

    fields: Mapping[str, str]
    name: ClassVar[str] = "convert"

    def __post_init__(self) -> None:
        for target, kind in self.fields.items():
            if kind not in CONVERTERS:
                raise ConfigError(
                    f"convert: {target}: unknown type {kind!r}; valid: {', '.join(CONVERTERS)}"
                )

    def apply(self, record: Record, context: Mapping[str, Any]) -> Record:
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
