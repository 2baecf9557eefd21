"""OData query options for one entity set: $filter, $orderby, $select, $top/$skip, keyset paging.

`$filter` is parsed by the odata-query library; before its SQLAlchemy visitor runs, the tree is
checked for what BC refuses (``or`` across distinct fields, bc-api.md §4.1) and literals are put
in the stored spelling (lower-case GUIDs, ``...Z`` datetimes).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from odata_query import ast as odata_ast
from odata_query import exceptions as odata_errors
from odata_query.grammar import ODataLexer, ODataParser
from odata_query.sqlalchemy.core import AstToSqlAlchemyCoreVisitor

from bcbridge.catalog import EntitySet, FieldType
from bcbridge.emulator.errors import bad_request, not_emulated, query_syntax
from bcbridge.emulator.store import fields_of
from bcbridge.odata import format_datetime, parse_datetime

MAX_PAGE_SIZE = 20_000
MAX_INT64 = 2**63 - 1  # OData reads $top, $skip and integer literals as Edm.Int64
BOOLEAN_FUNCTIONS = {"startswith", "endswith", "contains"}
_DIGITS = re.compile(r"^[0-9]+$")  # ASCII only: str.isdigit() accepts '²', which int() refuses
ALLOWED_FUNCTIONS = {"startswith", "endswith", "contains", "tolower", "toupper", "substring"}
UNSUPPORTED_OPTIONS = ("$apply", "$search", "$compute", "$deltatoken")

# --- $schemaversion (bc-api.md §4.1, §4.2) -----------------------------------------------------
# BC's standard APIs run with schema 2.0 features; ``$schemaversion=2.1`` turns on the ``in``
# operator and nested function calls such as ``contains(tolower(x),'a')``. Without it the docs
# say nested calls "error or give undefined results": which one is UNCONFIRMED, so the emulator
# refuses both by default and the emulator setting ``schemaversion_gates`` lifts either gate
# ("in", "nested"). The schema versions BC knows besides 2.0 and 2.1 (1.0, for custom APIs
# before v24) come from the same notes; that BC refuses any other value is UNCONFIRMED.
SCHEMA_GATES = ("in", "nested")
SCHEMA_VERSIONS = ("1.0", "2.0", "2.1")
SCHEMA_21 = "2.1"


def gates_in_force(options: Mapping[str, str], gated: frozenset[str]) -> frozenset[str]:
    """The features of `gated` that stay refused for a request with these query options."""
    version = options.get("$schemaversion")
    if version is None:
        return gated
    if version.strip() not in SCHEMA_VERSIONS:
        raise bad_request(
            f"The query option $schemaversion must be one of {', '.join(SCHEMA_VERSIONS)}, "
            f"got {version!r}."
        )
    return frozenset() if version.strip() == SCHEMA_21 else gated


def _refuse_gated(node: Any, gates: frozenset[str]) -> None:
    """BC's answer to ``in`` or a nested call without ``$schemaversion=2.1``. BC's wording is
    UNCONFIRMED (bc-api.md has none); this one names the option that turns the feature on."""
    is_in = isinstance(node, odata_ast.Compare) and isinstance(node.comparator, odata_ast.In)
    if "in" in gates and is_in:
        raise bad_request(
            "The 'in' operator in $filter needs $schemaversion=2.1 (add it to the URL)."
        )
    is_call = isinstance(node, odata_ast.Call)
    if "nested" in gates and is_call and any(isinstance(a, odata_ast.Call) for a in node.args):
        raise bad_request(
            f"The nested function call in '{node.func.name}(...)' in $filter needs "
            "$schemaversion=2.1 (add it to the URL)."
        )


# --- $filter --------------------------------------------------------------------------------


def _fields_in(node: Any) -> set[str]:
    if isinstance(node, odata_ast.Identifier):
        return {node.name}
    found: set[str] = set()
    for key, value in getattr(node, "__dict__", {}).items():
        if isinstance(node, odata_ast.Call) and key == "func":
            continue  # the function's name is not a field
        children = value if isinstance(value, list | tuple) else [value]
        for child in children:
            if isinstance(child, odata_ast._Node):
                found |= _fields_in(child)
    return found


def _check_and_normalize(
    node: Any, gates: frozenset[str] = frozenset(), *, in_or: bool = False
) -> Any:
    """Refuse what BC refuses (`gates`: what needs $schemaversion=2.1 and was not given it);
    rewrite literals to the stored text form. `in_or`: `node` is below an ``or`` whose fields
    were checked already (they include this node's), so the check is not run again: a lookup's
    chain of 40 ``or``s would otherwise walk its subtrees 40 times."""
    _refuse_gated(node, gates)
    is_or = isinstance(node, odata_ast.BoolOp) and isinstance(node.op, odata_ast.Or)
    if is_or and not in_or and len(_fields_in(node.left) | _fields_in(node.right)) > 1:
        raise bad_request(
            "The 'OR' operator is not supported on distinct fields on an OData filter."
        )
    if isinstance(node, odata_ast.Call):
        name = node.func.name.lower()
        if name not in ALLOWED_FUNCTIONS:
            raise not_emulated(
                f"The function '{name}' is not supported in $filter by Business Central "
                "or by the emulator."
            )
    if isinstance(node, odata_ast.CollectionLambda):
        raise not_emulated("Lambda operators are not emulated.")
    if isinstance(node, odata_ast.GUID):
        return odata_ast.String(node.val.lower())
    if isinstance(node, odata_ast.DateTime):
        return odata_ast.String(format_datetime(parse_datetime(node.val)))
    if isinstance(node, odata_ast.Date):
        return odata_ast.String(node.val)
    if isinstance(node, odata_ast.Integer) and abs(int(node.val)) > MAX_INT64:
        return odata_ast.Float(node.val)  # beyond SQLite's integers; compared as a number
    in_or = in_or or is_or
    for key, value in list(getattr(node, "__dict__", {}).items()):
        if isinstance(value, odata_ast._Node):
            object.__setattr__(node, key, _check_and_normalize(value, gates, in_or=in_or))
        elif isinstance(value, list):
            object.__setattr__(
                node,
                key,
                [
                    _check_and_normalize(v, gates, in_or=in_or)
                    if isinstance(v, odata_ast._Node)
                    else v
                    for v in value
                ],
            )
    return node


def _is_boolean(node: Any, entity_set: EntitySet) -> bool:
    """Whether `node` is a condition (a comparison, and/or/not, a bool property or function)."""
    if isinstance(node, odata_ast.Compare | odata_ast.Boolean):
        return True
    if isinstance(node, odata_ast.BoolOp):
        return _is_boolean(node.left, entity_set) and _is_boolean(node.right, entity_set)
    if isinstance(node, odata_ast.UnaryOp):
        return isinstance(node.op, odata_ast.Not) and _is_boolean(node.operand, entity_set)
    if isinstance(node, odata_ast.Call):
        return node.func.name.lower() in BOOLEAN_FUNCTIONS
    if isinstance(node, odata_ast.Identifier):
        kinds = {f.name: f.type for f in fields_of(entity_set)}
        return kinds.get(node.name) is FieldType.BOOL
    return isinstance(node, odata_ast.CollectionLambda)  # refused later as not emulated


# ``x in ('a')``: a one-value list, valid OData that odata-query's grammar reads as a
# parenthesised value and refuses; it is read as ``x in ('a','a')``, which means the same.
_ONE_VALUE_IN = re.compile(r"(\sin\s*\(\s*)('(?:[^']|'')*'|[^,()'\s]+)(\s*\))")


def _parse_filter(text: str) -> Any:
    try:
        return ODataParser().parse(ODataLexer().tokenize(text))
    except odata_errors.ODataException as exc:
        error = exc
    doubled = _ONE_VALUE_IN.sub(r"\1\2,\2\3", text)
    if doubled != text:
        try:
            return ODataParser().parse(ODataLexer().tokenize(doubled))
        except odata_errors.ODataException:
            pass
    raise query_syntax(f"Bad Request - Error in query syntax. {error}") from error


def filter_clause(
    table: sa.Table, entity_set: EntitySet, text: str, gates: frozenset[str] = frozenset()
) -> Any:
    """The SQL condition of a $filter; `gates`: features refused for want of
    $schemaversion=2.1 (`gates_in_force`)."""
    tree = _parse_filter(text)
    if not _is_boolean(tree, entity_set):
        # ODL's wording, which BC passes on (UNCONFIRMED for BC)
        raise bad_request("The $filter expression must evaluate to a single boolean value.")
    tree = _check_and_normalize(tree, gates)
    try:
        return AstToSqlAlchemyCoreVisitor(table).visit(tree)  # type: ignore[arg-type]
    except odata_errors.InvalidFieldException as exc:
        raise bad_request(
            f"Could not find a property named '{exc.field_name}' on type "
            f"'Microsoft.NAV.{entity_set.entity}'."
        ) from exc
    except (odata_errors.ODataException, NotImplementedError, TypeError) as exc:
        raise bad_request(f"The filter '{text}' is not valid: {exc}") from exc


# --- $orderby, $select ------------------------------------------------------------------------


def order_keys(entity_set: EntitySet, text: str | None) -> list[tuple[str, bool]]:
    """[(field, descending)] with `_seq` appended as the tie-breaker that makes paging stable."""
    known = {f.name for f in fields_of(entity_set)}
    keys: list[tuple[str, bool]] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, direction = part.partition(" ")
        direction = direction.strip().lower()
        if name not in known:
            raise bad_request(
                f"Could not find a property named '{name}' on type "
                f"'Microsoft.NAV.{entity_set.entity}'."
            )
        if direction not in ("", "asc", "desc"):
            raise bad_request(f"Invalid $orderby direction {direction!r}; use asc or desc.")
        keys.append((name, direction == "desc"))
    keys.append(("_seq", False))
    return keys


def select_names(entity_set: EntitySet, text: str | None) -> list[str]:
    names = [f.name for f in fields_of(entity_set)]
    if not text:
        return names
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise bad_request(
            f"Could not find a property named '{unknown[0]}' on type "
            f"'Microsoft.NAV.{entity_set.entity}'."
        )
    return chosen


# --- $expand ---------------------------------------------------------------------------------


@dataclass
class Expand:
    name: str
    options: dict[str, str] = field(default_factory=dict)


def split_top_level(text: str, separator: str) -> list[str]:
    """`text` split at each `separator` outside parentheses, parts stripped; a blank last part
    is dropped. Split with str.split and glued back where a cut fell inside parentheses (the
    text before it has more '(' than ')'): every request's path goes through here."""
    pieces = text.split(separator)
    parts: list[str] = []
    current = pieces[0]
    for piece in pieces[1:]:
        if current.count("(") == current.count(")"):
            parts.append(current.strip())
            current = piece
        else:
            current += separator + piece
    if current.strip():
        parts.append(current.strip())
    return parts


_EXPAND_ITEM = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?:\((?P<options>.*)\))?$", re.DOTALL)
EXPAND_OPTIONS = {"$select", "$expand", "$filter"}
QUERY_OPTIONS = {"$top", "$skip", "$orderby", "$count", "$levels", "$search", "$compute", "$apply"}


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def parse_expand(text: str | None) -> list[Expand]:
    """``lines($select=a;$expand=item),customer`` -> [Expand(lines, {...}), Expand(customer)]."""
    if text is not None and not _balanced(text):
        raise query_syntax(
            f"Bad Request - Error in query syntax: unbalanced parentheses in $expand={text}"
        )
    expands = []
    for item in split_top_level(text or "", ","):
        match = _EXPAND_ITEM.match(item)
        if not match:
            raise query_syntax(f"Bad Request - Error in query syntax: '{item}' in $expand.")
        options = {}
        for option in split_top_level(match["options"] or "", ";"):
            key, _, value = option.partition("=")
            key = key.strip()
            if key in QUERY_OPTIONS:
                raise not_emulated(f"The emulator does not apply {key} inside $expand.")
            if key not in EXPAND_OPTIONS:
                raise bad_request(f"The query option '{key}' is not valid inside $expand.")
            options[key] = value.strip()
        expands.append(Expand(match["name"], options))
    return expands


