"""The entity catalog: every API v2.0 entity set bcbridge knows, in one place.

The client, the CLI and the emulator all read this module; nothing else lists entity sets,
keys, routes, allowed operations, bound actions or property types.

Facts come from ``shared/bc-api.md`` §3 (itself from Microsoft's docs and AL source). Property
lists are written in a compact form, one token per property: ``name[:type][:ro]`` where the type
is one of ``guid string int decimal bool date datetime`` or ``enum=A|B|C`` (``_`` stands for BC's
blank option ``" "`` and ``~`` for a space inside an option name, e.g. ``In~Review``). A missing
type means ``string``. ``len=N`` gives a string's maximum length (BC's Text[N] or Code[N]),
``Field.max_length``. The exact spelling of option names holding spaces is UNCONFIRMED in BC's
docs (bc-api.md §1.6); we use the caption with its space.

The sets not written out here are derived from BC's own ``$metadata`` (``catalog_reference.json``,
made by ``scripts/derive_catalog.py``): their property names, types, enum members, maximum
lengths, navigation properties, operations and bound actions. The hand-written sets also take
from it BC's exact type names (``Microsoft.NAV`` enum types, ``Edm.Int64``) and the navigation
properties the emulator can follow.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from bcbridge.errors import ConfigError

__all__ = [
    "CATALOG",
    "WEBHOOK_ENTITIES",
    "EntitySet",
    "Field",
    "FieldType",
    "Navigation",
    "Operation",
    "Refusal",
    "Scope",
    "children",
    "complex_types",
    "decode_member",
    "encode_member",
    "get",
    "is_guid",
    "names",
    "refusal",
]


class FieldType(StrEnum):
    """A property's type, as this catalog writes it (BC's Edm types, simplified)."""

    GUID = "guid"
    STRING = "string"
    INT = "int"
    DECIMAL = "decimal"
    BOOL = "bool"
    DATE = "date"
    DATETIME = "datetime"
    ENUM = "enum"
    # a collection of a complex type (entityDefinitions' captions): a JSON array of objects,
    # its EDM type in `Field.edm_type`; read-only
    COLLECTION = "collection"


class Operation(StrEnum):
    """An HTTP method an entity set accepts."""

    GET = "GET"
    POST = "POST"
    PATCH = "PATCH"
    DELETE = "DELETE"


class Scope(StrEnum):
    """Where an entity set lives: under a company, or at the API root."""

    COMPANY = "company"  # companies({id})/set, or set?company={id}
    ROOT = "root"  # at the API root: companies, subscriptions


CRUD = frozenset(Operation)
READ_ONLY = frozenset({Operation.GET})


@dataclass(frozen=True)
class Field:
    """A property of an entity: its type, whether BC lets clients write it, the options of an
    enum, and BC's maximum length of a text."""

    name: str
    type: FieldType = FieldType.STRING
    read_only: bool = False
    options: tuple[str, ...] = ()  # enum values, as BC serialises them
    max_length: int | None = None  # BC's Text[N] / Code[N]; longer values are refused
    # BC's declared type where `type` simplifies it: an enum's "Microsoft.NAV.<enum type>",
    # "Edm.Int64" for `timestamp`. None: the type's usual EDM name.
    edm_type: str | None = None


@dataclass(frozen=True)
class Navigation:
    """A navigation property. `many` for line collections; otherwise a single-valued link.

    For a single-valued link `via` is the foreign-key field on this entity (``customerId``).
    For a collection `via` is the field on the target that points back (``documentId``).
    `key` is the field on the "one" side that `via` matches: the target's for a single-valued
    link, this entity's for a collection; ``id`` but for a few of BC's links
    (``salesOrders(..)/dimensionValue`` by ``shortcutDimension1Code`` = ``code``).
    """

    name: str
    target: str  # entity set name
    via: str
    many: bool = False
    key: str = "id"


