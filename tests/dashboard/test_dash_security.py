"""The dashboard's security: sign-in on every page, the one-time login token, the password,
CSRF on every state-changing request, the cookie's flags, the Content-Security-Policy, and no
secret of the project in any answer."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from bcbridge.cli import main
from bcbridge.dashboard import Sessions, create_app
from tests.dashboard.conftest import (
    BAD,
    GOOD,
    LOGIN_TOKEN,
    PASSWORD,
    Dashboard,
    copy_project,
    open_dashboard,
)
from tests.flows.conftest import write_project

pytestmark = pytest.mark.anyio


def _paths(dashboard: Dashboard) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, its parameters filled in."""
    app = create_app(dashboard.service, Sessions(password=None, login_token=None))
    found = []
    for route in app.routes:
        if isinstance(route, Mount):
            found.append(("GET", "/static/app.css"))
            continue
        assert isinstance(route, Route)
        path = route.path.replace("{name}", "copy").replace("{task_id:int}", "1")
        found += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


async def test_every_page_needs_sign_in(tmp_path: Path) -> None:
    async with open_dashboard(copy_project(tmp_path, [GOOD])) as dashboard:
        for method, path in _paths(dashboard):
            answer = await dashboard.client.request(method, path)
            if path == "/login" or path.startswith("/static/"):
                assert answer.status_code in (200, 403), (method, path)  # 403: no CSRF token
            elif method == "GET":
                assert answer.status_code == 303, (method, path)
                assert answer.headers["location"] == "/login"
            else:
                assert answer.status_code == 401, (method, path)


async def test_the_login_token_signs_in_once(tmp_path: Path) -> None:
    async with open_dashboard(copy_project(tmp_path, [GOOD])) as dashboard:
        await dashboard.sign_in()
        assert (await dashboard.client.get("/flows")).status_code == 200
        dashboard.client.cookies.clear()
        again = await dashboard.client.get(f"/login?token={LOGIN_TOKEN}")
        assert again.status_code == 200 and "used already" in again.text
        assert (await dashboard.client.get("/flows")).status_code == 303
        wrong = await dashboard.client.get("/login?token=guess")
        assert "used already or is not" in wrong.text


async def test_the_password_signs_in_and_a_wrong_one_does_not(tmp_path: Path) -> None:
    async with open_dashboard(copy_project(tmp_path, [GOOD]), password=PASSWORD) as dashboard:
        page = await dashboard.client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf and 'type="password"' in page.text
        form = {"csrf_token": csrf.group(1), "password": "wrong"}
        assert (await dashboard.client.post("/login", data=form)).status_code == 303
        assert (await dashboard.client.get("/flows")).status_code == 303  # still signed out
        form["password"] = PASSWORD
        signed = await dashboard.client.post("/login", data=form)
        assert signed.headers["location"] == "/flows"
        assert (await dashboard.client.get("/flows")).status_code == 200


async def test_a_state_changing_request_without_its_csrf_token_is_refused(tmp_path: Path) -> None:
    async with open_dashboard(copy_project(tmp_path, [GOOD, BAD])) as dashboard:
        await dashboard.sign_in()
        posts = [path for method, path in _paths(dashboard) if method == "POST"]
        assert len(posts) >= 7
        for path in posts:
            bare = await dashboard.client.post(path)
            assert bare.status_code == 403, path
            forged = await dashboard.client.post(path, data={"csrf_token": "forged"})
            assert forged.status_code == 403, path
            header = await dashboard.client.post(path, headers={"X-CSRF-Token": "forged"})
            assert header.status_code == 403, path
        assert dashboard.store.runs() == []  # Run now refused: nothing ran
        csrf = await dashboard.csrf()
        ran = await dashboard.client.post("/flows/copy/run", data={"csrf_token": csrf})
        assert ran.status_code == 303
        dashboard.wait_for_runs()
        assert len(dashboard.store.runs()) == 1


async def test_every_answer_has_a_csp_without_inline_script(tmp_path: Path) -> None:
    async with open_dashboard(copy_project(tmp_path, [GOOD])) as dashboard:
        answers = [await dashboard.client.get("/login"), await dashboard.client.get("/flows")]
        await dashboard.sign_in()
        for path in ("/flows", "/runs", "/tasks", "/runs/chart.json", "/static/app.js"):
            answers.append(await dashboard.client.get(path))
        for answer in answers:
            csp = answer.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
            assert answer.headers["x-content-type-options"] == "nosniff"
            for tag in re.findall(r"<script[^>]*>", answer.text):
                assert "src=" in tag, tag  # no inline script
            assert " on" not in " ".join(re.findall(r"<[a-z]+ [^>]*\bon[a-z]+=", answer.text))
            static = answer.url.path.startswith("/static/")
            assert (answer.headers["cache-control"] == "no-store") is not static


