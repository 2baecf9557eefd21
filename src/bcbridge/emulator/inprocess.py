"""The emulator inside the test process: the same ASGI app, reached without sockets or TLS.

`start_inprocess_emulator()` builds the app (`emulator_app`) and runs it on its own event loop in
a background thread, as it would run in its own process. So any number of clients (async ones on
any event loop, sync ones on any thread) share one emulator and its limits, and the control
calls (`fault`, `reset`, `stats`, ...) work from anywhere, even from inside a client's loop.

Each request travels to that loop through `httpx.ASGITransport` and back. Where tests depend on
how a socket behaves, the transport behaves the same way:
- an answer the app starts and then abandons (the "drop" fault) raises
  `httpx.RemoteProtocolError`, as a closed connection does;
- an answer slower than the request's read timeout raises `httpx.ReadTimeout`; the emulator
  still finishes the request, as a server does when its client has gone.

Tokens come from the emulator's own token endpoint (the client-credentials POST MSAL would send,
so wrong secrets and unknown apps still get Entra's errors), but not through MSAL itself, which
cannot use an httpx transport: tests of the identity contract (MSAL, discovery, TLS) use the
emulator as a process (`bcbridge.emulator.process.start_emulator`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bcbridge.auth import Token, renew_margin, token_from_result
from bcbridge.config import ClientSettings
from bcbridge.emulator.app import EmulatorApp
from bcbridge.emulator.config import EmulatorConfig, parse_scale
from bcbridge.emulator.process import EmulatorControl, EmulatorInfo, shared_state_dir
from bcbridge.emulator.server import build

__all__ = [
    "BASE_URL",
    "EmulatorTokens",
    "InProcessEmulator",
    "emulator_app",
    "start_inprocess_emulator",
]

# Never resolvable (RFC 2606): a client that misses the in-process transport fails at once.
BASE_URL = "https://emulator.invalid"


def emulator_app(**options: Any) -> tuple[EmulatorApp, EmulatorInfo]:
    """The emulator's ASGI app, seeded, and its info; options are named like the CLI flags
    (``scale="customers=10"`` or ``scale={"customers": 10}``, ``rate_limit="5/2"``, ...)."""
    if isinstance(options.get("scale"), str):
        options["scale"] = parse_scale(options["scale"])
    options.setdefault("state_dir", shared_state_dir())
    config = EmulatorConfig(**{k: v for k, v in options.items() if v is not None})
    app, built = build(config)
    api_root = f"{BASE_URL}/v2.0/{built['tenant_id']}/{config.environment}/api/v2.0"
    known = {f.name for f in fields(EmulatorInfo)}
    info = EmulatorInfo(
        base_url=BASE_URL,
        authority_url=BASE_URL,
        api_root=api_root,
        **{k: v for k, v in built.items() if k in known},
    )
    app.info = asdict(info)
    return app, info


def start_inprocess_emulator(**options: Any) -> InProcessEmulator:
    """Build and start an emulator in this process; options as for `emulator_app`."""
    app, info = emulator_app(**options)
    return InProcessEmulator(app, info)


class InProcessEmulator(EmulatorControl):
    """An emulator app on a background event loop, with the same API as `RunningEmulator`."""

    def __init__(self, app: EmulatorApp, info: EmulatorInfo):
        self.app = app
        self.info = info
        self._portal_cm = start_blocking_portal(name="bcbridge-emulator")
        self._portal: BlockingPortal = self._portal_cm.__enter__()
        self._control = httpx.Client(base_url=info.base_url, timeout=60, **self._http_options())

    def transport(self) -> httpx.AsyncBaseTransport:
        """An async transport to this emulator, usable from any event loop."""
        return EmulatorTransport(self._submit)

    def sync_transport(self) -> httpx.BaseTransport:
        """A transport for a synchronous `httpx.Client`, usable from any thread."""
        return SyncEmulatorTransport(self._submit)

    def _http_options(self) -> dict[str, Any]:
        return {"transport": self.sync_transport()}

    def auth(self, **overrides: Any) -> EmulatorTokens:
        """A token source for the test app (or the app in `overrides`)."""
        return EmulatorTokens(self.settings(**overrides), self.transport())

    def _reach(self, settings: ClientSettings) -> dict[str, Any]:
        transport = self.transport()  # requests go to the app whatever their host
        return {"auth": EmulatorTokens(settings, transport), "transport": transport}

    def request_token(
        self, *, client_id: str | None = None, secret: str | None = None
    ) -> dict[str, Any]:
        response = self._control.post(
            f"/{self.info.tenant_id}/oauth2/v2.0/token",
            data=_token_form(
                client_id or self.info.client_id, secret or self.info.client_secret, self.info.scope
            ),
        )
        result: dict[str, Any] = response.json()
        return result

    def stop(self) -> None:
        """Stop the loop; requests still running (a stall, say) are cancelled, not awaited."""
        self._control.close()
        with contextlib.suppress(RuntimeError):  # already stopped
            self._portal.call(self._portal.stop, True)
            self._portal_cm.__exit__(None, None, None)
            self.app.service.close()

    def _submit(
        self, request: httpx.Request, body: bytes
    ) -> concurrent.futures.Future[httpx.Response]:
        """Start handling a copy of `request` on the emulator's loop (the original's body stream
        belongs to the caller's loop or thread)."""
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        try:
            return self._portal.start_task_soon(_serve, self.app, copy)
        except RuntimeError:
            stopped = "the in-process emulator is stopped"
            raise httpx.ConnectError(stopped, request=request) from None


