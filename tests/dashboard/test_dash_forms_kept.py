"""What the browser journey (tests/browser/test_br_journey.py) found wrong in the forms, checked
here without a browser: a new item's name is kept through "Load the client's companies" and
Preview (the form could not be sent again: its name is required), the company is then a list to
pick from, and a client's CA bundle has a field (a BC behind a private CA, the emulator's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bcbridge.testing import EmulatorControl
from tests.dashboard.conftest import open_dashboard
from tests.dashboard.test_dash_config import client_fields, empty_project, post_form
from tests.flows.conftest import CRONUS, FABRIKAM, emulator

IN_PROCESS = True  # the module's emulator (tests/flows/conftest.py) runs in this process
pytestmark = pytest.mark.anyio
__all__ = ["emulator"]  # the fixture this module uses


async def test_a_new_items_name_is_kept_and_its_company_picked_from_a_list(
    tmp_path: Path, emulator: EmulatorControl
) -> None:
    project = empty_project(tmp_path)
    async with open_dashboard(project, client_factory=emulator.client_for) as dashboard:
        await dashboard.sign_in()
        saved = await post_form(dashboard, "/clients/new", client_fields(emulator))
        assert saved.status_code == 303, saved.text
        incoming = {"name": "journey_items", "client": "bc", "entity": "items"}
        for action in ("companies", "preview"):
            page = await post_form(dashboard, "/incoming/new", {**incoming, "do": action})
            assert re.search(r'<input type="text" name="name" value="journey_items"', page.text)
        page = await post_form(dashboard, "/incoming/new", {**incoming, "do": "companies"})
        select = re.search(r'<select name="company".*?</select>', page.text, re.S)
        assert select, page.text
        options = re.findall(r'<option value="([^"]*)"', select.group(0).replace("&#39;", "'"))
        assert {CRONUS, FABRIKAM.replace("&", "&amp;")} <= set(options)
        picked = {**incoming, "company": CRONUS, "do": "companies"}
        page = await post_form(dashboard, "/incoming/new", picked)
        assert f'<option value="{CRONUS}" selected>' in page.text  # the choice stays picked


async def test_a_clients_ca_bundle_is_saved_from_its_field(
    tmp_path: Path, emulator: EmulatorControl
) -> None:
    project = empty_project(tmp_path)
    bundle = tmp_path / "private-ca.pem"
    bundle.write_bytes(Path(emulator.info.ca_bundle).read_bytes())
    async with open_dashboard(project, client_factory=emulator.client_for) as dashboard:
        await dashboard.sign_in()
        fields = client_fields(emulator, ca_bundle="private-ca.pem")
        saved = await post_form(dashboard, "/clients/new", fields)
        assert saved.status_code == 303, saved.text
        assert yaml.safe_load(project.read_text())["clients"]["bc"]["ca_bundle"] == "private-ca.pem"
        assert dashboard.service.project.clients["bc"].ca_bundle == bundle  # from the project
        page = await dashboard.client.get("/clients/edit/bc")
        assert 'name="ca_bundle" value="private-ca.pem"' in page.text
