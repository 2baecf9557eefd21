"""The configuration pages: a client created through its form and granted access against the
(in-process) emulator, an incoming with its company picked from the live list and previewed, an
outgoing previewed against the catalog, a flow created and run; problems shown at their field,
a file changed on disk detected, the client secret never in a page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bcbridge.projectfile import ProjectFile
from bcbridge.store import RunStatus
from bcbridge.testing import EmulatorControl
from tests.dashboard.conftest import GOOD, Dashboard, copy_project, open_dashboard, run_now
from tests.flows.conftest import CRONUS, emulator, write_project

IN_PROCESS = True  # the module's emulator (tests/flows/conftest.py) runs in this process
pytestmark = pytest.mark.anyio
__all__ = ["emulator"]  # the fixture this module uses

PAGES = ("/clients", "/incoming", "/outgoing", "/flows", "/flows/new", "/clients/new")


def empty_project(folder: Path) -> Path:
    return write_project(folder / "bcbridge.yaml", {"store": "sqlite:///state.db"})


async def form_tokens(dashboard: Dashboard, page: str) -> dict[str, str]:
    """The CSRF token and the version of the form on `page`."""
    answer = await dashboard.client.get(page)
    assert answer.status_code == 200, answer.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', answer.text)
    version = re.search(r'name="version" value="([^"]*)"', answer.text)
    assert csrf and version, answer.text
    return {"csrf_token": csrf.group(1), "version": version.group(1)}


async def post_form(
    dashboard: Dashboard, page: str, fields: dict[str, Any], *, tokens: dict[str, str] | None = None
) -> httpx.Response:
    tokens = tokens or await form_tokens(dashboard, page)
    return await dashboard.client.post(page, data={**tokens, **fields})


def client_fields(emulator: EmulatorControl, **changes: str) -> dict[str, str]:
    info = emulator.info
    fields = {
        "name": "bc",
        "base_url": info.base_url,
        "authority_url": info.authority_url,
        "tenant_id": info.tenant_id,
        "environment": info.environment,
        "client_id": info.client_id,
        "client_secret": info.client_secret,
        "scopes": info.scope,
        "log_requests": "on",
        "do": "save",
    }
    return {**fields, **changes}


def field_error(page: str, field: str) -> str:
    found = re.search(rf'<small class="field-error" id="error-{re.escape(field)}">([^<]*)<', page)
    assert found, page
    return found.group(1)


async def test_the_seed_steps_from_a_client_to_a_flow_run(
    tmp_path: Path, emulator: EmulatorControl
) -> None:
    project = empty_project(tmp_path)
    canary = emulator.info.client_secret
    async with open_dashboard(project, client_factory=emulator.client_for) as dashboard:
        await dashboard.sign_in()
        saved = await post_form(dashboard, "/clients/new", client_fields(emulator))
        assert saved.status_code == 303, saved.text
        assert saved.headers["location"] == "/clients/edit/bc"
        page = await dashboard.client.get("/clients/edit/bc")
        assert "bc saved" in page.text and '<span class="secret-state">set</span>' in page.text
        assert "${BCBRIDGE_BC_CLIENT_SECRET}" in project.read_text()
        assert canary not in project.read_text()
        assert "bc" in dashboard.service.project.clients  # the service sees the new client

        tokens = await form_tokens(dashboard, "/clients/edit/bc")
        granted = await dashboard.client.post("/clients/grant/bc", data=tokens)
        assert "Access granted" in granted.text, granted.text
        assert f"<td>{CRONUS}</td>" in granted.text and "Expires" in granted.text
        assert "<td>API.ReadWrite.All</td>" in granted.text  # the roles of the token
        key = re.search(r"<th>Key</th><td><code>([^<]*)</code>", granted.text)
        assert key and "…" in key.group(1) and len(key.group(1)) < 20  # redacted, never whole

        incoming = {"name": "customers", "client": "bc", "entity": "customers"}
        companies = await post_form(dashboard, "/incoming/new", {**incoming, "do": "companies"})
        assert f'<option value="{CRONUS}">' in companies.text.replace("&#39;", "'")
        incoming |= {"company": CRONUS, "param_name": "$select", "param_value": "id,number"}
        preview = await post_form(dashboard, "/incoming/new", {**incoming, "do": "preview"})
        assert 'id="preview"' in preview.text and "<th>number</th>" in preview.text, preview.text
        fields = re.search(r'<div id="entity-fields">(.*?)</div>', preview.text, re.S)
        assert fields and "displayName" in fields.group(1) and "<option" not in fields.group(1)
        assert "customers" not in dashboard.service.project.incoming  # a preview saves nothing
        saved = await post_form(dashboard, "/incoming/new", {**incoming, "do": "save"})
        assert saved.status_code == 303, saved.text

        outgoing = {
            "name": "items",
            "client": "bc",
            "entity": "items",
            "action": "upsert",
            "key_field": "number",
            "company": CRONUS,
            "etag": "fetch",
        }
        sample = '{"number": "D-1", "displayName": "Desk", "inventory": 4}'
        shown = await post_form(
            dashboard, "/outgoing/new", {**outgoing, "sample": sample, "do": "preview"}
        )
        assert "The catalog accepts it" in shown.text, shown.text
        assert "Left out (read-only): inventory" in shown.text
        assert "&#34;displayName&#34;: &#34;Desk&#34;" in shown.text
        bad = '{"number": "D-2", "displayName": "' + "x" * 200 + '"}'
        refused = await post_form(
            dashboard, "/outgoing/new", {**outgoing, "sample": bad, "do": "preview"}
        )
        assert 'class="status-failed"' in refused.text and "displayName" in refused.text
        saved = await post_form(dashboard, "/outgoing/new", {**outgoing, "do": "save"})
        assert saved.status_code == 303, saved.text

        flow = {
            "name": "pull",
            "from": "customers",
            "transform": "- keep: [id, number]",
            "to": "out/customers.jsonl",
            "do": "save",
        }
        saved = await post_form(dashboard, "/flows/new", flow)
        assert saved.status_code == 303, saved.text
        assert "pull" in dashboard.service.project.flows
        fragment = await run_now(dashboard, "pull")
        assert "ok:" in fragment, fragment
        (run,) = dashboard.store.runs("pull")
        assert run["status"] == RunStatus.OK and run["counts"]["read"] > 0
        written = (tmp_path / "out" / "customers.jsonl").read_text().splitlines()
        assert len(written) == run["counts"]["read"] and '"displayName"' not in written[0]

        for page_path in (
            *PAGES,
            "/clients/edit/bc",
            "/incoming/edit/customers",
            "/outgoing/edit/items",
            "/flows/edit/pull",
        ):
            answer = await dashboard.client.get(page_path)
            assert answer.status_code == 200, page_path
            assert canary not in answer.text, page_path
        assert canary not in granted.text and canary not in preview.text


async def test_a_saved_secret_is_kept_unless_replaced(
    tmp_path: Path, emulator: EmulatorControl
) -> None:
    project = empty_project(tmp_path)
    async with open_dashboard(project, client_factory=emulator.client_for) as dashboard:
        await dashboard.sign_in()
        await post_form(dashboard, "/clients/new", client_fields(emulator))
        env = (tmp_path / ".env").read_text()
        edit = client_fields(emulator, environment="sandbox")
        del edit["name"], edit["client_secret"]
        saved = await post_form(dashboard, "/clients/edit/bc", edit)
        assert saved.status_code == 303, saved.text
        assert (tmp_path / ".env").read_text() == env  # the secret as it was
        assert "environment: sandbox" in project.read_text()
        replaced = await post_form(
            dashboard, "/clients/edit/bc", {**edit, "client_secret": "the-new-one"}
        )
        assert replaced.status_code == 303
        assert "the-new-one" in (tmp_path / ".env").read_text()
        page = await dashboard.client.get("/clients/edit/bc")
        assert "the-new-one" not in page.text


async def test_invalid_input_is_shown_at_its_field_and_nothing_is_written(
    tmp_path: Path, emulator: EmulatorControl
) -> None:
    project = empty_project(tmp_path)
    async with open_dashboard(project, client_factory=emulator.client_for) as dashboard:
        await dashboard.sign_in()
        before = project.read_text()
        answer = await post_form(
            dashboard, "/clients/new", client_fields(emulator, base_url="not a url")
        )
        assert answer.status_code == 422
        assert "https://" in field_error(answer.text, "base_url")
        assert 'value="not a url"' in answer.text  # what was typed is kept
        assert emulator.info.client_secret not in answer.text  # the secret is not
        assert project.read_text() == before

        await post_form(dashboard, "/clients/new", client_fields(emulator))
        answer = await post_form(
            dashboard,
            "/incoming/new",
            {"name": "c", "client": "bc", "entity": "custmers", "company": CRONUS},
        )
        assert answer.status_code == 422
        assert "customers" in field_error(answer.text, "entity")  # the closest name offered

        answer = await post_form(
            dashboard,
            "/flows/new",
            {"name": "f", "from": "a.jsonl", "to": "b.jsonl", "transform": "- keep: [id"},
        )
        assert answer.status_code == 422
        assert "not valid YAML" in field_error(answer.text, "transform")
        answer = await post_form(
            dashboard,
            "/flows/new",
            {"name": "f", "from": "a.jsonl", "to": "b.jsonl", "transform": "- frobnicate: 1"},
        )
        assert answer.status_code == 422 and field_error(answer.text, "transform")
        answer = await post_form(
            dashboard,
            "/flows/new",
            {"name": "f", "from": "a.jsonl", "to": "b.jsonl", "schedule": "every tuesday"},
        )
        assert answer.status_code == 422 and field_error(answer.text, "schedule")
        assert "flows:" not in project.read_text()


async def test_a_file_changed_since_the_form_was_opened_is_a_conflict(
    tmp_path: Path, emulator: EmulatorControl
) -> None:
    project = empty_project(tmp_path)
    async with open_dashboard(project, client_factory=emulator.client_for) as dashboard:
        await dashboard.sign_in()
        await post_form(dashboard, "/clients/new", client_fields(emulator))
        tokens = await form_tokens(dashboard, "/clients/edit/bc")
        editor = ProjectFile(project)  # another editor (the CLI, a person) saves meanwhile
        editor.put("flows", "other", {"from": "a.jsonl", "to": "b.jsonl"}, version=editor.version())
        edit = client_fields(emulator, environment="sandbox")
        del edit["name"]
        answer = await post_form(dashboard, "/clients/edit/bc", edit, tokens=tokens)
        assert answer.status_code == 409
        assert "changed on disk since you opened it: reload" in answer.text
        assert "sandbox" not in project.read_text() and "other:" in project.read_text()


async def test_every_form_post_needs_the_csrf_token(tmp_path: Path) -> None:
    async with open_dashboard(empty_project(tmp_path)) as dashboard:
        await dashboard.sign_in()
        for page in (
            "/clients/new",
            "/incoming/new",
            "/outgoing/new",
            "/flows/new",
            "/clients/grant/bc",
        ):
            answer = await dashboard.client.post(page, data={"name": "x", "do": "save"})
            assert answer.status_code == 403, page
        assert "clients:" not in (tmp_path / "bcbridge.yaml").read_text()


async def test_the_actions_offered_are_the_entitys(tmp_path: Path) -> None:
    async with open_dashboard(empty_project(tmp_path)) as dashboard:
        await dashboard.sign_in()
        tokens = await form_tokens(dashboard, "/outgoing/new")
        answer = await dashboard.client.post(
            "/outgoing/new",
            data={**tokens, "entity": "salesInvoices", "action": "", "do": "preview"},
        )
        offered = re.findall(r'<datalist id="actions">(.*?)</datalist>', answer.text)[0]
        assert 'value="upsert"' in offered and 'value="post"' in offered


async def test_grant_access_shows_entras_error_with_the_clis_hint(
    tmp_path: Path, emulator: EmulatorControl
) -> None:
    async with open_dashboard(
        empty_project(tmp_path), client_factory=emulator.client_for
    ) as dashboard:
        await dashboard.sign_in()
        await post_form(dashboard, "/clients/new", client_fields(emulator, client_secret="wrong"))
        tokens = await form_tokens(dashboard, "/clients/edit/bc")
        answer = await dashboard.client.post("/clients/grant/bc", data=tokens)
        error = re.search(r'id="grant-error">([^<]*)<', answer.text)
        assert error and "AADSTS7000215" in error.group(1) and "Hint:" in error.group(1)
        assert "Access granted" not in answer.text


async def test_a_schedule_saved_in_the_dashboard_is_run_by_the_scheduler(tmp_path: Path) -> None:
    project = copy_project(tmp_path, [GOOD])
    async with open_dashboard(project) as dashboard:
        service = dashboard.service
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(service.schedule)
            await anyio.sleep(0.2)  # the scheduler has planned the project: nothing to run
            await dashboard.sign_in()
            saved = await post_form(
                dashboard,
                "/flows/edit/copy",
                {"from": "in.jsonl", "to": "out.jsonl", "schedule": "1s"},
            )
            assert saved.status_code == 303, saved.text
            with anyio.fail_after(15):
                while len(dashboard.store.runs("copy")) < 2:
                    await anyio.sleep(0.1)
            service.stop.set()


async def test_a_certificate_replaces_the_secret(tmp_path: Path, emulator: EmulatorControl) -> None:
    project = empty_project(tmp_path)
    (tmp_path / "app.pem").write_text("not read until a token is asked for\n")
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        await post_form(dashboard, "/clients/new", client_fields(emulator))
        edit = client_fields(
            emulator, certificate_key_path="app.pem", certificate_thumbprint="AB12"
        )
        del edit["name"], edit["client_secret"]
        saved = await post_form(dashboard, "/clients/edit/bc", edit)
        assert saved.status_code == 303, saved.text
        written = project.read_text()
        assert "private_key_path: app.pem" in written and "client_secret" not in written
        assert "BCBRIDGE_BC_CLIENT_SECRET" not in (tmp_path / ".env").read_text()
        page = await dashboard.client.get("/clients/edit/bc")
        assert 'value="app.pem"' in page.text and 'class="secret-state"' not in page.text
        missing = await post_form(
            dashboard, "/clients/edit/bc", {**edit, "certificate_key_path": "gone.pem"}
        )
        assert missing.status_code == 422 and "gone.pem" in field_error(missing.text, "certificate")


async def test_the_catalog_lists_follow_the_entity_typed(tmp_path: Path) -> None:
    async with open_dashboard(empty_project(tmp_path)) as dashboard:
        await dashboard.sign_in()
        actions = await dashboard.client.get("/catalog/actions?entity=salesInvoices")
        assert '<option value="post">' in actions.text
        read_only = await dashboard.client.get("/catalog/actions?entity=generalLedgerEntries")
        assert read_only.status_code == 200 and "<option" not in read_only.text  # GET only
        fields = await dashboard.client.get("/catalog/fields?entity=customers")
        assert "displayName" in fields.text and "fields</summary>" in fields.text
        assert (await dashboard.client.get("/catalog/fields?entity=nope")).text.strip() == ""


async def test_delete_is_refused_while_referred_to_and_names_are_checked(
    tmp_path: Path, emulator: EmulatorControl
) -> None:
    project = empty_project(tmp_path)
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        bad = await post_form(dashboard, "/clients/new", client_fields(emulator, name="a/b"))
        assert bad.status_code == 422 and "letters, digits" in field_error(bad.text, "name")
        await post_form(dashboard, "/clients/new", client_fields(emulator))
        incoming = {"name": "c", "client": "bc", "entity": "customers", "company": CRONUS}
        assert (await post_form(dashboard, "/incoming/new", incoming)).status_code == 303
        tokens = await form_tokens(dashboard, "/clients/edit/bc")
        refused = await dashboard.client.post("/clients/delete/bc", data=tokens)
        assert refused.status_code == 409, refused.text
        assert re.search(r'class="form-error" role="alert">[^<]*unknown client', refused.text)
        assert "clients:" in project.read_text()
        tokens = await form_tokens(dashboard, "/incoming/edit/c")
        gone = await dashboard.client.post("/incoming/delete/c", data=tokens)
        assert gone.status_code == 303 and gone.headers["location"] == "/incoming"
        tokens = await form_tokens(dashboard, "/clients/edit/bc")
        gone = await dashboard.client.post("/clients/delete/bc", data=tokens)
        assert gone.status_code == 303
        assert "  bc:" not in project.read_text() and "bc" not in dashboard.service.project.clients
        assert "BCBRIDGE_BC_CLIENT_SECRET" not in (tmp_path / ".env").read_text()


async def test_create_without_a_key_field_needs_allow_duplicates(
    tmp_path: Path, emulator: EmulatorControl
) -> None:
    project = empty_project(tmp_path)
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        await post_form(dashboard, "/clients/new", client_fields(emulator))
        outgoing = {"name": "o", "client": "bc", "entity": "items", "action": "create"}
        refused = await post_form(dashboard, "/outgoing/new", outgoing)
        assert refused.status_code == 422 and "allow_duplicates" in refused.text
        saved = await post_form(dashboard, "/outgoing/new", {**outgoing, "allow_duplicates": "on"})
        assert saved.status_code == 303, saved.text
        assert "allow_duplicates: true" in project.read_text()
        page = await dashboard.client.get("/outgoing/edit/o")
        assert re.search(r'name="allow_duplicates"\s+checked', page.text)
