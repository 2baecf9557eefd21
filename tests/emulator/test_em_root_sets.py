"""Sets BC serves at the API root, outside companies (from BC's $metadata): entityDefinitions,
apicategoryroutes, externaleventsubscriptions, externalbusinesseventdefinitions, and
subscriptions in the served $metadata."""

from __future__ import annotations

import httpx
import pytest

from bcbridge import catalog
from tests.emulator.conftest import assert_bc_error

ROOT_SETS = [
    "entityDefinitions",
    "apicategoryroutes",
    "externaleventsubscriptions",
    "externalbusinesseventdefinitions",
]


@pytest.mark.parametrize("name", ROOT_SETS)
def test_a_root_set_is_read_at_the_api_root(api: httpx.Client, name: str) -> None:
    listed = api.get(name)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["@odata.context"].endswith(f"/$metadata#{name}")
    assert isinstance(body["value"], list)


@pytest.mark.parametrize("name", ROOT_SETS)
def test_a_root_set_is_not_under_a_company(api: httpx.Client, company: str, name: str) -> None:
    assert_bc_error(api.get(f"{company}/{name}"), 404, "BadRequest_ResourceNotFound")


def test_read_only_root_sets_refuse_writes(api: httpx.Client) -> None:
    assert_bc_error(api.post("entityDefinitions", json={}), 405, "BadRequest_MethodNotAllowed")
    assert_bc_error(api.post("apicategoryroutes", json={}), 405, "BadRequest_MethodNotAllowed")


def test_metadata_declares_the_root_sets_and_subscriptions(api: httpx.Client) -> None:
    text = api.get("$metadata").text
    for name in [*ROOT_SETS, "subscriptions"]:
        entity = catalog.get(name).entity
        assert f'<EntitySet Name="{name}" EntityType="Microsoft.NAV.{entity}"/>' in text, name
    companies = text[text.index('<EntityType Name="company">') :].split("</EntityType>")[0]
    assert 'Name="entityDefinitions"' not in companies  # not contained in a company


def test_sets_only_microsofts_docs_list_are_not_served(api: httpx.Client, company: str) -> None:
    # Listed in Microsoft's API docs (bc-api.md 3.1) but not in BC's $metadata
    for name in ("approvalEntries", "workflowApprovers"):
        assert name not in catalog.CATALOG
        assert_bc_error(api.get(f"{company}/{name}"), 404, "BadRequest_ResourceNotFound")


def test_entity_definitions_carry_captions_of_bcs_complex_types(api: httpx.Client) -> None:
    found = api.get("entityDefinitions('salesInvoiceLine')")
    assert found.status_code == 200, found.text
    definition = found.json()
    assert definition["entitySetName"] == "salesInvoiceLines"
    assert definition["entitySetCaptions"] == [
        {"languageCode": 1033, "caption": "Sales Invoice Lines"}
    ]
    names = [prop["name"] for prop in definition["properties"]]
    assert names == list(catalog.get("salesInvoiceLines").field_names)
    text = api.get("$metadata").text
    assert '<ComplexType Name="entityMetadataLabel">' in text
    assert (
        '<Property Name="captions" Type="Collection(Microsoft.NAV.entityMetadataLabel)"/>' in text
    )
