"""`$metadata`: the EDMX document generated from the catalog (one source of truth).

Shaped like BC's own: enums as ``Microsoft.NAV`` enum types, ``companies`` containing every set
under a company, and each set's insert/update/delete capability annotations saying what the
emulator accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import quoteattr

from bcbridge import catalog
from bcbridge.catalog import EntitySet, FieldType, Operation, Scope, edm_type, encode_member
from bcbridge.emulator.store import fields_of

_CAPABILITIES = (
    ("InsertRestrictions", "Insertable", Operation.POST),
    ("UpdateRestrictions", "Updatable", Operation.PATCH),
    ("DeleteRestrictions", "Deletable", Operation.DELETE),
)


def _entity_type(
    entity_set: EntitySet, known: set[str], by_name: dict[str, EntitySet]
) -> list[str]:
    key = entity_set.composite_key or (entity_set.key,)
    lines = [
        f"<EntityType Name={quoteattr(entity_set.entity)}>",
        "<Key>" + "".join(f"<PropertyRef Name={quoteattr(part)}/>" for part in key) + "</Key>",
    ]
    for field in fields_of(entity_set):
        nullable = "false" if field.name in key else "true"
        max_length = f' MaxLength="{field.max_length}"' if field.max_length else ""
        lines.append(
            f"<Property Name={quoteattr(field.name)} Type={quoteattr(edm_type(field))} "
            f'Nullable="{nullable}"{max_length}/>'
        )
    lines += [
        f'<Property Name={quoteattr(stream)} Type="Edm.Stream"/>' for stream in entity_set.streams
    ]
    for nav in entity_set.navigations:
        if nav.target not in known:
            continue
        target = f"Microsoft.NAV.{by_name[nav.target].entity}"
        kind = f"Collection({target})" if nav.many else target
        extra = ' ContainsTarget="true"' if nav.many else ""
        lines.append(
            f"<NavigationProperty Name={quoteattr(nav.name)} Type={quoteattr(kind)}{extra}/>"
        )
    if entity_set.name == "companies":  # companies({id})/<set> for every set under a company
        lines += [
            f"<NavigationProperty Name={quoteattr(s.name)} "
            f'Type="Collection(Microsoft.NAV.{s.entity})" ContainsTarget="true"/>'
            for s in by_name.values()
            if s.scope is Scope.COMPANY
        ]
    lines.append("</EntityType>")
    return lines


def _enum_types(sets: Iterable[EntitySet]) -> list[str]:
    """One EnumType per ``Microsoft.NAV`` enum the properties name (the first set naming it
    gives its members)."""
    members: dict[str, tuple[str, ...]] = {}
    for entity_set in sets:
        for field in entity_set.fields:
            if field.type is FieldType.ENUM and field.edm_type:
                members.setdefault(field.edm_type.removeprefix("Microsoft.NAV."), field.options)
    lines: list[str] = []
    for name, options in members.items():
        lines.append(f"<EnumType Name={quoteattr(name)}>")
        lines += [
            f'<Member Name={quoteattr(encode_member(option))} Value="{value}"/>'
            for value, option in enumerate(options)
        ]
        lines.append("</EnumType>")
    return lines


def _complex_types(sets: Iterable[EntitySet]) -> list[str]:
    """One ComplexType per complex type a property names, and those they name in turn."""
    known = catalog.complex_types()
    wanted = [
        _element_type(f.edm_type)
        for entity_set in sets
        for f in entity_set.fields
        if f.type is FieldType.COLLECTION and f.edm_type
    ]
    lines: list[str] = []
    done: set[str] = set()
    while wanted:
        name = wanted.pop(0)
        if name in done or name not in known:
            continue
        done.add(name)
        lines.append(f"<ComplexType Name={quoteattr(name)}>")
        for prop, edm, nullable in known[name]:
            null = "" if nullable else ' Nullable="false"'
            lines.append(f"<Property Name={quoteattr(prop)} Type={quoteattr(edm)}{null}/>")
            wanted.append(_element_type(edm))
        lines.append("</ComplexType>")
    return lines


def _element_type(edm: str) -> str:
    """``Collection(Microsoft.NAV.entityMetadataLabel)`` -> ``entityMetadataLabel``."""
    return edm.removeprefix("Collection(").removesuffix(")").removeprefix("Microsoft.NAV.")


def _capabilities(entity_set: EntitySet) -> list[str]:
    """What the set accepts, as BC's capability annotations. BC writes them inside its
    EntitySet element; here they target it from outside (the same meaning in CSDL), so the
    container keeps one line per set."""
    lines = [f'<Annotations Target="Microsoft.NAV.NAV/{entity_set.name}">']
    for term, flag, operation in _CAPABILITIES:
        allowed = "true" if entity_set.allows(operation) else "false"
        lines += [
            f'<Annotation Term="Org.OData.Capabilities.V1.{term}"><Record>',
            f'<PropertyValue Property="{flag}" Bool="{allowed}"/>',
            "</Record></Annotation>",
        ]
    lines.append("</Annotations>")
    return lines


def _with_subscriptions(sets: list[EntitySet]) -> list[EntitySet]:
    """BC declares ``subscriptions`` beside ``companies``; the emulator serves it from
    `bcbridge.emulator.webhooks` rather than from a table, so the served sets lack it."""
    names = {entity_set.name for entity_set in sets}
    if "companies" in names and "subscriptions" not in names:
        sets.append(catalog.get("subscriptions"))
    return sets


def edmx(entity_sets: Iterable[EntitySet]) -> str:
    sets = sorted(_with_subscriptions(list(entity_sets)), key=lambda s: s.name)
    by_name = {s.name: s for s in sets}
    known = set(by_name)
    body = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        "<edmx:DataServices>",
        '<Schema Namespace="Microsoft.NAV" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
    ]
    body += _enum_types(sets)
    body += _complex_types(sets)
    for entity_set in sets:
        body += _entity_type(entity_set, known, by_name)
    for entity_set in sets:
        for action in entity_set.actions:
            body += [
                f'<Action Name={quoteattr(action)} IsBound="true">',
                f'<Parameter Name="bindingParameter" Type="Microsoft.NAV.{entity_set.entity}"/>',
                "</Action>",
            ]
    body.append('<EntityContainer Name="NAV">')
    for entity_set in sets:
        body.append(
            f"<EntitySet Name={quoteattr(entity_set.name)} "
            f'EntityType="Microsoft.NAV.{entity_set.entity}"/>'
        )
    body.append("</EntityContainer>")
    for entity_set in sets:
        body += _capabilities(entity_set)
    body += ["</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(body)