Submit = Callable[[httpx.Request, bytes], "concurrent.futures.Future[httpx.Response]"]


class EmulatorTransport(httpx.AsyncBaseTransport):
    def __init__(self, submit: Submit):
        self._submit = submit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        future = self._submit(request, await request.aread())
        if not future.done():
            await _wait(future, _read_timeout(request))
        return _outcome(future, request)


class SyncEmulatorTransport(httpx.BaseTransport):
    def __init__(self, submit: Submit):
        self._submit = submit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        future = self._submit(request, request.read())
        return _outcome(future, request, _read_timeout(request))


def _read_timeout(request: httpx.Request) -> float | None:
    timeout: float | None = request.extensions.get("timeout", {}).get("read")
    return timeout


async def _wait(future: concurrent.futures.Future[httpx.Response], timeout: float | None) -> None:
    """Wait for the emulator's answer without blocking this loop; never cancels the request."""
    loop = asyncio.get_running_loop()
    answered = asyncio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(RuntimeError):  # this loop may have closed in the meantime
            loop.call_soon_threadsafe(answered.set)

    future.add_done_callback(wake)
    with contextlib.suppress(TimeoutError):  # reported by `_outcome`
        async with asyncio.timeout(timeout):
            await answered.wait()


def _outcome(
    future: concurrent.futures.Future[httpx.Response],
    request: httpx.Request,
    timeout: float | None = 0,
) -> httpx.Response:
    """The emulator's answer within `timeout`; its transport errors are raised again as this
    request's."""
    try:
        return future.result(timeout)
    except TimeoutError:
        raise httpx.ReadTimeout("timed out", request=request) from None
    except concurrent.futures.CancelledError:
        raise httpx.RemoteProtocolError(
            "the in-process emulator stopped before it answered", request=request
        ) from None
    except httpx.TransportError as exc:
        raise type(exc)(str(exc), request=request) from None


class _Exchange:
    """Watches what the app sends for one request, to tell a finished answer from a dropped one."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.started = self.finished = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                self.finished = True
            await send(message)

        await self.app(scope, receive, watched_send)


async def _serve(app: EmulatorApp, request: httpx.Request) -> httpx.Response:
    """One request through `httpx.ASGITransport`, on the emulator's loop."""
    exchange = _Exchange(app)
    # App errors come back as the answer a server would give: a 500 if nothing was sent yet
    # (which the emulator's own error handling makes rare), a broken connection if the answer
    # was started and abandoned (how the "drop" fault closes a socket under uvicorn).
    transport = httpx.ASGITransport(exchange, raise_app_exceptions=False)
    response = await transport.handle_async_request(request)
    if exchange.started and not exchange.finished:
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        )
    body = await response.aread()
    return httpx.Response(response.status_code, headers=response.headers, content=body)


def _token_form(client_id: str, secret: str, scope: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        "scope": scope,
    }


class EmulatorTokens:
    """A `TokenSource` for tests: client-credentials tokens from the emulator's token endpoint,
    through the in-process transport; renewed before expiry like `MsalTokenSource`, and after
    a 401. Entra's errors become the same `AuthError`s. Unlike MSAL's source it takes no lock
    (it may serve several event loops), so concurrent first requests may each fetch a token."""

    def __init__(self, settings: ClientSettings, transport: httpx.AsyncBaseTransport):
        self._settings = settings
        self._transport = transport
        self._token: Token | None = None
        self._refused: str | None = None

    async def token(self) -> str:
        current = self._token
        if (
            current is not None
            and current.value != self._refused
            and current.fresh(renew_margin(current))
        ):
            return current.value
        secret = self._settings.client_secret
        form = _token_form(
            self._settings.client_id,
            secret.get_secret_value() if secret else "",
            " ".join(self._settings.scopes),
        )
        async with httpx.AsyncClient(transport=self._transport) as http:
            response = await http.post(f"{self._settings.authority}/oauth2/v2.0/token", data=form)
        self._token = token_from_result(response.json())
        return self._token.value

    def invalidate(self, token: str) -> None:
        self._refused = token