@pytest.mark.parametrize(
    ("base_url", "secure"), [("http://testserver", False), ("https://x", True)]
)
async def test_the_session_cookie_is_httponly_strict_and_secure_over_tls(
    tmp_path: Path, base_url: str, secure: bool
) -> None:
    async with open_dashboard(copy_project(tmp_path, [GOOD]), base_url=base_url) as dashboard:
        answer = await dashboard.client.get(f"/login?token={LOGIN_TOKEN}")
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert ("secure" in cookie) is secure


def test_a_non_loopback_address_needs_a_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BCBRIDGE_DASHBOARD_PASSWORD", raising=False)
    project = copy_project(tmp_path, [GOOD])
    with pytest.raises(SystemExit) as ended:
        main(["serve", "--config", str(project), "--host", "0.0.0.0", "--port", "0"])
    assert ended.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--host 0.0.0.0" in err and "BCBRIDGE_DASHBOARD_PASSWORD" in err


async def test_no_secret_of_the_project_in_any_page_or_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = f"CANARY-s3cr3t-{secrets.token_hex(8)}"
    monkeypatch.setenv("DASH_CANARY_SECRET", canary)
    module = f"dash_canary_{secrets.token_hex(4)}"
    (tmp_path / f"{module}.py").write_text(
        "import os\n\n\ndef step(record, context):\n"
        "    raise ValueError('rejected with ' + os.environ['DASH_CANARY_SECRET'])\n"
    )
    (tmp_path / "in.jsonl").write_text(f"{GOOD}\n{BAD}\n")
    client = {
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "${DASH_CANARY_SECRET}",
        "base_url": "https://127.0.0.1:1",
    }
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "store": "sqlite:///state.db",
            "clients": {"default": client},
            "incoming": {"customers": {"entity": "customers", "company": "C"}},
            "flows": {
                "leaky": {
                    "from": "in.jsonl",
                    "transform": [{"python": f"{module}:step"}],
                    "to": "out.jsonl",
                },
                "to_db": {
                    "from": "in.jsonl",
                    "to": {"writer": f"postgresql://u:{canary}@127.0.0.1:1/db#t", "key": "id"},
                },
                "from_bc": {"from": "customers", "to": "out/c.jsonl", "schedule": "1h"},
            },
        },
    )
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        csrf = await dashboard.csrf()
        for flow in ("leaky", "to_db", "from_bc"):
            await dashboard.client.post(f"/flows/{flow}/run", data={"csrf_token": csrf})
            dashboard.wait_for_runs(60)
        tasks = dashboard.store.tasks(limit=None)
        assert tasks and any(task.last_error for task in tasks)
        paths = ["/flows", "/runs", "/runs/chart.json", "/tasks", "/tasks?status=failed", "/login"]
        paths += [f"/flows/{flow}/progress" for flow in ("leaky", "to_db", "from_bc")]
        paths += [f"/tasks/{task.id}" for task in tasks]
        seen = 0
        for path in paths:
            answer = await dashboard.client.get(path)
            assert answer.status_code in (200, 303), path
            assert canary not in answer.text and "s3cr3t" not in answer.text, path
            assert canary not in str(answer.headers), path
            seen += len(answer.text)
        progress = await dashboard.client.get("/flows/to_db/progress")
        assert "error" in progress.text  # the writer's error is shown, its password masked
        assert seen > 5000


def test_sessions_are_bounded_and_the_least_recently_used_goes() -> None:
    from bcbridge.dashboard.security import MAX_SESSIONS, Sessions

    sessions = Sessions(password=None, login_token=None)
    kept, _ = sessions.new(signed_in=True)
    first, _ = sessions.new()
    for _ in range(MAX_SESSIONS):
        sessions.get(kept)  # in use: stays
        sessions.new()
    assert sessions.get(kept) is not None
    assert sessions.get(first) is None
    assert len(sessions._sessions) == MAX_SESSIONS
