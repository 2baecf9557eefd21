"""Seeded data for every entity set `seed.py` does not write out by hand.

Values are generic but typed: each property gets a value of its EDM type (an enum member, a date,
a number...) within BC's maximum length, the same for the same seed. Records that BC links are
linked: a property that holds another record's id (by a navigation property of BC's $metadata,
or by its name: ``customerId`` -> ``customers``) holds the id of a seeded record, and the
number, code and name beside it are copied from that record; a record keyed by a customer
(``agedAccountsReceivables``) exists once per customer; a dimension value and its dimension
belong together; a line belongs to a seeded document.

Sets that already have rows when this runs (seeded by hand) are left alone, and so are the sets
posting the seeded documents fills (`posting.OWNED_SETS`), so
ledger entries, balances and payments made by the document life cycles are not mixed with
generic ones. Stream content (attachments, pictures, pdfDocument) stays empty.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bcbridge import catalog
from bcbridge.catalog import EntitySet, Field, FieldType, Navigation, Scope
from bcbridge.emulator import posting
from bcbridge.emulator.routing import ROOT_COMPANY
from bcbridge.emulator.store import BLANK_GUID, blank

DEFAULT_COUNT = 5  # rows of a set that is neither keyed by another record nor a singleton
SINGLETONS = frozenset({"companyInformation", "generalLedgerSetup"})  # one per company in BC
# Sets served by other code than a table (subscriptions: bcbridge.emulator.webhooks).
NOT_STORED = frozenset({"subscriptions"})
# documents(..)/pdfDocument finds the PDF by the document's id (catalog._reference_navigations)
ID_OF_PARENT = frozenset({"pdfDocument"})
# What a stream's metadata says about its content; there is no content (em-streams' part).
CONTENT_FACTS = frozenset({"contentType", "width", "height", "byteSize"})
BASE = datetime(2025, 1, 1, tzinfo=UTC)
CITIES = (("Atlanta", "GA", "31772"), ("Chicago", "IL", "61236"), ("Seattle", "WA", "98101"))
Row = dict[str, Any]
Pools = dict[str, list[Row]]


class Seeder(Protocol):
    """What this module needs of `bcbridge.emulator.seed`'s seeder (one company's rows)."""

    rng: random.Random
    company_index: int
    rows: Pools

    def uid(self) -> str: ...
    def add(self, set_name: str, values: dict[str, Any]) -> dict[str, Any]: ...
    def series(self, set_name: str, count: int) -> list[str]: ...


def seed_every_set(s: Seeder, counts: Mapping[str, int]) -> None:
    """Rows for every stored set that has none yet in this company (and, for the first
    company, in the sets BC serves at the API root), but those posting fills."""
    pending = [
        entity_set
        for entity_set in catalog.CATALOG.values()
        if entity_set.derived
        and entity_set.name not in NOT_STORED
        and entity_set.name not in posting.OWNED_SETS
        and not s.rows.get(entity_set.name)
        and (entity_set.scope is Scope.COMPANY or s.company_index == 0)
    ]
    for entity_set in _in_link_order(pending):
        _seed_set(s, entity_set, counts)
    _agree_on_balances(s, {entity_set.name for entity_set in pending})


def _agree_on_balances(s: Seeder, seeded_here: set[str]) -> None:
    """What a customer owes is the sum of its open invoices, everywhere BC shows it: the
    customer's balanceDue, its aged receivable (all current: the seeded invoices are not
    overdue), its financial details and its sales. Nothing is owed to vendors (the seeded
    purchase invoices are drafts), so their aged payables and purchases are zero."""
    owed: dict[str, float] = {}
    sold: dict[str, float] = {}
    for invoice in s.rows.get("salesInvoices", []):
        if invoice.get("status") == "Open":
            buyer = str(invoice["customerId"])
            owed[buyer] = owed.get(buyer, 0.0) + float(invoice["remainingAmount"])
            sold[buyer] = sold.get(buyer, 0.0) + float(invoice["totalAmountExcludingTax"])
    customers = {str(row["id"]): row for row in s.rows.get("customers", [])}
    for customer_id, customer in customers.items():
        customer["balanceDue"] = round(owed.get(customer_id, 0.0), 2)
    for name, party_field, amounts in (
        ("agedAccountsReceivables", "customerId", owed),
        ("customerFinancialDetails", "id", owed),
        ("customerSales", "customerId", sold),
        ("agedAccountsPayables", "vendorId", {}),
        ("vendorPurchases", "vendorId", {}),
    ):
        if name not in seeded_here:
            continue
        for row in s.rows.get(name, []):
            amount = round(amounts.get(str(row[party_field]), 0.0), 2)
            _set_present(row, balanceDue=amount, currentAmount=amount, balance=amount)
            _set_present(row, period1Amount=0.0, period2Amount=0.0, period3Amount=0.0)
            _set_present(row, overdueAmount=0.0, totalPurchaseAmount=amount)
            _set_present(row, totalSalesAmount=amount, totalSalesExcludingTax=amount)
            party = customers.get(str(row[party_field]))
            if party is not None:
                _set_present(row, currencyCode=party["currencyCode"], number=party["number"])


def _set_present(row: Row, **values: Any) -> None:
    """Set the values whose properties the row has."""
    row.update({name: value for name, value in values.items() if name in row})


def scalable_sets() -> tuple[str, ...]:
    """The sets whose row counts ``--scale`` sets here (in the first company): every generic
    one but the singletons, the root sets made from the emulator's own facts and what posting
    fills. A set keyed by another record has at most one row per such record."""
    fixed = NOT_STORED | SINGLETONS | set(_SPECIAL_ROWS) | posting.OWNED_SETS
    return tuple(
        entity_set.name
        for entity_set in catalog.CATALOG.values()
        if entity_set.derived and entity_set.name not in fixed
    )


def _in_link_order(sets: Sequence[EntitySet]) -> list[EntitySet]:
    """`sets` with each one after the sets it links to (a cycle is broken where it closes)."""
    waiting = {entity_set.name: entity_set for entity_set in sets}
    ordered: list[EntitySet] = []
    while waiting:
        ready = [
            entity_set
            for entity_set in waiting.values()
            if not (_targets(entity_set) & (set(waiting) - {entity_set.name}))
        ]
        chosen = ready or [next(iter(waiting.values()))]
        for entity_set in chosen:
            ordered.append(waiting.pop(entity_set.name))
    return ordered


def _targets(entity_set: EntitySet) -> set[str]:
    found = {
        nav.target
        for nav in entity_set.navigations
        if not nav.many and (nav.via != "id" or nav.target not in ID_OF_PARENT)
    }
    found |= {target for f in entity_set.fields if (target := _set_named_by(f.name))}
    if entity_set.parent:
        found.add(entity_set.parent)
    return found


def _set_named_by(field_name: str) -> str | None:
    """``customerId``/``customerNumber`` -> ``customers``: the set whose entity the name holds."""
    for suffix in ("Id", "Number", "Code"):
        if field_name.endswith(suffix) and len(field_name) > len(suffix):
            return _SET_OF_ENTITY.get(field_name[: -len(suffix)])
    return None


_SET_OF_ENTITY = {
    entity_set.entity: entity_set.name
    for entity_set in catalog.CATALOG.values()
    if entity_set.name not in NOT_STORED
}


# --- one set ------------------------------------------------------------------------------------


def _seed_set(s: Seeder, entity_set: EntitySet, counts: Mapping[str, int]) -> None:
    special = _SPECIAL_ROWS.get(entity_set.name)
    if special is not None:
        rows = special(s, entity_set)
    else:
        starts = _links(s, entity_set, counts)
        plan = _plan(s, entity_set)
        rows = [_row(s, entity_set, plan, i, start) for i, start in enumerate(starts)]
    natural = entity_set.natural_key
    if natural and entity_set.number_series and rows:
        # numbered as BC's number series would, so that the next POST continues after them
        for values, number in zip(rows, s.series(entity_set.name, len(rows)), strict=True):
            values[natural] = number
    for values in rows:
        row = s.add(entity_set.name, values)
        if entity_set.scope is Scope.ROOT:
            row["_company"] = ROOT_COMPANY


def _links(s: Seeder, entity_set: EntitySet, counts: Mapping[str, int]) -> list[Row]:
    """One dict per row to make: the linking values it starts from (a key taken from the
    record it is keyed by, the id of the record it shares its id with, or nothing)."""
    pools = s.rows
    key_target = _set_named_by(entity_set.key) if entity_set.key != "id" else None
    if key_target and pools.get(key_target):
        targets = pools[key_target][: counts.get(entity_set.name, len(pools[key_target]))]
        return [_keyed_by(entity_set, target) for target in targets]
    if entity_set.name in ID_OF_PARENT:  # one PDF per document, with the document's id
        parents = [nav for nav in entity_set.navigations if nav.via == "parentId"]
        pairs = _candidates(entity_set, parents, pools)
        return [{"id": row["id"], "parentId": row["id"], **typed} for row, typed in pairs]
    same_id = _shares_id_with(entity_set)
    if same_id:
        pairs = _candidates(entity_set, same_id, pools)
        wanted = counts.get(entity_set.name, len(pairs))
        return [{"id": row["id"], **typed} for row, typed in pairs[:wanted]]
    if entity_set.name in SINGLETONS:
        return [{}]
    return [{} for _ in range(counts.get(entity_set.name, DEFAULT_COUNT))]


def _shares_id_with(entity_set: EntitySet) -> list[Navigation]:
    """The records this one takes its id from (a picture has its item's id). A link to the
    document's pdfDocument goes the other way: the PDF takes the document's id."""
    return [
        nav
        for nav in entity_set.navigations
        if nav.via == "id" and not nav.many and nav.target not in ID_OF_PARENT
    ]


def _keyed_by(entity_set: EntitySet, target: Row) -> Row:
    """The values of a record keyed by `target` (an aged receivable of a customer)."""
    values: Row = {entity_set.key: target["id"], "id": target["id"]}
    names = frozenset(entity_set.field_names)
    for ours, theirs in (("number", "number"), ("name", "displayName"), ("display", "displayName")):
        if ours in names and theirs in target:
            values[ours] = target[theirs]
    values.update(_copies(entity_set.key, target, names))
    return values


def _candidates(
    entity_set: EntitySet, navigations: Sequence[Navigation], pools: Pools
) -> list[tuple[Row, Row]]:
    """(record, type values) for every seeded record one of `navigations` may point at; the
    type values name the record's kind where the set has a ``parentType``-like enum."""
    type_field = _type_field(entity_set, navigations[0].via)
    kinds: list[list[tuple[Row, Row]]] = []
    for nav in navigations:
        target = catalog.CATALOG.get(nav.target)
        if target is None:
            continue
        typed: Row = {}
        if type_field is not None:
            option = _option_for(type_field, target.entity)
            if option is None:
                continue
            typed[type_field.name] = option
        kinds.append([(row, typed) for row in pools.get(nav.target, [])])
    # one of each kind in turn, so that a few rows already link to every kind of parent
    mixed = itertools.zip_longest(*kinds)
    return [pair for group in mixed for pair in group if pair is not None]


def _type_field(entity_set: EntitySet, via: str) -> Field | None:
    """``parentType`` beside ``parentId``, ``relatedType`` beside ``relatedId``."""
    if via == "id":
        name = "parentType"
    elif via.endswith("Id"):
        name = f"{via[:-2]}Type"
    else:
        return None
    found = next((f for f in entity_set.fields if f.name == name), None)
    return found if found is not None and found.type is FieldType.ENUM else None


def _option_for(field: Field, entity: str) -> str | None:
    """The member of a ``parentType`` enum that names `entity` (``Sales Invoice`` for
    ``salesInvoice``), or None."""
    wanted = entity.lower()
    return next((o for o in field.options if o.replace(" ", "").lower() == wanted), None)


@dataclass(frozen=True)
class _Plan:
    """How one set's rows are linked, worked out once for all its rows."""

    names: frozenset[str]
    links: tuple[tuple[str, str, list[tuple[Row, Row]]], ...]  # via, key matched, candidates
    by_name: tuple[tuple[str, list[Row], str], ...]  # property, records, their field copied
    limited: tuple[tuple[str, int], ...]  # text properties and their maximum lengths
    own_id: tuple[str, ...]  # properties holding the record's own id (jobQueueEntryId)


def _plan(s: Seeder, entity_set: EntitySet) -> _Plan:
    pools, names = s.rows, frozenset(entity_set.field_names)
    by_via: dict[str, list[Navigation]] = {}
    for nav in entity_set.navigations:
        if not nav.many and nav.via != "id" and nav.via in names and nav.via != entity_set.key:
            by_via.setdefault(nav.via, []).append(nav)
    if entity_set.parent and entity_set.parent_field in by_via:  # a payment's own journal set
        by_via[entity_set.parent_field] = [
            Navigation("parent", entity_set.parent, entity_set.parent_field)
        ]
    own_id: list[str] = []
    for field in entity_set.fields:
        target = _set_named_by(field.name)
        if field.type is not FieldType.GUID or not target or field.name == entity_set.key:
            continue
        if target == entity_set.name:
            own_id.append(field.name)
        elif field.name not in by_via:
            by_via[field.name] = [Navigation(field.name, target, field.name)]
    links = tuple(
        (via, navigations[0].key, pairs)
        for via, navigations in by_via.items()
        if (pairs := _candidates(entity_set, navigations, pools))
    )
    return _Plan(
        names,
        links,
        _numbers_by_name(entity_set, names, pools),
        tuple((f.name, f.max_length) for f in entity_set.fields if f.max_length),
        tuple(own_id),
    )


def _row(s: Seeder, entity_set: EntitySet, plan: _Plan, index: int, start: Row) -> Row:
    values: Row = {}
    for field in entity_set.fields:
        if field.name not in start:
            values[field.name] = _value(s, entity_set, field, index)
    values.update(start)
    _link(plan, index, values)
    _dimension_pair(plan.names, index, values, s.rows)
    for name, limit in plan.limited:  # a copied name may be longer than this property takes
        value = values.get(name)
        if isinstance(value, str) and len(value) > limit:
            values[name] = value[:limit]
    if "id" not in values or values["id"] == BLANK_GUID:
        values["id"] = s.uid()
    for name in plan.own_id:  # jobQueueEntries.jobQueueEntryId: the entry's own id
        values[name] = values["id"]
    return values


def _link(plan: _Plan, index: int, values: Row) -> None:
    """Point each linking property at a seeded record, and copy its number, code and name."""
    for via, key, pairs in plan.links:
        row, typed = pairs[index % len(pairs)]
        values[via] = row[key]
        values.update(typed)
        values.update(_copies(via, row, plan.names))
    for name, rows, source in plan.by_name:
        values[name] = rows[index % len(rows)][source]


def _copies(via: str, target: Row, names: frozenset[str]) -> Row:
    """``customerId`` -> the customer's ``customerNumber``, ``customerName``, ..."""
    stem = via[:-2] if via.endswith("Id") else via
    copied: Row = {}
    for suffix, theirs in (
        ("Number", "number"),
        ("Code", "code"),
        ("Name", "displayName"),
        ("DisplayName", "displayName"),
    ):
        if f"{stem}{suffix}" in names and theirs in target:
            copied[f"{stem}{suffix}"] = target[theirs]
    return copied


def _numbers_by_name(
    entity_set: EntitySet, names: frozenset[str], pools: Pools
) -> tuple[tuple[str, list[Row], str], ...]:
    """``itemNumber`` with no ``itemId`` beside it (item ledger entries): a seeded item's."""
    found: list[tuple[str, list[Row], str]] = []
    for field in entity_set.fields:
        target = _set_named_by(field.name)
        if field.type is not FieldType.STRING or not target or not pools.get(target):
            continue
        stem = field.name.removesuffix("Number").removesuffix("Code")
        if f"{stem}Id" in names or field.name == entity_set.natural_key:
            continue
        source = "number" if field.name.endswith("Number") else "code"
        if source in pools[target][0]:
            found.append((field.name, pools[target], source))
    return tuple(found)


def _dimension_pair(names: frozenset[str], index: int, values: Row, pools: Pools) -> None:
    """A dimension value and the dimension it belongs to, never a value of another dimension."""
    if "dimensionValueId" not in names and "valueId" not in names:
        return
    dimension_values, dimensions = pools.get("dimensionValues"), pools.get("dimensions")
    if not dimension_values or not dimensions:
        return
    value = dimension_values[index % len(dimension_values)]
    dimension = next(d for d in dimensions if d["id"] == value["dimensionId"])
    if "dimensionValueId" in names:  # defaultDimensions
        values.update(dimensionValueId=value["id"], dimensionValueCode=value["code"])
        values.update(dimensionId=dimension["id"], dimensionCode=dimension["code"])
    elif "valueId" in names:  # dimensionSetLines
        values.update(valueId=value["id"], valueCode=value["code"])
        values.update(valueDisplayName=value["displayName"], valueConsolidationCode="")
        values.update(code=dimension["code"], displayName=dimension["displayName"])
        values["consolidationCode"] = ""


# --- typed values -------------------------------------------------------------------------------


def _value(s: Seeder, entity_set: EntitySet, field: Field, index: int) -> Any:
    kind = field.type
    if (entity_set.streams and field.name in CONTENT_FACTS) or kind is FieldType.COLLECTION:
        return blank(field)
    if kind is FieldType.GUID:
        return s.uid() if field.name == entity_set.key else BLANK_GUID
    if kind is FieldType.BOOL:
        return "block" not in field.name.lower() and index % 2 == 0
    if kind is FieldType.INT:
        if field.name in ("lineNumber", "sequence"):
            return (index + 1) * 10000
        return index + 1
    if kind is FieldType.DECIMAL:
        return round(s.rng.uniform(1, 1000), 2)
    if kind is FieldType.DATE:
        return (BASE + timedelta(days=7 * index)).date().isoformat()
    if kind is FieldType.DATETIME:
        return (BASE + timedelta(hours=index)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if kind is FieldType.ENUM:
        members = [o for o in field.options if o.strip()] or list(field.options)
        return members[index % len(members)] if members else ""
    return _text(entity_set, field, index)


def _text(entity_set: EntitySet, field: Field, index: int) -> str:
    name, lower = field.name, field.name.lower()
    city, state, postcode = CITIES[index % len(CITIES)]
    title = entity_set.entity[:1].upper() + entity_set.entity[1:]
    if name in ("number", "code") or name == entity_set.key:
        text = _unique_code(entity_set, field, index)
    elif lower.endswith("email") or lower.startswith("email"):
        text = f"{entity_set.entity.lower()}{index + 1}@example.com"
    elif "phone" in lower or "fax" in lower:
        text = f"555-{1000 + index % 9000}"
    elif lower == "website":
        text = "www.example.com"
    elif lower.endswith("url"):
        text = f"https://example.com/{entity_set.entity.lower()}/{index + 1}"
    elif lower.endswith("country"):
        text = "US"
    elif lower.endswith("city"):
        text = city
    elif lower == "state" or lower.endswith(("tostate", "fromstate")):  # an address's
        text = state
    elif lower.endswith(("postalcode", "postcode")):
        text = postcode
    elif lower.endswith(("currencycode", "filter")) or "code" in lower:
        text = ""  # BC's blank: local currency, no filter, no code chosen
    elif any(word in lower for word in ("amount", "debit", "credit", "balance")):
        text = f"{(index + 1) * 125:.2f}"  # an amount BC formats as text (trialBalances)
    elif "name" in lower or "display" in lower or "description" in lower or lower == "caption":
        text = f"{title} {index + 1}"
    else:
        text = f"{name} {index + 1}"
    return text[: field.max_length] if field.max_length else text


def _unique_code(entity_set: EntitySet, field: Field, index: int) -> str:
    """``BA00001``-like: unique within the set, within BC's maximum length."""
    digits = f"{index + 1:04d}"
    room = (field.max_length or 20) - len(digits)
    letters = "".join(ch for ch in entity_set.entity if ch.isupper() or ch == entity_set.entity[0])
    return f"{letters.upper()[: max(room, 0)]}{digits}"


# --- sets whose rows are facts of the emulator, not generic values ------------------------------


def _entity_definitions(s: Seeder, entity_set: EntitySet) -> list[Row]:
    """One definition per entity set BC's $metadata declares, with English (1033) captions made
    from the names (BC's own captions are translations we do not have)."""
    return [
        {
            "id": served.entity.lower(),
            "entityName": served.entity,
            "entitySetName": served.name,
            "entityCaptions": _captions(served.entity),
            "entitySetCaptions": _captions(served.name),
            "properties": [{"name": f.name, "captions": _captions(f.name)} for f in served.fields],
            "actions": [{"name": a, "captions": _captions(a)} for a in served.actions],
            "enumMembers": [],
        }
        for served in catalog.CATALOG.values()
    ]


def _captions(name: str) -> list[Row]:
    """``salesInvoiceLines`` -> ``[{"languageCode": 1033, "caption": "Sales Invoice Lines"}]``."""
    words = "".join(f" {ch}" if ch.isupper() else ch for ch in name).strip()
    return [{"languageCode": 1033, "caption": words[:1].upper() + words[1:]}]


def _api_routes(s: Seeder, entity_set: EntitySet) -> list[Row]:
    """The API routes the emulator serves besides v2.0. What a real tenant lists here depends on
    its apps (UNCONFIRMED); Microsoft's runtime API is one every tenant has."""
    return [
        {
            "id": "microsoft/runtime/beta",
            "route": "microsoft/runtime/beta",
            "publisher": "microsoft",
            "group": "runtime",
            "version": "beta",
        }
    ]


_SPECIAL_ROWS: Mapping[str, Callable[[Seeder, EntitySet], list[Row]]] = {
    "entityDefinitions": _entity_definitions,
    "apicategoryroutes": _api_routes,
}