# --- paging ----------------------------------------------------------------------------------


@dataclass
class PagePosition:
    """Where the next page starts: the last row's ordering values, and rows delivered so far."""

    after: list[Any]
    delivered: int
    size: int = 0  # the page size of the first page, kept when Prefer is not sent again

    def encode(self) -> str:
        raw = orjson.dumps({"a": self.after, "d": self.delivered, "p": self.size})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PagePosition:
        try:
            data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return cls(list(data["a"]), int(data["d"]), int(data.get("p", 0)))
        except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise bad_request("The $skiptoken is not valid.") from None


def keyset_clause(table: sa.Table, keys: list[tuple[str, bool]], after: list[Any]) -> Any:
    """Rows strictly after `after` in the order given by `keys` (a chain of OR-ed prefixes)."""
    if len(after) != len(keys):
        raise bad_request("The $skiptoken does not match the query's $orderby.")
    alternatives = []
    for index, (name, descending) in enumerate(keys):
        equal_prefix = [table.c[keys[i][0]] == after[i] for i in range(index)]
        column = table.c[name]
        beyond = column < after[index] if descending else column > after[index]
        alternatives.append(sa.and_(*equal_prefix, beyond))
    return sa.or_(*alternatives)


def order_by(table: sa.Table, keys: list[tuple[str, bool]]) -> list[Any]:
    return [table.c[name].desc() if desc else table.c[name].asc() for name, desc in keys]


def page_size(prefer: str | None) -> tuple[int, bool]:
    """min(Prefer: odata.maxpagesize, 20000), and whether the preference was honoured."""
    for part in (prefer or "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "odata.maxpagesize" and _DIGITS.match(value.strip()):
            return max(1, min(int(value), MAX_PAGE_SIZE)), True
    return MAX_PAGE_SIZE, False


def whole_number(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not _DIGITS.match(text.strip()) or int(text) > MAX_INT64:
        raise bad_request(f"The query option {name} must be a non-negative integer, got {text!r}.")
    return int(text)
