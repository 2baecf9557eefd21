"""`bcbridge serve`: one process for one project: the web dashboard and the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import typer
import uvicorn

from bcbridge.cli._common import ctrl_c_stops, print_json, stderr
from bcbridge.cli._settings import fail
from bcbridge.errors import BCBridgeError, ConfigError
from bcbridge.flowconfig import find_config, load_project
from bcbridge.store import Store

if TYPE_CHECKING:
    from bcbridge.dashboard import FlowService
    from bcbridge.engine import EngineClient
    from bcbridge.webhooks import WebhookService

STOP_WAIT = 0.2  # seconds between looks at the stop event while serving


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: Ctrl-C and SIGTERM set the stop event that
    also stops the runs (`ctrl_c_stops`), and the server follows that event."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one line, and port 0 known."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}; "
            "pick another --port (0: a free one)"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(
    config: Path | None = typer.Option(
        None, "--config", help="Project file (default: $BCBRIDGE_CONFIG, else ./bcbridge.yaml)."
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. Another than this machine's (127.0.0.1, ::1, localhost) "
        "needs BCBRIDGE_DASHBOARD_PASSWORD set.",
    ),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port (0: a free one)."),
    json_output: bool = typer.Option(
        False,
        "--json",
        help='Print one JSON line once it accepts connections: {"url": ..., "login_url": ...}.',
    ),
    public_url: str | None = typer.Option(
        None,
        "--public-url",
        envvar="BCBRIDGE_PUBLIC_URL",
        help="Where BC reaches this server for webhooks (a reverse proxy or tunnel in front "
        "of it), e.g. https://bcbridge.example.com; default: serve.public_url of the project.",
    ),
) -> None:
    """The dashboard and the scheduler of one project, until Ctrl-C or SIGTERM.

    Flows with a `schedule:` run on time (a flow still running is not started again); the
    dashboard shows flows, runs and tasks, runs a flow now, retries and skips tasks. Sign in
    with the one-time login URL printed at start, or with the password in
    BCBRIDGE_DASHBOARD_PASSWORD. Ctrl-C or SIGTERM stops it: runs in flight finish their
    chunk first (a second Ctrl-C stops at once, exit code 130). Incoming with `trigger:
    webhook` get a BC subscription on <public_url>/webhooks/<incoming> (see README, Webhooks).

    Example: bcbridge serve --config examples/bcbridge.yaml --port 8080
    """
    from bcbridge.dashboard import PASSWORD_VARIABLE, FlowService, Sessions, create_app
    from bcbridge.dashboard.service import mask_secrets_in_logs
    from bcbridge.flowconfig import check_public_url
    from bcbridge.webhooks import WebhookService

    password = os.environ.get(PASSWORD_VARIABLE) or None
    try:
        if not is_loopback(host) and password is None:
            raise ConfigError(
                f"--host {host}: the dashboard is reachable from other machines there; set "
                f"{PASSWORD_VARIABLE} to sign in with a password, or listen on 127.0.0.1"
            )
        if public_url is not None:
            try:
                public_url = check_public_url(public_url)
            except ValueError as exc:
                raise ConfigError(f"--public-url: {exc}") from None
        project = load_project(find_config(config))
        store = Store(project.store)
    except BCBridgeError as exc:
        raise fail(exc) from None
    try:
        sock = _bind(host, port)
    except ConfigError as exc:
        store.close()
        raise fail(exc) from None
    stop = threading.Event()
    try:
        engine = _engine(project.engine, store)
    except BCBridgeError as exc:
        sock.close()
        store.close()
        raise fail(exc) from None
    service = FlowService(project, store, stop, engine=engine)
    hooks = WebhookService(service, public_url or project.serve.public_url)
    try:
        hooks.check_ready()
    except ConfigError as exc:
        sock.close()
        store.close()
        raise fail(exc) from None
    token = secrets.token_urlsafe(32)
    app = hooks.app(create_app(service, Sessions(password=password, login_token=token)))
    url = _url(host, sock.getsockname()[1])
    server = _Server(uvicorn.Config(app, log_level="warning", proxy_headers=True))
    mask_secrets_in_logs()  # after uvicorn's Config, which sets up its loggers
    announce = {"url": url, "login_url": f"{url}/login?token={quote(token)}"}
    try:
        with ctrl_c_stops(stop, (signal.SIGINT, signal.SIGTERM)):
            asyncio.run(_serve(server, sock, service, announce, json_output, hooks))
            if service.busy():
                stderr.print("stopping: waiting for the runs in flight to finish their chunk")
            service.join()
    finally:
        sock.close()
        if engine is not None:
            engine.close()
        store.close()


def _engine(kind: str, store: Store) -> EngineClient | None:
    """With `engine: procrastinate`, what defers the runs to `bcbridge worker`s."""
    if kind != "procrastinate":
        return None
    from bcbridge.engine import EngineClient

    return EngineClient(store)


async def _serve(
    server: uvicorn.Server,
    sock: socket.socket,
    service: FlowService,
    announce: dict[str, str],
    json_output: bool,
    hooks: WebhookService | None = None,
) -> None:
    """Serve until the stop event is set; the scheduler runs beside the server, and the
    webhooks' subscriptions and processing once it accepts connections (BC's handshake)."""
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    scheduler = asyncio.create_task(service.schedule())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    webhooks = asyncio.create_task(hooks.run()) if hooks and server.started else None
    if server.started:
        if json_output:
            print_json(announce, lines=True)
        else:
            stderr.print(f"bcbridge dashboard at {announce['url']} (Ctrl-C to stop)")
            stderr.print(f"sign in (once) at {announce['login_url']}", soft_wrap=True)
    while not service.stop.is_set() and not serving.done():
        await asyncio.sleep(STOP_WAIT)
    service.stop.set()
    server.should_exit = True
    await serving
    await scheduler
    if webhooks is not None:
        await webhooks


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
