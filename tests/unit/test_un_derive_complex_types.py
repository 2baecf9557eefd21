"""scripts/derive_catalog.py keeps BC's complex types (entityDefinitions' captions), and the
catalog serves a property of a collection type as a read-only JSON array."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from bcbridge import catalog
from bcbridge.catalog import FieldType

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "derive_catalog.py"
EDMX = b"""<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
<edmx:DataServices>
<Schema Namespace="Microsoft.NAV" xmlns="http://docs.oasis-open.org/odata/ns/edm">
<EntityType Name="shape"><Key><PropertyRef Name="shapeName"/></Key>
<Property Name="shapeName" Type="Edm.String" Nullable="false"/>
<Property Name="labels" Type="Collection(Microsoft.NAV.label)"/>
</EntityType>
<ComplexType Name="label"><Property Name="languageCode" Type="Edm.Int32" Nullable="false"/>
<Property Name="caption" Type="Edm.String" Nullable="false"/></ComplexType>
<EntityContainer Name="NAV"><EntitySet Name="shapes" EntityType="Microsoft.NAV.shape"/>
</EntityContainer>
</Schema></edmx:DataServices></edmx:Edmx>"""


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("derive_catalog_complex", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_complex_types_are_derived_and_rendered(script: ModuleType) -> None:
    reference = script.derive(EDMX)
    assert reference["complexTypes"] == {
        "label": [
            {"name": "languageCode", "type": "Edm.Int32", "nullable": False},
            {"name": "caption", "type": "Edm.String", "nullable": False},
        ]
    }
    shapes = reference["entitySets"]["shapes"]
    assert shapes["properties"][1] == {"name": "labels", "type": "Collection(Microsoft.NAV.label)"}
    assert json.loads(script.render(reference)) == reference


def test_a_collection_property_is_a_read_only_list() -> None:
    captions = catalog.get("entityDefinitions").field("entityCaptions")
    assert captions.type is FieldType.COLLECTION and captions.read_only
    assert captions.edm_type == "Collection(Microsoft.NAV.entityMetadataLabel)"
    assert catalog.complex_types()["entityMetadataLabel"] == (
        ("languageCode", "Edm.Int32", False),
        ("caption", "Edm.String", False),
    )
    assert catalog.refusal(catalog.get("entityDefinitions"), "entityCaptions", []) is not None
