"""Webhooks end to end: an emulator that notifies after 0.2 s, and `bcbridge serve`'s app
(receiver, subscriptions, processing, scheduler) on a real socket in a thread of this process,
so the emulator shakes hands with it and POSTs notifications to it over real HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from bcbridge.cli.serve import _bind, _serve, _Server
from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.dashboard import FlowService, Sessions, create_app
from bcbridge.engine import EngineClient
from bcbridge.flowconfig import load_project
from bcbridge.store import Store
from bcbridge.testing import EmulatorControl, InProcessEmulator
from bcbridge.webhooks import WebhookService, WebhookStore
from tests.flows.conftest import CRONUS, QUICK_RETRIES, write_project

DELAY_S = 0.2
# BC's 36 hours of retries pass 600 times faster: the first retry comes after 0.1 s
EMULATOR = {"webhook_delay_s": DELAY_S, "webhook_time_scale": 600.0}


@pytest.fixture(scope="module")
def emulator() -> Iterator[InProcessEmulator]:
    from bcbridge.testing import start_inprocess_emulator

    with start_inprocess_emulator(**EMULATOR) as running:
        yield running


@pytest.fixture
def api(emulator: InProcessEmulator) -> Iterator[httpx.Client]:
    """Raw calls to BC; at teardown no subscription is left for the next test."""
    with emulator.http_client() as client:
        yield client
        for item in client.get("subscriptions").json()["value"]:
            client.delete(f"subscriptions('{item['subscriptionId']}')", headers={"If-Match": "*"})
        emulator.configure(**EMULATOR, subscription_lifetime_s=3 * 86_400.0)
        emulator.clear_webhook_log()


@pytest.fixture
def bc_env(emulator: EmulatorControl, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in emulator.info.env().items():
        monkeypatch.setenv(name, value)


def project_file(
    folder: Path,
    port: int,
    target: Any = None,
    *,
    check_s: float = 0.3,
    chunk_size: int | None = None,
    store: str = "sqlite:///state.db",
    engine: str = "inline",
    **incoming: Any,
) -> Path:
    """A project: customers of CRONUS by webhook, written to out.jsonl (or `target`); serve
    looks at its subscriptions every `check_s` seconds."""
    flow: dict[str, Any] = {"from": "customers", "to": target or {"writer": "out.jsonl"}}
    if chunk_size is not None:
        flow["chunk_size"] = chunk_size
    return write_project(
        folder / "bcbridge.yaml",
        {
            "store": store,
            "engine": engine,
            "incoming": {
                "customers": {
                    "entity": "customers",
                    "company": CRONUS,
                    "cursor": "lastModifiedDateTime",
                    "trigger": "webhook",
                    **incoming,
                }
            },
            "flows": {"customers_out": flow},
            "serve": {"public_url": f"http://127.0.0.1:{port}", "subscription_check_s": check_s},
        },
    )


@dataclass
class Serving:
    """`bcbridge serve` running in a thread of this process."""

    folder: Path
    service: FlowService
    hooks: WebhookService
    thread: threading.Thread
    client_factory: Callable[[ClientSettings], BusinessCentralClient]

    @property
    def store(self) -> WebhookStore:
        return self.hooks.store

    def lines(self) -> list[dict[str, Any]]:
        path = self.folder / "out.jsonl"
        if not path.exists():
            return []
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is not a line yet
        return [orjson.loads(line) for line in complete.splitlines() if line.strip()]

    def versions(self) -> Counter[tuple[str, str]]:
        """How often each (id, displayName) reached the target."""
        return Counter((str(r.get("id")), str(r.get("displayName"))) for r in self.lines())

    def stop(self) -> None:
        self.service.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.service.engine is not None:
            self.service.engine.close()
        self.service.store.close()


def start_serving(
    folder: Path, emulator: EmulatorControl, target: Any = None, **options: Any
) -> Serving:
    """serve on the project of `project_file(..., **options)`; with `engine="procrastinate"`
    it defers its runs to workers, as `bcbridge serve` does."""
    sock = _bind("127.0.0.1", 0)
    project = load_project(project_file(folder, sock.getsockname()[1], target, **options))
    store = Store(project.store)
    engine = EngineClient(store) if project.engine == "procrastinate" else None

    def quick(settings: ClientSettings) -> BusinessCentralClient:
        retry = settings.retry.model_copy(update=QUICK_RETRIES)
        return emulator.client_for(settings.model_copy(update={"retry": retry}))

    service = FlowService(project, store, threading.Event(), client_factory=quick, engine=engine)
    hooks = WebhookService(service, project.serve.public_url)
    app = hooks.app(create_app(service, Sessions(password=None, login_token="unused")))
    server = _Server(uvicorn.Config(app, log_level="warning"))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    announce = {"url": url, "login_url": url}

    def serve() -> None:
        try:
            asyncio.run(_serve(server, sock, service, announce, True, hooks))
            service.join()
        finally:
            sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return Serving(folder, service, hooks, thread, quick)


@pytest.fixture
def serving(
    tmp_path: Path, emulator: InProcessEmulator, bc_env: None, api: httpx.Client
) -> Iterator[Callable[..., Serving]]:
    started: list[Serving] = []

    def start(target: Any = None, **options: Any) -> Serving:
        running = start_serving(tmp_path, emulator, target, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not in {timeout} s: {what or condition}")


def subscribed(running: Serving) -> str:
    """The subscription id, once serve has one in BC and its first reconciliation is done."""
    row = wait_for(
        lambda: (
            (found := running.store.subscription("customers")) and found.subscription_id and found
        ),
        what="a subscription",
    )
    wait_for(lambda: running.service.finished.get("customers_out"), what="the first pull")
    wait_for(lambda: not running.service.busy(), what="the first pull's end")
    return str(row.subscription_id)


def company_path(emulator: EmulatorControl) -> str:
    return f"companies({emulator.info.company_id()})"
