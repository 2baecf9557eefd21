"""`$metadata`: the EDMX document generated from the catalog (one source of truth)."""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import quoteattr

from bcbridge.catalog import EntitySet, edm_type
from bcbridge.emulator.store import fields_of


def _entity_type(
    entity_set: EntitySet, known: set[str], by_name: dict[str, EntitySet]
) -> list[str]:
    lines = [
        f"<EntityType Name={quoteattr(entity_set.entity)}>",
        f"<Key><PropertyRef Name={quoteattr(entity_set.key)}/></Key>",
    ]
    for field in fields_of(entity_set):
        nullable = "false" if field.name == entity_set.key else "true"
        max_length = f' MaxLength="{field.max_length}"' if field.max_length else ""
        lines.append(
            f"<Property Name={quoteattr(field.name)} Type={quoteattr(edm_type(field))} "
            f'Nullable="{nullable}"{max_length}/>'
        )
    for nav in entity_set.navigations:
        if nav.target not in known:
            continue
        target = f"Microsoft.NAV.{by_name[nav.target].entity}"
        kind = f"Collection({target})" if nav.many else target
        extra = ' ContainsTarget="true"' if nav.many else ""
        lines.append(
            f"<NavigationProperty Name={quoteattr(nav.name)} Type={quoteattr(kind)}{extra}/>"
        )
    lines.append("</EntityType>")
    return lines


def edmx(entity_sets: Iterable[EntitySet]) -> str:
    sets = sorted(entity_sets, key=lambda s: s.name)
    by_name = {s.name: s for s in sets}
    known = set(by_name)
    body = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        "<edmx:DataServices>",
        '<Schema Namespace="Microsoft.NAV" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
    ]
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
    body += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(body)