@dataclass(frozen=True)
class EntitySet:
    """An entity set of BC API v2.0: its name, entity type, operations, bound actions,
    properties and navigation properties."""

    name: str  # the entity set, e.g. "customers"
    entity: str  # the entity type, e.g. "customer"
    operations: frozenset[Operation] = CRUD
    actions: tuple[str, ...] = ()  # bound actions, called as Microsoft.NAV.<action>
    fields: tuple[Field, ...] = ()
    navigations: tuple[Navigation, ...] = ()
    scope: Scope = Scope.COMPANY
    key: str = "id"
    key_is_string: bool = False  # string keys are single-quoted in URLs (subscriptions('x'))
    parent: str | None = None  # set this one is nested under, e.g. salesOrders
    parent_field: str | None = None  # field holding the parent's id, e.g. documentId
    natural_key: str | None = None  # the field people match on: number, code, ...
    number_series: str | None = None  # first number handed out on create, e.g. "C00010"
    lines: str | None = None  # the line set of a document, for deep insert and totals
    required_one_of: tuple[str, ...] = ()  # on create, at least one of these must be given
    notes: str = ""  # what is unsure about this set, shown in docs and metadata
    streams: tuple[str, ...] = ()  # Edm.Stream properties (content), not part of a record
    # BC's key when it has several parts (customerSales: customerId, customerNumber, name);
    # `key`, its first part, is what the emulator finds a record by.
    composite_key: tuple[str, ...] = ()
    # True: the properties come from BC's $metadata alone (catalog_reference.json); BC's rules
    # for writing them (read-only fields, defaults, checks) are not known yet.
    derived: bool = False

    @property
    def described(self) -> bool:
        """True when the catalog knows this set's properties and the rules for writing them
        (writes need it). A `derived` set's properties are known, its write rules are not."""
        return bool(self.fields) and not self.derived

    @property
    def read_only(self) -> bool:
        """Only GET is allowed."""
        return self.operations == READ_ONLY

    def allows(self, operation: Operation | str) -> bool:
        """The set accepts this HTTP method."""
        return Operation(operation) in self.operations

    def field(self, name: str) -> Field:
        """The property `name`, or ConfigError listing the valid ones."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise ConfigError(
            f"unknown property {name!r} of {self.entity}; expected one of: "
            + ", ".join(f.name for f in self.fields),
            field=name,
        )

    @property
    def field_names(self) -> tuple[str, ...]:
        """The names of its properties, in catalog order."""
        return tuple(f.name for f in self.fields)

    def navigation(self, name: str) -> Navigation | None:
        """The navigation property `name`, or None."""
        return next((nav for nav in self.navigations if nav.name == name), None)


# --- the compact property notation -------------------------------------------------------


def _parse_field(token: str) -> Field:
    name, *parts = token.split(":")
    kind, read_only = FieldType.STRING, False
    options: tuple[str, ...] = ()
    max_length: int | None = None
    for part in parts:
        if part == "ro":
            read_only = True
        elif part.startswith("len="):
            max_length = int(part[len("len=") :])
            if max_length < 1:
                raise ValueError(f"{token}: len= must be at least 1")
        elif part.startswith("enum="):
            kind = FieldType.ENUM
            options = tuple(
                " " if option == "_" else option.replace("~", " ")
                for option in part[len("enum=") :].split("|")
            )
        else:
            kind = FieldType(part)
    if max_length is not None and kind is not FieldType.STRING:
        raise ValueError(f"{token}: len= applies to string properties only")
    return Field(name, kind, read_only, options, max_length)


def _fields(*specs: str) -> tuple[Field, ...]:
    fields = tuple(_parse_field(token) for spec in specs for token in spec.split())
    seen = [f.name for f in fields]
    duplicates = {name for name in seen if seen.count(name) > 1}
    assert not duplicates, f"duplicate properties in catalog: {duplicates}"
    return fields


ID = "id:guid:ro"
MODIFIED = "lastModifiedDateTime:datetime:ro"

# --- BC's field lengths ---------------------------------------------------------------------
# bc-api.md lists no field lengths. Each ``len=N`` below is the length of the BC base-app table
# field behind the API property (Text[N] or Code[N], named in the comment next to it), from
# BC's table definitions; only lengths we are sure of are given, other strings are unchecked.
# BC stores Code[N] values in upper case; that the API upper-cases a Code value on write is NOT
# confirmed by bc-api.md, so the emulator keeps values as sent.
NUMBER = "len=20"  # "No." Code[20] (Customer, Vendor, Item, Contact, Employee, documents)
NAME = "len=100"  # "Name" Text[100]; Item "Description" Text[100]
# Address Text[100], "Address 2" Text[50], City Text[30], County Text[30],
# "Country/Region Code" Code[10], "Post Code" Code[20]
ADDRESS = (
    "addressLine1:len=100 addressLine2:len=50 city:len=30 state:len=30 country:len=10 "
    "postalCode:len=20"
)
CONTACT = "phoneNumber:len=30 email:len=80 website"  # "Phone No." Text[30], "E-Mail" Text[80]
CURRENCY_CODE = "currencyCode:len=10"  # "Currency Code" Code[10]
VAT_NUMBER = "taxRegistrationNumber:len=20"  # "VAT Registration No." Text[20]


def _address(prefix: str, *, read_only: bool = False) -> str:
    suffix = ":ro" if read_only else ""
    # "<Sell-to|Bill-to|Ship-to|Buy-from|Pay-to> Address" Text[100], "... Address 2" Text[50],
    # "... City" Text[30], "... Country/Region Code" Code[10], "... County" Text[30],
    # "... Post Code" Code[20]
    parts = (
        ("AddressLine1", 100),
        ("AddressLine2", 50),
        ("City", 30),
        ("Country", 10),
        ("State", 30),
        ("PostCode", 20),
    )
    return " ".join(f"{prefix}{part}:len={length}{suffix}" for part, length in parts)


SALES_PARTY = " ".join(
    [
        # "Sell-to/Bill-to Customer No." Code[20], "Ship-to Name"/"Ship-to Contact" Text[100]
        f"customerId:guid customerNumber:{NUMBER} customerName:ro billToName:ro",
        f"billToCustomerId:guid billToCustomerNumber:{NUMBER} shipToName:{NAME}",
        f"shipToContact:{NAME}",
        _address("sellTo"),
        _address("billTo", read_only=True),
        _address("shipTo"),
    ]
)
PURCHASE_PARTY = " ".join(
    [
        # "Buy-from/Pay-to Vendor No." Code[20], "Ship-to Name"/"Ship-to Contact" Text[100]
        f"vendorId:guid vendorNumber:{NUMBER} vendorName:ro payToName:ro payToContact:ro",
        f"payToVendorId:guid payToVendorNumber:{NUMBER} shipToName:{NAME}",
        f"shipToContact:{NAME}",
        _address("buyFrom"),
        _address("payTo", read_only=True),
        _address("shipTo"),
    ]
)
TOTALS = (
    "discountAmount:decimal discountAppliedBeforeTax:bool:ro "
    "totalAmountExcludingTax:decimal:ro totalTaxAmount:decimal:ro "
    "totalAmountIncludingTax:decimal:ro"
)
# "Shortcut Dimension 1/2 Code" Code[20]. pricesIncludeTax comes from the customer's or
# vendor's "Prices Including VAT" and is not editable on BC's API document pages (issue 13;
# Microsoft's resource pages do not say so: UNCONFIRMED beyond the AL pages' Editable = false).
DOCUMENT_COMMON = (
    "shortcutDimension1Code:len=20 shortcutDimension2Code:len=20 currencyId:guid "
    f"{CURRENCY_CODE} pricesIncludeTax:bool:ro paymentTermsId:guid shipmentMethodId:guid"
)
LINE_TYPES = "enum=Comment|Account|Item|Resource|Fixed~Asset|Charge"
# Line "No." Code[20], Description Text[100], "Description 2" Text[50],
# "Unit of Measure Code" Code[10], "Tax Group Code" Code[20]
LINE_COMMON = (
    f"{ID} documentId:guid sequence:int itemId:guid accountId:guid lineType:{LINE_TYPES} "
    "lineObjectNumber:len=20 description:len=100 description2:len=50 unitOfMeasureId:guid "
    "unitOfMeasureCode:len=10 "
    "quantity:decimal discountAmount:decimal discountPercent:decimal "
    "discountAppliedBeforeTax:bool:ro amountExcludingTax:decimal:ro taxCode:len=20 "
    "taxPercent:decimal:ro totalTaxAmount:decimal:ro amountIncludingTax:decimal:ro "
    "invoiceDiscountAllocation:decimal:ro netAmount:decimal:ro netTaxAmount:decimal:ro "
    "netAmountIncludingTax:decimal:ro itemVariantId:guid locationId:guid"
)
DOC_STATUS = "enum=Draft|In~Review|Open"
# "External Document No." Code[35], "Your Reference" Text[35], "Vendor Invoice No." Code[35],
# "Salesperson Code"/"Purchaser Code" Code[20], "Sell-to Phone No." Text[30],
# "Sell-to E-Mail" Text[80]
EXTERNAL_NUMBER = "externalDocumentNumber:len=35"
SALESPERSON = "salesperson:len=20"
PURCHASER = "purchaser:len=20"
SELL_TO_CONTACT = "phoneNumber:len=30 email:len=80"
INVOICE_STATUS = "enum=_|Draft|In~Review|Open|Paid|Canceled|Corrective"


def _line_navigations(document_set: str, document_nav: str) -> tuple[Navigation, ...]:
    return (
        Navigation(document_nav, document_set, "documentId"),
        Navigation("item", "items", "itemId"),
        Navigation("account", "accounts", "accountId"),
    )


def _document(
    name: str,
    entity: str,
    lines: str,
    line_entity: str,
    *,
    party: str,
    header_fields: str,
    line_fields: str,
    actions: tuple[str, ...],
    number_series: str,
) -> tuple[EntitySet, EntitySet]:
    """A document header set and its line set (nested under it and reachable flat)."""
    party_nav = (
        Navigation("customer", "customers", "customerId")
        if party == "sales"
        else Navigation("vendor", "vendors", "vendorId")
    )
    header = EntitySet(
        name,
        entity,
        actions=actions,
        fields=_fields(
            ID,
            "number:ro",
            header_fields,
            SALES_PARTY if party == "sales" else PURCHASE_PARTY,
            DOCUMENT_COMMON,
            TOTALS,
            MODIFIED,
        ),
        navigations=(
            party_nav,
            Navigation("currency", "currencies", "currencyId"),
            Navigation("paymentTerm", "paymentTerms", "paymentTermsId"),
            Navigation(lines, lines, "documentId", many=True),
        ),
        natural_key="number",
        number_series=number_series,
        lines=lines,
        required_one_of=(
            ("customerNumber", "customerId") if party == "sales" else ("vendorNumber", "vendorId")
        ),
    )
    line = EntitySet(
        lines,
        line_entity,
        fields=_fields(LINE_COMMON, line_fields),
        navigations=_line_navigations(name, entity),
        parent=name,
        parent_field="documentId",
    )
    return header, line


SALES_LINE_PRICE = "unitPrice:decimal shipmentDate:date"
PURCHASE_LINE_PRICE = "directUnitCost:decimal expectedReceiptDate:date"

_SALES_ORDERS = _document(
    "salesOrders",
    "salesOrder",
    "salesOrderLines",
    "salesOrderLine",
    party="sales",
    header_fields=(
        f"{EXTERNAL_NUMBER} orderDate:date postingDate:date {SALESPERSON} "
        "partialShipping:bool requestedDeliveryDate:date fullyShipped:bool:ro "
        f"status:{DOC_STATUS}:ro {SELL_TO_CONTACT}"
    ),
    line_fields=(
        f"{SALES_LINE_PRICE} shippedQuantity:decimal:ro invoicedQuantity:decimal:ro "
        "invoiceQuantity:decimal shipQuantity:decimal"
    ),
    actions=("shipAndInvoice",),
    number_series="S-ORD101001",
)
_SALES_INVOICES = _document(
    "salesInvoices",
    "salesInvoice",
    "salesInvoiceLines",
    "salesInvoiceLine",
    party="sales",
    header_fields=(
        f"{EXTERNAL_NUMBER} invoiceDate:date postingDate:date dueDate:date "
        "promisedPayDate:date customerPurchaseOrderReference:len=35 orderId:guid:ro "
        f"orderNumber:ro {SALESPERSON} disputeStatusId:guid disputeStatus "
        f"remainingAmount:decimal:ro status:{INVOICE_STATUS}:ro {SELL_TO_CONTACT}"
    ),
    line_fields=SALES_LINE_PRICE,
    actions=("post", "postAndSend", "send", "cancel", "cancelAndSend", "makeCorrectiveCreditMemo"),
    number_series="S-INV102001",
)
_SALES_QUOTES = _document(
    "salesQuotes",
    "salesQuote",
    "salesQuoteLines",
    "salesQuoteLine",
    party="sales",
    header_fields=(
        f"{EXTERNAL_NUMBER} documentDate:date postingDate:date dueDate:date "
        f"validUntilDate:date sentDate:datetime:ro acceptedDate:date {SALESPERSON} "
        # BC's last member is "Expired " with a trailing space ("Expired_x0020_" in $metadata)
        f"status:enum=Draft|Sent|Accepted|Expired~:ro {SELL_TO_CONTACT}"
    ),
    line_fields=SALES_LINE_PRICE,
    actions=("makeInvoice", "makeOrder", "send"),
    number_series="S-QUO1001",
)
_PURCHASE_ORDERS = _document(
    "purchaseOrders",
    "purchaseOrder",
    "purchaseOrderLines",
    "purchaseOrderLine",
    party="purchase",
    header_fields=(
        f"orderDate:date postingDate:date {PURCHASER} requestedReceiptDate:date "
        f"fullyReceived:bool:ro status:{DOC_STATUS}:ro"
    ),
    line_fields=(
        f"{PURCHASE_LINE_PRICE} receivedQuantity:decimal:ro invoicedQuantity:decimal:ro "
        "invoiceQuantity:decimal receiveQuantity:decimal"
    ),
    actions=("receiveAndInvoice",),
    number_series="P-ORD106001",
)
_PURCHASE_INVOICES = _document(
    "purchaseInvoices",
    "purchaseInvoice",
    "purchaseInvoiceLines",
    "purchaseInvoiceLine",
    party="purchase",
    header_fields=(
        "invoiceDate:date postingDate:date dueDate:date vendorInvoiceNumber:len=35 "
        f"orderId:guid:ro orderNumber:ro {PURCHASER} status:{INVOICE_STATUS}:ro"
    ),
    # BC's purchase invoice lines call the price unitCost; order lines call it directUnitCost
    line_fields="unitCost:decimal expectedReceiptDate:date",
    actions=("post",),
    number_series="P-INV107001",
)

# Credit memos and the payment journals: written out (not derived) because the emulator applies
# BC's document rules to them (lines, totals, number series, posting; emulator/lifecycle.py).
CREDIT_MEMO_STATUS = "enum=Draft|In~Review|Open|Canceled|Corrective|Paid"
_SALES_CREDIT_MEMOS = _document(
    "salesCreditMemos",
    "salesCreditMemo",
    "salesCreditMemoLines",
    "salesCreditMemoLine",
    party="sales",
    header_fields=(
        f"{EXTERNAL_NUMBER} creditMemoDate:date postingDate:date dueDate:date {SALESPERSON} "
        f"status:{CREDIT_MEMO_STATUS}:ro invoiceId:guid invoiceNumber:{NUMBER} "
        f"customerReturnReasonId:guid {SELL_TO_CONTACT}"
    ),
    line_fields=SALES_LINE_PRICE,
    actions=("cancel", "cancelAndSend", "post", "postAndSend", "send"),
    number_series="S-CR104001",
)
_PURCHASE_CREDIT_MEMOS = _document(
    "purchaseCreditMemos",
    "purchaseCreditMemo",
    "purchaseCreditMemoLines",
    "purchaseCreditMemoLine",
    party="purchase",
    header_fields=(
        "creditMemoDate:date postingDate:date dueDate:date vendorCreditMemoNumber:len=35 "
        f"{PURCHASER} status:{CREDIT_MEMO_STATUS}:ro invoiceId:guid invoiceNumber:{NUMBER} "
        "vendorReturnReasonId:guid"
    ),
    line_fields="unitCost:decimal",
    actions=("cancel", "post"),
    number_series="P-CR108001",
)


def _payment_journal(party: str) -> tuple[EntitySet, EntitySet]:
    """customerPaymentJournals/customerPayments or vendorPaymentJournals/vendorPayments."""
    journals, payments = f"{party}PaymentJournals", f"{party}Payments"
    header = EntitySet(
        journals,
        f"{party}PaymentJournal",
        fields=_fields(
            ID,
            f"code:len=10 displayName:{NAME} balancingAccountId:guid balancingAccountNumber:ro",
            MODIFIED,
        ),
        navigations=(Navigation(payments, payments, "journalId", many=True),),
        natural_key="code",
        lines=payments,
    )
    line = EntitySet(
        payments,
        f"{party}Payment",
        fields=_fields(
            ID,
            "journalId:guid journalDisplayName:ro lineNumber:int",
            f"{party}Id:guid {party}Number:{NUMBER} postingDate:date documentNumber:{NUMBER}",
            f"{EXTERNAL_NUMBER} amount:decimal appliesToInvoiceId:guid",
            f"appliesToInvoiceNumber:{NUMBER} description:{NAME} comment:len=250",
            MODIFIED,
        ),
        navigations=(
            Navigation(f"{party}PaymentJournal", journals, "journalId"),
            Navigation(party, f"{party}s", f"{party}Id"),
        ),
        parent=journals,
        parent_field="journalId",
    )
    return header, line


_MASTER_DATA = (
    EntitySet(
        "customers",
        "customer",
        fields=_fields(
            ID,
            f"number:{NUMBER} displayName:{NAME} type:enum=Company|Person",
            ADDRESS,
            CONTACT,
            # "Salesperson Code" Code[20]
            "salespersonCode:len=20 balanceDue:decimal:ro creditLimit:decimal taxLiable:bool",
            f"taxAreaId:guid taxAreaDisplayName:ro {VAT_NUMBER} currencyId:guid",
            f"{CURRENCY_CODE} paymentTermsId:guid shipmentMethodId:guid paymentMethodId:guid",
            "blocked:enum=_|Ship|Invoice|All",
            MODIFIED,
        ),
        navigations=(
            Navigation("currency", "currencies", "currencyId"),
            Navigation("paymentTerm", "paymentTerms", "paymentTermsId"),
        ),
        natural_key="number",
        number_series="C00010",
    ),
    EntitySet(
        "vendors",
        "vendor",
        fields=_fields(
            ID,
            f"number:{NUMBER} displayName:{NAME}",
            ADDRESS,
            CONTACT,
            f"{VAT_NUMBER} currencyId:guid {CURRENCY_CODE} irs1099Code",
            "paymentTermsId:guid paymentMethodId:guid taxLiable:bool",
            "blocked:enum=_|Payment|All balance:decimal:ro",
            MODIFIED,
        ),
        navigations=(
            Navigation("currency", "currencies", "currencyId"),
            Navigation("paymentTerm", "paymentTerms", "paymentTermsId"),
        ),
        natural_key="number",
        number_series="V00010",
    ),
    EntitySet(
        "items",
        "item",
        fields=_fields(
            ID,
            # Item "No." Code[20], Description Text[100], "Description 2" Text[50]
            f"number:{NUMBER} displayName:{NAME} displayName2:len=50",
            "type:enum=Inventory|Service|Non-Inventory",
            # "Item Category Code" Code[20], GTIN Code[14]
            "itemCategoryId:guid itemCategoryCode:len=20 blocked:bool gtin:len=14",
            "inventory:decimal:ro",
            "unitPrice:decimal priceIncludesTax:bool unitCost:decimal taxGroupId:guid",
            # "Tax Group Code" Code[20], "Base Unit of Measure" Code[10]
            "taxGroupCode:len=20 baseUnitOfMeasureId:guid baseUnitOfMeasureCode:len=10",
            # "Gen. Prod. Posting Group" and "Inventory Posting Group" Code[20]
            "generalProductPostingGroupId:guid generalProductPostingGroupCode:len=20",
            "inventoryPostingGroupId:guid inventoryPostingGroupCode:len=20",
            MODIFIED,
        ),
        navigations=(Navigation("itemCategory", "itemCategories", "itemCategoryId"),),
        natural_key="number",
        number_series="I00010",
    ),
    EntitySet(
        "contacts",
        "contact",
        fields=_fields(
            ID,
            # "Job Title" Text[30], "Company No." Code[20], "Company Name" Text[100]
            f"number:{NUMBER} type:enum=Company|Person displayName:{NAME} jobTitle:len=30",
            f"companyNumber:{NUMBER} companyName:{NAME} contactBusinessRelation:ro",
            ADDRESS,
            # "Mobile Phone No." Text[30], "Search Name" Code[100]
            "phoneNumber:len=30 mobilePhoneNumber:len=30 email:len=80 website",
            "searchName:len=100 privacyBlocked:bool",
            f"{VAT_NUMBER} lastInteractionDate:date:ro",
            MODIFIED,
        ),
        natural_key="number",
        number_series="CT00010",
    ),
    EntitySet(
        "employees",
        "employee",
        fields=_fields(
            ID,
            # "First Name", "Middle Name", "Last Name", "Job Title" Text[30]
            f"number:{NUMBER} displayName:ro givenName:len=30 middleName:len=30",
            "surname:len=30 jobTitle:len=30",
            ADDRESS,
            # "Phone No."/"Mobile Phone No." Text[30], "E-Mail" Text[80]
            "phoneNumber:len=30 mobilePhone:len=30 email:len=80 personalEmail",
            "employmentDate:date",
            "terminationDate:date status:enum=Active|Inactive birthDate:date",
            "statisticsGroupCode bankBranchNumber bankAccountNumber iban",
            MODIFIED,
        ),
        natural_key="number",
        number_series="E00010",
    ),
    EntitySet(
        "itemCategories",
        "itemCategory",
        # Item Category: Code Code[20], Description Text[100]
        fields=_fields(ID, f"code:len=20 displayName:{NAME}", MODIFIED),
        natural_key="code",
    ),
    EntitySet(
        "currencies",
        "currency",
        fields=_fields(
            ID,
            # Currency: Code Code[10]
            "code:len=10 displayName symbol amountDecimalPlaces amountRoundingPrecision:decimal",
            MODIFIED,
        ),
        natural_key="code",
    ),
    EntitySet(
        "paymentTerms",
        "paymentTerm",
        fields=_fields(
            ID,
            # Payment Terms: Code Code[10]
            "code:len=10 displayName dueDateCalculation discountDateCalculation",
            "discountPercent:decimal calculateDiscountOnCreditMemos:bool",
            MODIFIED,
        ),
        natural_key="code",
    ),
)

_FINANCE = (
    EntitySet(
        "accounts",
        "account",
        operations=READ_ONLY,
        fields=_fields(
            ID,
            "number displayName",
            "category:enum=_|Assets|Liabilities|Equity|Income|Cost~of~Goods~Sold|Expense",
            "subCategory blocked:bool",
            "accountType:enum=Posting|Heading|Total|Begin-Total|End-Total",
            "directPosting:bool netChange:decimal consolidationTranslationMethod",
            "consolidationDebitAccount consolidationCreditAccount excludeFromConsolidation:bool",
            MODIFIED,
        ),
        natural_key="number",
    ),
    EntitySet(
        "generalLedgerEntries",
        "generalLedgerEntry",
        operations=READ_ONLY,
        fields=_fields(
            ID,
            "entryNumber:int postingDate:date documentNumber",
            "documentType:enum=_|Payment|Invoice|Credit~Memo|Finance~Charge~Memo|Reminder|Refund",
            "accountId:guid accountNumber description debitAmount:decimal creditAmount:decimal",
            "additionalCurrencyDebitAmount:decimal additionalCurrencyCreditAmount:decimal",
            MODIFIED,
        ),
        navigations=(Navigation("account", "accounts", "accountId"),),
        natural_key="entryNumber",
    ),
    EntitySet(
        "journals",
        "journal",
        actions=("post",),
        fields=_fields(
            ID,
            "code:len=10 displayName templateDisplayName:ro",  # batch "Name" Code[10]
            MODIFIED,
            "balancingAccountId:guid balancingAccountNumber:ro",
        ),
        navigations=(Navigation("journalLines", "journalLines", "journalId", many=True),),
        natural_key="code",
        lines="journalLines",
    ),
    EntitySet(
        "journalLines",
        "journalLine",
        fields=_fields(
            ID,
            "journalId:guid journalDisplayName:ro lineNumber:int",
            "accountType:enum=G/L~Account|Customer|Vendor|Bank~Account|Fixed~Asset|Employee",
            # "Account No." Code[20], "Document No." Code[20], Description Text[100]
            f"accountId:guid accountNumber:{NUMBER} postingDate:date documentNumber:{NUMBER}",
            EXTERNAL_NUMBER,
            f"amount:decimal description:{NAME} comment taxCode",
            "balanceAccountType:enum=G/L~Account|Customer|Vendor|Bank~Account|Fixed~Asset|Employee",
            "balancingAccountId:guid balancingAccountNumber",
            MODIFIED,
        ),
        navigations=(
            Navigation("journal", "journals", "journalId"),
            Navigation("account", "accounts", "accountId"),
        ),
        parent="journals",
        parent_field="journalId",
    ),
    EntitySet(
        "dimensions",
        "dimension",
        operations=READ_ONLY,
        fields=_fields(ID, "code displayName consolidationCode", MODIFIED),
        navigations=(Navigation("dimensionValues", "dimensionValues", "dimensionId", many=True),),
        natural_key="code",
    ),
    EntitySet(
        "dimensionValues",
        "dimensionValue",
        operations=READ_ONLY,
        fields=_fields(ID, "code dimensionId:guid displayName consolidationCode", MODIFIED),
        navigations=(Navigation("dimension", "dimensions", "dimensionId"),),
        parent="dimensions",
        parent_field="dimensionId",
        natural_key="code",
    ),
)

_ROOT = (
    EntitySet(
        "companies",
        "company",
        operations=READ_ONLY,
        scope=Scope.ROOT,
        fields=_fields(
            ID,
            "systemVersion:ro timestamp:int:ro name:ro displayName:ro businessProfileId:ro",
            "systemCreatedAt:datetime:ro systemCreatedBy:guid:ro",
            "systemModifiedAt:datetime:ro systemModifiedBy:guid:ro",
        ),
        natural_key="name",
    ),
    EntitySet(
        "subscriptions",
        "subscriptions",  # BC's entity type name is plural too
        scope=Scope.ROOT,
        key="subscriptionId",
        key_is_string=True,
        fields=_fields(
            "subscriptionId:ro notificationUrl resource timestamp:int:ro userId:guid:ro",
            "lastModifiedDateTime:datetime:ro clientState expirationDateTime:datetime:ro",
            "systemCreatedAt:datetime:ro systemCreatedBy:guid:ro",
            "systemModifiedAt:datetime:ro systemModifiedBy:guid:ro",
        ),
        notes="Webhooks need a validation handshake with the notification URL (bc-api.md §9).",
    ),
)

# Every other set of BC's $metadata (catalog_reference.json) is derived from it: its properties,
# key, operations (the capability annotations) and bound actions (`_derived`). A set the
# `companies` entity does not contain is served at the API root (entityDefinitions,
# apicategoryroutes, externaleventsubscriptions, externalbusinesseventdefinitions).
#
# Not served: approvalEntries, approvalUserSetups, postedApprovalEntries and workflowApprovers.
# Microsoft's API docs list them (bc-api.md §3.1) but the $metadata the reference is derived
# from does not declare them, and the emulator adds nothing BC lacks. A later BC version may
# serve them (UNCONFIRMED; docs/bc-api-differences.md).


def _build() -> Mapping[str, EntitySet]:
    sets: list[EntitySet] = [
        *_ROOT,
        *_MASTER_DATA,
        *_SALES_ORDERS,
        *_SALES_INVOICES,
        *_SALES_QUOTES,
        *_PURCHASE_ORDERS,
        *_PURCHASE_INVOICES,
        *_SALES_CREDIT_MEMOS,
        *_PURCHASE_CREDIT_MEMOS,
        *_payment_journal("customer"),
        *_payment_journal("vendor"),
        *_FINANCE,
    ]
    reference = _reference()["entitySets"]
    sets = [_refined(entity_set, reference.get(entity_set.name)) for entity_set in sets]
    written = {entity_set.name for entity_set in sets}
    contained = {nav["name"] for nav in reference["companies"]["navigations"]}
    sets += [
        _derived(name, entry, Scope.COMPANY if name in contained else Scope.ROOT)
        for name, entry in reference.items()
        if name not in written
    ]
    sets = _with_back_references(sets, reference)
    written_sets = {entity_set.name: entity_set for entity_set in sets}
    sets = [_with_write_rules(entity_set, written_sets) for entity_set in sets]
    by_name = {entity_set.name: entity_set for entity_set in sets}
    assert len(by_name) == len(sets), "an entity set is listed twice"
    return MappingProxyType(dict(sorted(by_name.items())))


# --- BC's $metadata, as derived by scripts/derive_catalog.py ---------------------------------

_ESCAPED = re.compile(r"_x([0-9A-Fa-f]{4})_")
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_]")
_EDM_TYPES = {
    "Edm.Guid": FieldType.GUID,
    "Edm.String": FieldType.STRING,
    "Edm.Int32": FieldType.INT,
    "Edm.Int64": FieldType.INT,
    "Edm.Decimal": FieldType.DECIMAL,
    "Edm.Boolean": FieldType.BOOL,
    "Edm.Date": FieldType.DATE,
    "Edm.DateTimeOffset": FieldType.DATETIME,
}
_STREAM = "Edm.Stream"
_COLLECTION = "Collection("
_NAV_PREFIX = "Microsoft.NAV."
# Written by the server whatever a client sends (bc-api.md §5), in every derived set. BC's
# $metadata has no read-only annotation on properties (no Core.Computed): the other read-only
# properties of a derived set are our reading, in `_MIRRORS` and `_COMPUTED` below.
# (timeRegistrationEntries spells its modification time "lastModfiedDateTime".)
_SERVER_SET = frozenset(
    {
        "id",
        "lastModifiedDateTime",
        "lastModfiedDateTime",
        "timestamp",
        "systemVersion",
        "systemCreatedAt",
        "systemCreatedBy",
        "systemModifiedAt",
        "systemModifiedBy",
    }
)


@dataclass(frozen=True)
class _Mirror:
    """A derived set that BC builds like a hand-written one (a credit memo like an invoice, a
    payment like a journal line): it takes that set's read-only properties (by name), natural
    key, required party and parent field, plus the links given here."""

    like: str
    number_series: str | None = None
    lines: str | None = None
    parent: str | None = None


# BC's number series for credit memos in its demo company are S-CR/P-CR numbers; the exact
# first numbers are UNCONFIRMED.
_MIRRORS: Mapping[str, _Mirror] = {
    "salesCreditMemos": _Mirror("salesInvoices", "S-CR104001", lines="salesCreditMemoLines"),
    "salesCreditMemoLines": _Mirror("salesInvoiceLines", parent="salesCreditMemos"),
    "purchaseCreditMemos": _Mirror("purchaseInvoices", "P-CR108001", "purchaseCreditMemoLines"),
    "purchaseCreditMemoLines": _Mirror("purchaseInvoiceLines", parent="purchaseCreditMemos"),
    "customerPaymentJournals": _Mirror("journals", lines="customerPayments"),
    "vendorPaymentJournals": _Mirror("journals", lines="vendorPayments"),
    "customerPayments": _Mirror("journalLines", parent="customerPaymentJournals"),
    "vendorPayments": _Mirror("journalLines", parent="vendorPaymentJournals"),
}
# Properties of other derived sets that BC computes or looks up (UNCONFIRMED: our reading of
# what the property holds; BC's $metadata does not say). "*" marks every property but those
# listed under "writable".
_COMPUTED: Mapping[str, frozenset[str]] = {
    "attachments": frozenset({"byteSize"}),  # the size of the uploaded content
    "documentAttachments": frozenset({"byteSize"}),
    "pictures": frozenset({"parentType", "width", "height", "contentType"}),  # from the content
    "customerContacts": frozenset({"customerName"}),
    "opportunities": frozenset({"contactName", "contactCompanyName", "calculatedCurrentValue"}),
    # the dimension's and the value's names, looked up from their codes
    "dimensionSetLines": frozenset(
        {"displayName", "consolidationCode", "valueConsolidationCode", "valueDisplayName"}
    ),
    "externaleventsubscriptions": frozenset({"userId", "companyName"}),
}
# Sets whose only writable properties are these (applying entries: BC's page lets a payment
# mark a vendor ledger entry as applied, and nothing else).
_WRITABLE_ONLY: Mapping[str, frozenset[str]] = {"applyVendorEntries": frozenset({"applied"})}
# Natural keys of derived sets that BC numbers from a number series when a POST leaves them out
# (UNCONFIRMED series: BC's demo data uses these shapes).
_DERIVED_SERIES: Mapping[str, str] = {
    "bankAccounts": "B00010",
    "fixedAssets": "FA000010",
    "opportunities": "OP000010",
    "projects": "J00010",
}


def decode_member(name: str) -> str:
    """An enum member as the EDMX names it -> as the catalog holds it: ``_x0020_`` -> ``" "``."""
    return _ESCAPED.sub(lambda match: chr(int(match.group(1), 16)), name)


def encode_member(option: str) -> str:
    """The reverse of `decode_member`: an option as an EDMX member name."""
    return _NOT_IN_A_NAME.sub(lambda match: f"_x{ord(match.group()):04X}_", option)


@cache
def _reference() -> dict[str, Any]:
    text = resources.files("bcbridge").joinpath("catalog_reference.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _target_key(target: str | None) -> str | None:
    entry = _reference()["entitySets"].get(target) if target else None
    return entry["key"][0] if entry is not None and len(entry["key"]) == 1 else None


def _reference_field(prop: dict[str, Any]) -> Field:
    edm: str = prop["type"]
    if edm.startswith(_COLLECTION):
        return Field(prop["name"], FieldType.COLLECTION, read_only=True, edm_type=edm)
    if edm.startswith(_NAV_PREFIX):
        members = _reference()["enums"][edm.removeprefix(_NAV_PREFIX)]
        options = tuple(decode_member(member) for member in members)
        return Field(prop["name"], FieldType.ENUM, options=options, edm_type=edm)
    kind = _EDM_TYPES[edm]
    return Field(
        prop["name"],
        kind,
        read_only=prop["name"] in _SERVER_SET,
        max_length=prop.get("maxLength") if kind is FieldType.STRING else None,
        edm_type=edm if edm == "Edm.Int64" else None,
    )


def _reference_navigations(
    entry: dict[str, Any], fields: set[str], present: set[str]
) -> tuple[Navigation, ...]:
    """BC's single-valued navigations that point at a record's key through one of this set's
    fields: the ones the emulator can follow. Collections are added by
    `_with_back_references`, which knows the targets."""
    found: list[Navigation] = []
    for nav in entry["navigations"]:
        target, constraints = nav.get("target"), nav.get("constraints", {})
        if nav["many"] or target is None or nav["name"] in present:
            continue
        key = _target_key(target)
        via = next((mine for mine, theirs in constraints.items() if theirs == key), None)
        if via is None and constraints == {"id": "parentId"} and key == "id":
            # documents(..)/pdfDocument: BC links it by the pdfDocument's parentId, and
            # Microsoft's example answer (api/dynamics_pdfdocument_get.md) shows its id equal to
            # that parentId, so the document's id finds it (one example: not confirmed further)
            via = "id"
        if via in fields:
            found.append(Navigation(nav["name"], target, via))
        elif via is None and len(constraints) == 1:
            # a link by another field than the target's key (shortcutDimension1Code = code)
            ((mine, theirs),) = constraints.items()
            if mine in fields and theirs in _property_names(target):
                found.append(Navigation(nav["name"], target, mine, key=theirs))
    return tuple(found)


def _property_names(set_name: str) -> set[str]:
    entry = _reference()["entitySets"].get(set_name)
    return {p["name"] for p in entry["properties"]} if entry else set()


def _derived(name: str, entry: dict[str, Any], scope: Scope) -> EntitySet:
    props = entry["properties"]
    # Streams are content, not part of a record.
    fields = tuple(_reference_field(p) for p in props if p["type"] != _STREAM)
    types = {p["name"]: p["type"] for p in props}
    return EntitySet(
        name,
        entry["entityType"],
        operations=frozenset(Operation(method) for method in entry["operations"]),
        actions=tuple(entry["actions"]),
        fields=fields,
        navigations=_reference_navigations(entry, {f.name for f in fields}, set()),
        scope=scope,
        key=entry["key"][0],
        key_is_string=types.get(entry["key"][0]) == "Edm.String",
        composite_key=tuple(entry["key"]) if len(entry["key"]) > 1 else (),
        streams=tuple(p["name"] for p in props if p["type"] == _STREAM),
        derived=True,
    )


def _with_write_rules(entity_set: EntitySet, by_name: Mapping[str, EntitySet]) -> EntitySet:
    """A derived set with BC's rules for writing it, as far as they are known: its mirror's
    (`_MIRRORS`), the computed properties (`_COMPUTED`, `_WRITABLE_ONLY`), its natural key and
    number series. Hand-written sets are returned as they are."""
    if not entity_set.derived:
        return entity_set
    name = entity_set.name
    mirror = _MIRRORS.get(name)
    like = by_name[mirror.like] if mirror else None
    read_only = set(_COMPUTED.get(name, ()))
    if like is not None:
        read_only |= {f.name for f in like.fields if f.read_only}
    if name in _WRITABLE_ONLY:
        read_only |= set(entity_set.field_names) - _WRITABLE_ONLY[name]
    fields = tuple(
        dataclasses.replace(f, read_only=True) if f.name in read_only else f
        for f in entity_set.fields
    )
    names = {f.name for f in fields}
    natural = next((key for key in ("number", "code") if key in names), None)
    changes: dict[str, Any] = {"fields": fields, "natural_key": natural}
    if name in _DERIVED_SERIES:
        changes["number_series"] = _DERIVED_SERIES[name]
    if mirror is not None and like is not None:
        changes.update(
            natural_key=like.natural_key,
            required_one_of=like.required_one_of,
            number_series=mirror.number_series,
            lines=mirror.lines,
        )
        if mirror.parent:
            changes.update(parent=mirror.parent, parent_field=like.parent_field)
    return dataclasses.replace(entity_set, **changes)


def _refined(entity_set: EntitySet, entry: dict[str, Any] | None) -> EntitySet:
    """A hand-written set as BC declares it: without the properties BC lacks (and the links
    through them), with BC's type names, lengths and the navigations the emulator can follow;
    its rules (read-only, number series, required fields) stay as written."""
    if entry is None:
        return entity_set
    declared = {p["name"]: p for p in entry["properties"]}
    with_lengths = True
    fields = tuple(
        _as_declared(f, declared.get(f.name), with_lengths)
        for f in entity_set.fields
        if f.name in declared or entity_set.scope is Scope.ROOT
    )
    names = {f.name for f in fields}
    kept = tuple(nav for nav in entity_set.navigations if nav.many or nav.via in names)
    extra = _reference_navigations(entry, names, {nav.name for nav in kept})
    return dataclasses.replace(entity_set, fields=fields, navigations=kept + extra)


def _as_declared(field: Field, declared: dict[str, Any] | None, with_lengths: bool) -> Field:
    """`field` with the type name, enum members and length BC declares for it, where the kinds
    agree: an enum takes BC's members (as long as its first, the blank default, stays first); a
    read-only text BC declares as an enum becomes that enum."""
    edm = declared["type"] if declared else None
    if edm and edm.startswith(_NAV_PREFIX) and (field.type is FieldType.ENUM or field.read_only):
        members = tuple(map(decode_member, _reference()["enums"][edm.removeprefix(_NAV_PREFIX)]))
        same_default = not field.options or members[0] == field.options[0]
        options = members if same_default else field.options
        return dataclasses.replace(field, type=FieldType.ENUM, options=options, edm_type=edm)
    if field.type is FieldType.INT and edm == "Edm.Int64":
        return dataclasses.replace(field, edm_type=edm)
    if with_lengths and field.type is FieldType.STRING and edm == "Edm.String" and declared:
        return dataclasses.replace(field, max_length=declared.get("maxLength"))
    return field


def _with_back_references(sets: list[EntitySet], reference: dict[str, Any]) -> list[EntitySet]:
    """BC's collection navigations (``customers(..)/defaultDimensions``) whose target points
    back at the source's ``id`` through one field. The emulator scopes a collection by its
    target's `parent_field`, so a derived target that BC always reaches through the same field
    gets that field; a collection is added only where it agrees with the target's field."""
    by_name = {entity_set.name: entity_set for entity_set in sets}
    back: dict[str, set[str]] = {}
    for entry in reference.values():
        for nav in entry["navigations"]:
            constraints = nav.get("constraints", {})
            if nav["many"] and nav.get("target") and len(constraints) == 1:
                back.setdefault(nav["target"], set()).update(constraints.values())
    for name, fields in back.items():
        target = by_name.get(name)
        if target is not None and target.derived and len(fields) == 1:
            (field,) = fields
            if field in target.field_names:
                by_name[name] = dataclasses.replace(target, parent_field=field)
    for name, source in by_name.items():
        entry = reference.get(name)
        if entry is None or not source.fields or "id" not in source.field_names:
            continue
        present = {nav.name for nav in source.navigations}
        added = tuple(
            Navigation(nav["name"], nav["target"], theirs, many=True, key=mine)
            for nav in entry["navigations"]
            if nav["many"]
            and nav["name"] not in present
            and nav.get("target") in by_name
            and len(nav.get("constraints", {})) == 1
            for mine, theirs in nav["constraints"].items()
            if mine in source.field_names and by_name[nav["target"]].parent_field == theirs
        )
        if added:
            by_name[name] = dataclasses.replace(source, navigations=source.navigations + added)
    return list(by_name.values())


