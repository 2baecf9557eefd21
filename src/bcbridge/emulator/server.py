"""Run the emulator: TLS files, identity, data, then uvicorn on a bound socket."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from bcbridge.emulator.app import EmulatorApp
from bcbridge.emulator.config import BC_SCOPE, EmulatorConfig
from bcbridge.emulator.identity import App, Identity
from bcbridge.emulator.seed import SeedProgress
from bcbridge.emulator.service import DataService
from bcbridge.emulator.tls import ensure_signing_key, ensure_tls


def build(
    config: EmulatorConfig, progress: SeedProgress | None = None
) -> tuple[EmulatorApp, dict[str, Any]]:
    tls = ensure_tls(config.state_dir)
    service = DataService(f"sqlite:///{config.data}" if config.data else None)
    if not service.companies():
        service.seed(config.seed, config.scale, progress)
    apps = [
        App(config.derived_id("app"), config.derived_secret("app"), enabled_in_bc=True),
        App(
            config.derived_id("disabled-app"),
            config.derived_secret("disabled-app"),
            enabled_in_bc=False,
        ),
    ]
    identity = Identity(
        config.tenant_id, apps, ensure_signing_key(config.state_dir), config.token_lifetime
    )
    info = {
        "tenant_id": config.tenant_id,
        "environment": config.environment,
        "scope": BC_SCOPE,
        "client_id": apps[0].client_id,
        "client_secret": apps[0].client_secret,
        "disabled_client_id": apps[1].client_id,
        "disabled_client_secret": apps[1].client_secret,
        "ca_bundle": str(tls.ca_cert.resolve()),
        "companies": service.companies(),
    }
    return EmulatorApp(config, service, identity), info


async def serve(
    config: EmulatorConfig,
    announce: Callable[[dict[str, Any]], None],
    progress: SeedProgress | None = None,
) -> None:
    app, info = build(config, progress)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((config.host, config.port))
    host, port = sock.getsockname()[:2]
    base = f"https://{host}:{port}"
    info = {"base_url": base, "authority_url": base, **info}
    info["api_root"] = f"{base}/v2.0/{info['tenant_id']}/{config.environment}/api/v2.0"
    app.info = info
    tls_dir = config.state_dir
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            ssl_certfile=str(tls_dir / "server.pem"),
            ssl_keyfile=str(tls_dir / "server-key.pem"),
            log_level="critical",  # dropped-connection faults would otherwise log as errors
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.02)
    announce(info)
    await task
    app.service.close()


def announce_json(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


def announce_progress(what: str, done: int, total: int) -> None:
    """A seeding step as a JSON line on stdout, before the announcement (`--progress`)."""
    sys.stdout.write(json.dumps({"seeding": what, "done": done, "total": total}) + "\n")
    sys.stdout.flush()


def run(
    config: EmulatorConfig,
    announce: Callable[[dict[str, Any]], None] = announce_json,
    progress: SeedProgress | None = None,
) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(config, announce, progress))
