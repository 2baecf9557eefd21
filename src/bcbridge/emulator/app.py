"""The emulator as one ASGI app: identity endpoints, control endpoints, and the BC API.

An API request goes: auth -> limits -> faults -> latency -> `DataService.handle`. Every answer
carries a ``request-id``; every error is made by `bcbridge.emulator.errors`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bcbridge.emulator import lifecycle
from bcbridge.emulator.config import EmulatorConfig, describe
from bcbridge.emulator.control import (
    ConfigUpdate,
    ControlError,
    EntitySpec,
    PostPaymentsRequest,
    ResetRequest,
    SeedRequest,
    read_body,
)
from bcbridge.emulator.errors import (
    BCError,
    control_error,
    environment_not_found,
    error_response,
    from_exception,
    invalid_credentials,
    invalid_url,
    new_correlation_id,
    server_failed,
)
from bcbridge.emulator.faults import Faults, FaultSpec, status_error
from bcbridge.emulator.identity import Identity
from bcbridge.emulator.limits import Limits
from bcbridge.emulator.service import DataService
from bcbridge.emulator.webhooks import WebhookSettings

log = logging.getLogger("bcbridge.emulator")
_DROP = object()


class EmulatorApp:
    def __init__(self, config: EmulatorConfig, service: DataService, identity: Identity):
        self.config = config
        self.service = service
        self.identity = identity
        rate, per = config.rate
        self.limits = Limits(
            rate, per, config.max_concurrent, config.max_queue, config.queue_timeout_s
        )
        self.faults = Faults()
        self.info: dict[str, Any] = {}
        service.webhooks.settings = webhook_settings(config)
        service.gated = frozenset(config.schemaversion_gates)
        self.control = Starlette(routes=self._routes())

    def _routes(self) -> list[Route]:
        idn = self.identity
        return [
            Route("/{tenant}/oauth2/v2.0/token", idn.token, methods=["POST"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", idn.discovery),
            Route("/{tenant}/.well-known/openid-configuration", idn.discovery),
            Route("/{tenant}/discovery/v2.0/keys", idn.jwks),
            Route("/_emulator/faults", _answers_400(self._add_fault), methods=["POST"]),
            Route("/_emulator/faults", self._clear_faults, methods=["DELETE"]),
            Route("/_emulator/reset", _answers_400(self._reset), methods=["POST"]),
            Route("/_emulator/seed", _answers_400(self._seed), methods=["POST"]),
            Route("/_emulator/config", _answers_400(self._configure), methods=["POST"]),
            Route("/_emulator/stats", self._stats),
            Route("/_emulator/info", self._info),
            Route("/_emulator/entities", _answers_400(self._register_entity), methods=["POST"]),
            Route("/_emulator/webhooks", self._webhooks),
            Route("/_emulator/webhooks", self._clear_webhook_log, methods=["DELETE"]),
            Route("/_emulator/sent", self._sent),
            Route("/_emulator/sent", self._clear_sent, methods=["DELETE"]),
            Route("/_emulator/payments/post", _answers_400(self._post_payments), methods=["POST"]),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v2.0/"):
            await self._api(scope, receive, send)
        else:
            await self.control(scope, receive, send)

    # --- the API --------------------------------------------------------------------------------

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        correlation_id = new_correlation_id()
        request.state.correlation_id = correlation_id
        outcome: Response | object
        try:
            outcome = await self._handle(request)
        except BCError as error:
            outcome = from_exception(error, correlation_id)
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            outcome = error_response(server_failed(), correlation_id)
        self.limits.stats.requests += 1
        if outcome is _DROP:
            self.limits.stats.by_status["dropped"] += 1
            await _drop_connection(send)
            return
        assert isinstance(outcome, Response)
        outcome.headers.setdefault("request-id", correlation_id)
        # BC answers as an OData 4.0 service (bc-api.md: seen on $batch answers; assumed on the
        # others and on errors, UNCONFIRMED for those)
        outcome.headers.setdefault("odata-version", "4.0")
        self.limits.stats.by_status[str(outcome.status_code)] += 1
        await outcome(scope, receive, send)

    async def _handle(self, request: Request) -> Response | object:
        tenant, environment, api_path = _split_api_path(request.url.path)
        principal = self.identity.authenticate(request.headers.get("authorization"))
        if tenant is not None and tenant.lower() != principal.tenant_id:
            raise invalid_credentials()
        if environment != self.config.environment:
            raise environment_not_found(environment)
        request.state.principal = principal
        async with self.limits.slot(f"{principal.key}/{environment}"):
            fault = self.faults.take(request.method, request.url.path)
            if fault is not None:
                if fault.kind == "status":
                    raise status_error(fault)
                if fault.kind == "drop" and not fault.after:
                    return _DROP
                if fault.kind == "stall":
                    await asyncio.sleep(fault.seconds)
            if self.config.latency_ms:
                await asyncio.sleep(self.config.latency_ms / 1000)
            answer = await self.service.handle(request, api_path)
            rows = getattr(request.state, "rows_read", 0)
            if self.config.row_time_us and rows:
                # BC's server time grows with the rows a page reads; spent holding the slot
                await asyncio.sleep(self.config.row_time_us * rows / 1_000_000)
            return _DROP if fault is not None and fault.kind == "drop" else answer

    # --- control endpoints ----------------------------------------------------------------------

    async def _add_fault(self, request: Request) -> Response:
        self.faults.add(await read_body(request, FaultSpec))
        return JSONResponse({"pending": len(self.faults.pending)})

    async def _clear_faults(self, request: Request) -> Response:
        self.faults.clear()
        return JSONResponse({"pending": 0})

    async def _reseed(self) -> None:
        await anyio.to_thread.run_sync(self.service.seed, self.config.seed, self.config.scale)
        self.limits.reset()
        self.faults.clear()
        self.service.webhooks.reset()

    async def _reset(self, request: Request) -> Response:
        await read_body(request, ResetRequest)
        await self._reseed()
        return JSONResponse({"companies": self.service.companies()})

    async def _seed(self, request: Request) -> Response:
        body = await read_body(request, SeedRequest)
        self.config = self._changed_config(body.model_dump(exclude_none=True))
        await self._reseed()
        return JSONResponse({"companies": self.service.companies()})

    async def _configure(self, request: Request) -> Response:
        body = await read_body(request, ConfigUpdate)
        self.config = self._changed_config(body.model_dump(exclude_none=True))
        self.identity.token_lifetime = self.config.token_lifetime
        rate, per = self.config.rate
        self.limits.configure(
            rate,
            per,
            self.config.max_concurrent,
            self.config.max_queue,
            self.config.queue_timeout_s,
        )
        self.service.webhooks.settings = webhook_settings(self.config)
        self.service.gated = frozenset(self.config.schemaversion_gates)
        return JSONResponse(self.config.model_dump(mode="json", exclude={"state_dir", "data"}))

    def _changed_config(self, changes: dict[str, Any]) -> EmulatorConfig:
        """The whole config with `changes`, checked as a whole before anything is applied."""
        try:
            return EmulatorConfig.model_validate({**self.config.model_dump(), **changes})
        except ValidationError as exc:
            raise ControlError(describe(exc)) from None

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(
            {**self.limits.stats.as_json(), "tokens_issued": self.identity.tokens_issued}
        )

    async def _webhooks(self, request: Request) -> Response:
        return JSONResponse(self.service.webhooks.status())

    async def _clear_webhook_log(self, request: Request) -> Response:
        self.service.webhooks.clear_log()
        return JSONResponse(self.service.webhooks.status())

    async def _sent(self, request: Request) -> Response:
        """What the send actions would have e-mailed (emulator/lifecycle.py)."""
        sent = await self.service.in_transaction(lifecycle.sent_messages)
        return JSONResponse({"value": sent})

    async def _clear_sent(self, request: Request) -> Response:
        await self.service.in_transaction(lifecycle.clear_sent)
        return JSONResponse({"value": []})

    async def _post_payments(self, request: Request) -> Response:
        """Post a customer or vendor payment journal: BC API v2.0 has no bound action for it."""
        body = await read_body(request, PostPaymentsRequest)
        try:
            posted = await self.service.in_transaction(
                functools.partial(lifecycle.post_payment_journal, journal_id=body.journalId)
            )
        except BCError as exc:
            raise ControlError(exc.message) from None
        return JSONResponse({"posted": posted})

    async def _info(self, request: Request) -> Response:
        return JSONResponse(self.info)

    async def _register_entity(self, request: Request) -> Response:
        spec = await read_body(request, EntitySpec)
        try:
            created = self.service.register_custom_entity(spec.model_dump())
        except BCError as exc:
            raise ControlError(exc.message) from None
        return JSONResponse({"registered": True}, status_code=201 if created else 200)


def webhook_settings(config: EmulatorConfig) -> WebhookSettings:
    return WebhookSettings(
        delay_s=config.webhook_delay_s,
        collection_threshold=config.webhook_collection_threshold,
        time_scale=config.webhook_time_scale,
        lifetime_s=config.subscription_lifetime_s,
        handshake_method=config.webhook_handshake_method,
    )


def _answers_400(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A control endpoint whose ControlError becomes a 400 ``<field>: <what was expected>``."""

    @functools.wraps(handler)
    async def checked(request: Request) -> Response:
        try:
            return await handler(request)
        except ControlError as exc:
            return control_error(str(exc))

    return checked


def _split_api_path(path: str) -> tuple[str | None, str, str]:
    """``/v2.0/{tenant}/{env}/api/{rest}`` or ``/v2.0/{env}/api/{rest}`` (bc-api.md §1.1)."""
    head, marker, rest = path[len("/v2.0/") :].partition("/api/")
    parts = [p for p in head.split("/") if p]
    if not marker or len(parts) not in (1, 2):
        raise invalid_url(f"'{path}' is not an API URL.")
    if len(parts) == 2:
        return parts[0], parts[1], rest
    return None, parts[0], rest


async def _drop_connection(send: Send) -> None:
    """Start an answer, then abort: uvicorn closes the socket when an app fails mid-response."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"65536")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"value": [', "more_body": True})
    raise ConnectionAbortedError("injected fault: connection dropped")