CATALOG: Mapping[str, EntitySet] = _build()


def complex_types() -> Mapping[str, tuple[tuple[str, str, bool], ...]]:
    """BC's complex types (``entityMetadataLabel``, ...): each property's name, EDM type and
    whether it may be null, from the reference."""
    return {
        name: tuple((p["name"], p["type"], p.get("nullable", True)) for p in props)
        for name, props in _reference().get("complexTypes", {}).items()
    }


def names() -> tuple[str, ...]:
    """The names of every entity set in the catalog."""
    return tuple(CATALOG)


def get(name: str) -> EntitySet:
    """The entity set `name`, or a ConfigError that lists the closest valid names."""
    try:
        return CATALOG[name]
    except KeyError:
        close = difflib.get_close_matches(name, CATALOG, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"unknown entity set {name!r}; {hint}valid names: {', '.join(CATALOG)}",
            field="entity",
        ) from None


def children(name: str) -> Iterator[EntitySet]:
    """Sets nested under `name` (its line sets)."""
    return (entity_set for entity_set in CATALOG.values() if entity_set.parent == name)


# --- what BC refuses in a write's body (bc-api.md §5, §7) --------------------------------------
# The one place that knows which values BC takes for a property and what it answers otherwise:
# the emulator answers with these refusals, and `bcbridge push --dry-run` predicts them. BC's
# codes are from bc-api.md §7; the message wordings are UNCONFIRMED (our best reading of BC).

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_EDM = {
    FieldType.GUID: "Edm.Guid",
    FieldType.STRING: "Edm.String",
    FieldType.INT: "Edm.Int32",
    FieldType.DECIMAL: "Edm.Decimal",
    FieldType.BOOL: "Edm.Boolean",
    FieldType.DATE: "Edm.Date",
    FieldType.DATETIME: "Edm.DateTimeOffset",
    FieldType.ENUM: "Edm.String",
    FieldType.COLLECTION: "Collection(Edm.String)",  # always named by `Field.edm_type`
}


