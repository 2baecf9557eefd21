"""The catalog's reference data: derived from BC's $metadata by scripts/derive_catalog.py, then
read by the catalog for the sets it does not write out."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from bcbridge import catalog
from bcbridge.catalog import FieldType, Operation

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "derive_catalog.py"

# A tiny document in the shape of BC's $metadata (written for this test).
EDMX = b"""<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
<edmx:DataServices>
<Schema Namespace="Microsoft.NAV" xmlns="http://docs.oasis-open.org/odata/ns/edm">
<EnumType Name="widgetKind"><Member Name="_x0020_" Value="0"/><Member Name="Non_x002D_Stock"
 Value="1"/></EnumType>
<EntityType Name="widget"><Key><PropertyRef Name="id"/></Key>
<Property Name="id" Type="Edm.Guid" Nullable="false"/>
<Property Name="code" Type="Edm.String" MaxLength="20"/>
<Property Name="kind" Type="Microsoft.NAV.widgetKind"/>
<Property Name="ownerId" Type="Edm.Guid"/>
<NavigationProperty Name="owner" Type="Microsoft.NAV.owner">
<ReferentialConstraint Property="ownerId" ReferencedProperty="id"/></NavigationProperty>
</EntityType>
<EntityType Name="owner"><Key><PropertyRef Name="id"/></Key>
<Property Name="id" Type="Edm.Guid" Nullable="false"/>
<NavigationProperty Name="widgets" Type="Collection(Microsoft.NAV.widget)" ContainsTarget="true">
<ReferentialConstraint Property="id" ReferencedProperty="ownerId"/></NavigationProperty>
</EntityType>
<Action Name="polish" IsBound="true"><Parameter Name="bindingParameter"
 Type="Microsoft.NAV.widget"/></Action>
<EntityContainer Name="NAV">
<EntitySet Name="widgets" EntityType="Microsoft.NAV.widget">
<Annotation Term="Org.OData.Capabilities.V1.InsertRestrictions"><Record>
<PropertyValue Property="Insertable" Bool="true"/></Record></Annotation>
<Annotation Term="Org.OData.Capabilities.V1.DeleteRestrictions"><Record>
<PropertyValue Property="Deletable" Bool="false"/></Record></Annotation>
</EntitySet>
<EntitySet Name="owners" EntityType="Microsoft.NAV.owner"/>
</EntityContainer>
</Schema></edmx:DataServices></edmx:Edmx>"""


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("derive_catalog", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_reads_sets_types_operations_and_actions(script: ModuleType) -> None:
    reference = script.derive(EDMX)
    widgets = reference["entitySets"]["widgets"]
    assert widgets["entityType"] == "widget" and widgets["key"] == ["id"]
    assert widgets["operations"] == ["GET", "POST"]  # delete refused, update not annotated
    assert widgets["actions"] == ["polish"]
    assert widgets["properties"][1] == {"name": "code", "type": "Edm.String", "maxLength": 20}
    assert widgets["navigations"] == [
        {
            "name": "owner",
            "type": "owner",
            "many": False,
            "target": "owners",
            "constraints": {"ownerId": "id"},
        }
    ]
    assert reference["entitySets"]["owners"]["operations"] == ["GET"]  # no annotations
    assert reference["enums"]["widgetKind"] == ["_x0020_", "Non_x002D_Stock"]


def test_the_script_refuses_a_document_that_is_not_bcs(script: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"Microsoft\.NAV"):
        script.derive(EDMX.replace(b'Namespace="Microsoft.NAV"', b'Namespace="Other"'))


def test_the_script_check_mode_sees_a_stale_output(script: ModuleType, tmp_path: Path) -> None:
    source, output = tmp_path / "metadata.xml", tmp_path / "reference.json"
    source.write_bytes(EDMX)
    assert script.main([str(source), "-o", str(output), "--check"]) == 1
    assert script.main([str(source), "-o", str(output)]) == 0
    assert script.main([str(source), "-o", str(output), "--check"]) == 0


@pytest.mark.parametrize("option", [" ", "Non-Inventory", "G/L Account", "Expired ", "Open"])
def test_enum_members_round_trip(option: str) -> None:
    member = catalog.encode_member(option)
    assert member.replace("_", "").isalnum()
    assert catalog.decode_member(member) == option


def test_an_undescribed_set_takes_bcs_properties_but_no_write_rules() -> None:
    bank_accounts = catalog.get("bankAccounts")
    assert bank_accounts.derived and not bank_accounts.described
    assert bank_accounts.field("number").max_length == 20
    assert bank_accounts.field("id").read_only
    assert bank_accounts.allows(Operation.POST)
    pictures = catalog.get("pictures")
    assert pictures.entity == "picture" and pictures.streams == ("pictureContent",)
    assert not pictures.allows(Operation.POST) and pictures.allows(Operation.PATCH)
    parent_type = pictures.field("parentType")
    assert parent_type.type is FieldType.ENUM
    assert parent_type.edm_type == "Microsoft.NAV.pictureEntityParentType"
    assert "picture" not in catalog.CATALOG


def test_hand_written_sets_take_bcs_type_names_and_navigations() -> None:
    customers = catalog.get("customers")
    assert not customers.derived and customers.described
    assert customers.field("type").edm_type == "Microsoft.NAV.contactType"
    assert customers.field("type").options == ("Company", "Person")  # as written
    assert customers.field("website").max_length == 80
    assert catalog.get("companies").field("timestamp").edm_type == "Edm.Int64"
    dimensions = customers.navigation("defaultDimensions")
    assert dimensions is not None and dimensions.many and dimensions.via == "parentId"
    assert catalog.get("defaultDimensions").parent_field == "parentId"
    location = catalog.get("salesOrderLines").navigation("location")
    assert location is not None and (location.target, location.via) == ("locations", "locationId")
