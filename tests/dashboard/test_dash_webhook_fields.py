"""Webhooks in the dashboard: an incoming's trigger, reconcile and on_delete saved through its
form (comments kept, the loader's problems at their field), `serve:` through the Project page,
and the subscription state `bcbridge serve` keeps shown without its clientState."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bcbridge.flowconfig import load_project
from bcbridge.webhooks import SubscriptionRow, WebhookStore, client_state_digest
from tests.dashboard.conftest import open_dashboard
from tests.dashboard.test_dash_config import field_error, post_form

pytestmark = pytest.mark.anyio

PROJECT = """\
# the team's project: these comments must survive every save
store: sqlite:///state.db
incoming:
  # customers from CRONUS
  customers:
    entity: customers
    company: CRONUS
    cursor: lastModifiedDateTime  # read incrementally
flows:
  out:
    from: customers
    to: out.jsonl
"""
COMMENTS = ("# the team's project", "# customers from CRONUS", "# read incrementally")


def project_file(folder: Path, text: str = PROJECT) -> Path:
    path = folder / "bcbridge.yaml"
    path.write_text(text)
    return path


def incoming_fields(**changes: str) -> dict[str, Any]:
    fields = {
        "client": "default",
        "entity": "customers",
        "company": "CRONUS",
        "key": "",
        "params_transform": "",
        "page_size": "",
        "cursor": "lastModifiedDateTime",
        "trigger": "webhook",
        "reconcile": "30m",
        "on_delete": "ignore",
        "do": "save",
    }
    return {**fields, **changes}


async def test_the_incoming_form_saves_a_webhook_trigger_keeping_comments(tmp_path: Path) -> None:
    project = project_file(tmp_path)
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        page = await dashboard.client.get("/incoming/edit/customers")
        assert 'value="poll" checked' in page.text and "<details >" in page.text  # closed

        saved = await post_form(dashboard, "/incoming/edit/customers", incoming_fields())
        assert saved.status_code == 303, saved.text
        written = project.read_text()
        assert all(comment in written for comment in COMMENTS), written
        assert "trigger: webhook\n" in written and "reconcile: 30m\n" in written
        assert "on_delete: ignore\n" in written
        incoming = load_project(project).incoming["customers"]
        assert (incoming.trigger, incoming.reconcile, incoming.on_delete) == (
            "webhook",
            "30m",
            "ignore",
        )
        assert dashboard.service.project.incoming["customers"].trigger == "webhook"  # reloaded

        page = await dashboard.client.get("/incoming/edit/customers")
        assert 'value="webhook" checked' in page.text and "<details open>" in page.text
        assert 'value="ignore" selected' in page.text and 'value="30m"' in page.text
        listing = await dashboard.client.get("/incoming")
        assert "<th>Trigger</th>" in listing.text and "<td>webhook</td>" in listing.text
        assert "none yet" in listing.text  # no subscription: serve has made none

        # back to poll: the keys only a webhook incoming reads leave the file
        saved = await post_form(
            dashboard, "/incoming/edit/customers", incoming_fields(trigger="poll")
        )
        assert saved.status_code == 303, saved.text
        written = project.read_text()
        assert all(comment in written for comment in COMMENTS), written
        assert "trigger" not in written and "reconcile" not in written
        assert "on_delete" not in written
        assert "<td>poll</td>" in (await dashboard.client.get("/incoming")).text


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"entity": "contacts"}, "trigger", "BC sends no webhooks for 'contacts'"),
        ({"cursor": ""}, "cursor", "trigger: webhook needs cursor: lastModifiedDateTime"),
        ({"key": "x"}, "key", "a webhook incoming reads the whole entity set"),
        ({"reconcile": "often"}, "reconcile", "often"),
        ({"on_delete": "delete"}, "on_delete", "does not write to one with a key"),
        ({"trigger": "push"}, "trigger", "poll"),
    ],
)
async def test_the_loaders_webhook_problems_show_at_their_field(
    tmp_path: Path, changes: dict[str, str], field: str, expected: str
) -> None:
    project = project_file(tmp_path)
    before = project.read_text()
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        refused = await post_form(dashboard, "/incoming/edit/customers", incoming_fields(**changes))
        assert refused.status_code == 422, refused.text
        assert expected in field_error(refused.text.replace("&#39;", "'"), field)
        assert "<details open>" in refused.text  # the webhook settings stay in sight
        assert project.read_text() == before


async def test_the_project_page_saves_the_public_url_as_the_loader_checks_it(
    tmp_path: Path,
) -> None:
    project = project_file(tmp_path)
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        before = project.read_text()
        serve = {"part": "serve", "public_url": "hooks.example.com", "subscription_check_s": "30"}
        refused = await post_form(dashboard, "/project", serve)
        assert refused.status_code == 422, refused.text
        assert "not an absolute http(s) URL" in field_error(refused.text, "public_url")
        assert 'value="hooks.example.com"' in refused.text  # kept as typed
        refused = await post_form(
            dashboard, "/project", {**serve, "public_url": "https://x.example.com/?a=1"}
        )
        assert "without ?query" in field_error(refused.text, "public_url")
        refused = await post_form(
            dashboard,
            "/project",
            {**serve, "public_url": "https://x.example.com", "subscription_check_s": "soon"},
        )
        assert "a number of seconds" in field_error(refused.text, "subscription_check_s")
        refused = await post_form(
            dashboard,
            "/project",
            {**serve, "public_url": "https://x.example.com", "subscription_check_s": "-1"},
        )
        assert "more than 0" in field_error(refused.text, "subscription_check_s")
        assert project.read_text() == before

        saved = await post_form(
            dashboard, "/project", {**serve, "public_url": "https://hooks.example.com/"}
        )
        assert saved.status_code == 303, saved.text
        written = project.read_text()
        assert all(comment in written for comment in COMMENTS), written
        assert "store: sqlite:///state.db" in written  # the store's form was not the one sent
        settings = load_project(project).serve
        assert (settings.public_url, settings.subscription_check_s) == (
            "https://hooks.example.com",
            30,
        )
        page = await dashboard.client.get("/project")
        assert 'value="https://hooks.example.com/"' in page.text and 'value="30"' in page.text

        cleared = await post_form(
            dashboard, "/project", {"part": "serve", "public_url": "", "subscription_check_s": ""}
        )
        assert cleared.status_code == 303, cleared.text
        assert "serve" not in project.read_text()


async def test_the_subscription_state_shows_without_its_client_state(tmp_path: Path) -> None:
    hooked = PROJECT.replace("    cursor:", "    trigger: webhook\n    cursor:")
    project = project_file(tmp_path, hooked)
    canary = "canary-client-state-5f1e8a"  # what serve would have given BC as clientState
    subscription_id = "0f6c2b9e-33a1-4d7e-9c55-2a1e7f0b8d41"
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        renewed = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
        hooks = WebhookStore(dashboard.store)
        hooks.save_subscription(
            SubscriptionRow(
                incoming="customers",
                subscription_id=subscription_id,
                resource="api/v2.0/companies(1)/customers",
                notification_url="https://hooks.example.com/webhooks/customers",
                client_state_hash=client_state_digest(canary),
                etag='W/"1"',
                expires_at=renewed + timedelta(days=3),
                renewed_at=renewed,
            )
        )
        hooks.count_refused("customers", 7)

        listing = await dashboard.client.get("/incoming")
        assert "<code>0f6c2b9e…</code>" in listing.text, listing.text
        assert "2026-11-29 09:30:00 UTC" in listing.text  # expires
        assert "2026-11-26 09:30:00 UTC" in listing.text  # last renewal
        assert "<td>7</td>" in listing.text  # notifications refused for a wrong clientState
        form = await dashboard.client.get("/incoming/edit/customers")
        assert 'id="subscription"' in form.text and "7 notification(s) refused" in form.text

        secrets = (canary, client_state_digest(canary), subscription_id)
        for page in ("/incoming", "/incoming/edit/customers", "/project", "/flows", "/tasks"):
            answer = await dashboard.client.get(page)
            assert answer.status_code == 200, page
            assert not any(secret in answer.text for secret in secrets), page