def is_guid(text: str) -> bool:
    """`text` is a GUID in its 8-4-4-4-12 form (either case)."""
    return bool(_GUID.match(text))


def edm_type(field: Field) -> str:
    """The OData type BC gives the property in its metadata (`Edm.Int64`, a `Microsoft.NAV`
    enum type, ... where the reference says; else the one its FieldType stands for)."""
    return field.edm_type or _EDM[field.type]


@dataclass(frozen=True)
class Refusal:
    """BC's answer to a property it will not take in a POST or PATCH body: the property, BC's
    error code and message, and the HTTP status."""

    field: str
    code: str
    message: str
    status: int = 400


def refusal(
    entity_set: EntitySet,
    name: str,
    value: object,
    *,
    fields: Sequence[Field] | None = None,
    allow_read_only: Collection[str] = (),
) -> Refusal | None:
    """BC's refusal of `name: value` in a write to `entity_set`, or None when BC takes it.

    `fields` are the properties to check against (default: the set's own); `allow_read_only`
    names read-only properties this write may set (a line's documentId on a nested POST)."""
    known = {f.name: f for f in (entity_set.fields if fields is None else fields)}
    field = known.get(name)
    if field is None:
        return Refusal(
            name,
            "BadRequest",
            f"The property '{name}' does not exist on type 'Microsoft.NAV.{entity_set.entity}'. "
            "Make sure to only use property names that are defined by the type.",
        )
    if field.read_only and name not in allow_read_only:
        # BC's example wording (bc-api.md §5.2)
        return Refusal(name, "BadRequest_InvalidOperation", f"Control '{name}' is read-only.")
    return _value_refusal(field, value)


