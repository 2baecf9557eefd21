"""Renaming in the forms and the project settings: a renamed item takes the project file's
references to it along (checked by the loader), a renamed flow its runs, tasks and cursors in
the store (so nothing is sent again); a taken name or a file changed on disk is refused at the
form, with the store's state left as it was. The store's URL is edited on the Project page,
its password going to the .env."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import yaml

from tests.dashboard.conftest import GOOD, copy_project, open_dashboard, run_now
from tests.dashboard.test_dash_config import form_tokens, post_form
from tests.flows.conftest import write_project

pytestmark = pytest.mark.anyio

OTHER = '{"id": "3", "price": "4.5"}'


def field_errors(page: str, field: str) -> list[str]:
    found = re.findall(rf'<small class="field-error" id="error-{re.escape(field)}">([^<]*)<', page)
    return [html.unescape(message) for message in found]


async def test_a_renamed_flow_keeps_its_history_and_sends_nothing_again(tmp_path: Path) -> None:
    project = copy_project(tmp_path, [GOOD, OTHER])
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        await run_now(dashboard)
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
        tokens = await form_tokens(dashboard, "/flows/edit/copy")
        renamed = await dashboard.client.post(
            "/flows/rename/copy", data={**tokens, "new_name": "copy_v2"}
        )
        assert renamed.status_code == 303, renamed.text
        assert renamed.headers["location"] == "/flows/edit/copy_v2"
        flows = yaml.safe_load(project.read_text())["flows"]
        assert list(flows) == ["copy_v2"]
        assert list(dashboard.service.project.flows) == ["copy_v2"]
        store = dashboard.store
        assert [run["flow"] for run in store.runs("copy_v2")] == ["copy_v2"]
        assert store.count_tasks("copy_v2") == {"done": 2} and store.count_tasks("copy") == {}
        assert store.cursor("writer:copy_v2") and store.cursor("writer:copy") is None
        await run_now(dashboard, "copy_v2")  # the same records: found done, not written again
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


async def test_a_renamed_client_and_incoming_take_their_references_along(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "store": "sqlite:///state.db",
            "clients": {"bc": {"tenant_id": "t", "client_id": "c", "client_secret": "${S}"}},
            "incoming": {"customers": {"client": "bc", "entity": "customers"}},
            "flows": {"pull": {"from": "customers", "to": "out.jsonl"}},
        },
    )
    (tmp_path / ".env").write_text("S=some-secret-value\n")
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        dashboard.store.save_cursor("pull:customers", {"field": "lastModifiedDateTime"})
        for section, old, new in (("clients", "bc", "cronus"), ("incoming", "customers", "cust")):
            tokens = await form_tokens(dashboard, f"/{section}/edit/{old}")
            renamed = await dashboard.client.post(
                f"/{section}/rename/{old}", data={**tokens, "new_name": new}
            )
            assert renamed.status_code == 303, renamed.text
        data = yaml.safe_load(project.read_text())
        assert list(data["clients"]) == ["cronus"]
        assert data["incoming"] == {"cust": {"client": "cronus", "entity": "customers"}}
        assert data["flows"]["pull"]["from"] == "cust"
        assert dashboard.store.cursor("pull:cust") == {"field": "lastModifiedDateTime"}
        assert dashboard.store.cursor("pull:customers") is None


async def test_a_rename_refused_at_the_form_leaves_file_and_store_as_they_were(
    tmp_path: Path,
) -> None:
    project = copy_project(tmp_path, [GOOD])
    data = yaml.safe_load(project.read_text())
    data["flows"]["other"] = {"from": "in.jsonl", "to": "other.jsonl"}
    write_project(project, data)
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        await run_now(dashboard)
        before = project.read_text()
        tokens = await form_tokens(dashboard, "/flows/edit/copy")
        for new, expected in (("other", "already a flow named 'other'"), ("a b", "letters")):
            page = await dashboard.client.post(
                "/flows/rename/copy", data={**tokens, "new_name": new}
            )
            assert page.status_code in (409, 422)
            assert any(expected in error for error in field_errors(page.text, "new_name")), new
        project.write_text(before + "# changed by hand\n")  # the form's version is stale now
        page = await dashboard.client.post(
            "/flows/rename/copy", data={**tokens, "new_name": "copy_v2"}
        )
        assert page.status_code == 409
        assert "changed on disk" in " ".join(field_errors(page.text, "new_name"))
        assert project.read_text() == before + "# changed by hand\n"
        assert dashboard.store.count_tasks("copy") == {"done": 1}  # moved back
        assert dashboard.store.count_tasks("copy_v2") == {}


async def test_the_store_url_is_edited_on_the_project_page(tmp_path: Path) -> None:
    project = copy_project(tmp_path, [GOOD])
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        page = await dashboard.client.get("/project")
        assert 'name="store" value="sqlite:///state.db"' in page.text
        url = "postgresql+psycopg://bcb:pw-9f8e7d6c@db.example/bcbridge"
        saved = await post_form(dashboard, "/project", {"store": url})
        assert saved.status_code == 303, saved.text
        text = project.read_text()
        assert "pw-9f8e7d6c" not in text and "${BCBRIDGE_STORE_PASSWORD}" in text
        assert "pw-9f8e7d6c" in (tmp_path / ".env").read_text()
        page = await dashboard.client.get("/project")
        assert "pw-9f8e7d6c" not in page.text and "restart" in page.text
        assert "sqlite:///state.db" in page.text  # still the store in use

        refused = await post_form(dashboard, "/project", {"store": "nosuchdb://x"})
        assert refused.status_code == 422
        assert 'class="form-error"' in refused.text
