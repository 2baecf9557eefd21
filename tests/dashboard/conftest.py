"""The dashboard in this process (its ASGI app through httpx.ASGITransport), on a project of
file->file flows in tmp_path; `bcbridge serve` processes where a real process matters."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bcbridge.dashboard import FlowService, Sessions, create_app
from bcbridge.flowconfig import load_project
from bcbridge.flows import ClientFactory
from bcbridge.store import Store
from tests.flows.conftest import write_project

LOGIN_TOKEN = "test-login-token"
PASSWORD = "correct horse battery staple"
GOOD = '{"id": "1", "price": "3.5"}'
BAD = '{"id": "2", "price": "12.5O"}'  # the letter O: the decimal conversion fails


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def copy_project(folder: Path, lines: list[str], *, transform: bool = True, **flow: Any) -> Path:
    """A project with one flow `copy`: in.jsonl (these lines) -> out.jsonl, its prices
    converted to decimals (a bad price fails its record)."""
    (folder / "in.jsonl").write_text("".join(f"{line}\n" for line in lines))
    steps = [{"convert": {"price": "decimal"}}] if transform else []
    copy = {"from": "in.jsonl", "transform": steps, "to": "out.jsonl", **flow}
    return write_project(
        folder / "bcbridge.yaml", {"store": "sqlite:///state.db", "flows": {"copy": copy}}
    )


@dataclass
class Dashboard:
    """A dashboard in this process: its service (runs, store) and an httpx client on it."""

    service: FlowService
    client: httpx.AsyncClient

    @property
    def store(self) -> Store:
        return self.service.store

    async def sign_in(self) -> None:
        answer = await self.client.get(f"/login?token={LOGIN_TOKEN}")
        assert answer.status_code == 303, answer.text

    async def csrf(self, page: str = "/flows") -> str:
        answer = await self.client.get(page)
        assert answer.status_code == 200, answer.text
        found = re.search(r'name="csrf_token" value="([^"]+)"', answer.text)
        assert found, answer.text
        return found.group(1)

    def wait_for_runs(self, timeout: float = 20) -> None:
        """Until no run is under way in the service."""
        deadline = time.monotonic() + timeout
        while any(self.service.running(name) for name in self.service.project.flows):
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.05)


@asynccontextmanager
async def open_dashboard(
    project: Path,
    *,
    password: str | None = None,
    base_url: str = "http://testserver",
    client_factory: ClientFactory | None = None,
) -> AsyncIterator[Dashboard]:
    config = load_project(project)
    store = Store(config.store)
    stop = threading.Event()
    service = FlowService(config, store, stop, client_factory=client_factory)
    app = create_app(service, Sessions(password=password, login_token=LOGIN_TOKEN))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield Dashboard(service, client)
    finally:
        stop.set()
        service.join(30)
        store.close()


@pytest.fixture
def dashboard_of() -> Iterator[Callable[..., Any]]:
    """`async with dashboard_of(project) as dashboard:` (an async context manager)."""
    yield open_dashboard


async def run_now(dashboard: Dashboard, flow: str = "copy") -> str:
    """Press Run now as htmx does; the progress fragment when the run has ended."""
    csrf = await dashboard.csrf()
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
    started = await dashboard.client.post(f"/flows/{flow}/run", headers=headers)
    assert started.status_code == 200
    # it polls while the flow runs (a run refused or already over shows its end at once)
    assert 'hx-trigger="load delay:1s"' in started.text or "aria-busy" not in started.text
    dashboard.wait_for_runs()
    done = await dashboard.client.get(f"/flows/{flow}/progress")
    assert "hx-trigger" not in done.text  # the polling stops once the run has ended
    return done.text