def _value_refusal(field: Field, value: object) -> Refusal | None:
    if value is None:
        return None  # BC blanks the property
    if not _has_type(field, value):
        return Refusal(
            field.name,
            "BadRequest",
            f"Cannot convert the literal '{value}' to the expected type '{edm_type(field)}' "
            f"of property '{field.name}'.",
        )
    if field.type is FieldType.GUID and not is_guid(str(value)):
        return Refusal(field.name, "Application_InvalidGUID", f"'{value}' is not a valid GUID.")
    if isinstance(value, str) and field.max_length is not None and len(value) > field.max_length:
        return Refusal(
            field.name,
            "Application_StringExceededLength",
            f"The length of the string is {len(value)}, but it must be less than or equal to "
            f"{field.max_length} characters. Value: {value}",
        )
    if field.type is FieldType.ENUM and value not in field.options:
        return Refusal(
            field.name,
            "Application_EvaluateException",
            f'The value "{value}" can\'t be evaluated into type {field.name}. Valid values: '
            + ", ".join(repr(option) for option in field.options),
        )
    return None


def _has_type(field: Field, value: object) -> bool:
    """Whether BC can read `value` as the property's type. JSON numbers and booleans only:
    a number written as a string ("2.5", as a CSV gives it) is refused. Whether BC takes one
    when the request says IEEE754Compatible=true is UNCONFIRMED; bcbridge never says so."""
    if field.type is FieldType.BOOL:
        return isinstance(value, bool)
    if field.type is FieldType.COLLECTION:
        return isinstance(value, list)
    if field.type is FieldType.INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if field.type is FieldType.DECIMAL:  # a Decimal (`convert: decimal`) is sent as a number
        return isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if not isinstance(value, str):
        return False
    if field.type is FieldType.DATE:
        return bool(_DATE.match(value)) and _parses(date.fromisoformat, value)
    if field.type is FieldType.DATETIME:
        iso = value.replace("Z", "+00:00")
        return bool(_DATETIME.match(value)) and _parses(datetime.fromisoformat, iso)
    return True


def _parses(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


# The BC API v2.0 entity sets that take webhook subscriptions (bc-api.md §9.2; BC's runtime API
# serves the same list as webhookSupportedResources): the loader's check and the emulator's rule
WEBHOOK_ENTITIES = (
    "accounts",
    "companyInformation",
    "countriesRegions",
    "currencies",
    "customerPaymentJournals",
    "customers",
    "dimensions",
    "employees",
    "generalLedgerEntries",
    "itemCategories",
    "items",
    "journals",
    "paymentMethods",
    "paymentTerms",
    "purchaseInvoices",
    "salesCreditMemos",
    "salesInvoices",
    "salesOrders",
    "salesQuotes",
    "shipmentMethods",
    "unitsOfMeasure",
    "vendors",
)
