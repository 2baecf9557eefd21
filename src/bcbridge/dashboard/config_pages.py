"""The dashboard's configuration pages: Clients (with Grant access), Incoming (with the live
company list and Preview), Outgoing (with Preview against the catalog) and the editing of Flows.

Every read and save goes through `bcbridge.projectfile.ProjectFile`: the project file stays the
source of truth, keeps its comments, and gets secrets only as ``${VAR}`` (their values go to the
.env). A form carries the `version` it was opened at, so a file changed on disk since then is
shown as a conflict, never overwritten. A saved secret is never sent back: its field is empty,
with "set" beside it. After each save the service reloads the project, so Run now and the
scheduler use the new configuration.

Each form keeps the keys of an item it has no field for (a client's certificate or timeouts, a
flow's chunk_size): the item read is the base, the form's fields are laid over it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
import sqlalchemy.exc
import yaml
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bcbridge import _redact, catalog
from bcbridge.catalog import WEBHOOK_ENTITIES
from bcbridge.client import BusinessCentralClient
from bcbridge.config import BC_SCOPE
from bcbridge.dashboard.app import _flash, _page
from bcbridge.dashboard.security import csrf_checked
from bcbridge.dashboard.service import FlowService
from bcbridge.errors import BCBridgeError
from bcbridge.flowconfig import IncomingConfig, actions_for
from bcbridge.projectfile import Conflict, FieldProblem, InvalidChange, ProjectFile, Secret
from bcbridge.publisher import ETAG_POLICIES
from bcbridge.publisher import preview as preview_payload
from bcbridge.store import Store
from bcbridge.subscriber import Subscriber
from bcbridge.transform import load_chain

DEFAULT_BASE_URL = "https://api.businesscentral.dynamics.com"
PREVIEW_ROWS = 20  # records of the first page an incoming's Preview shows
PREVIEW_COLUMNS = 12  # properties shown as columns (the rest stay out of a page-wide table)
PARAM_ROWS = 3  # empty query-parameter rows a form offers beside those filled in
CONFLICT = "changed on disk since you opened it: reload the page and make the change again"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
CLIENT_TEXT_FIELDS = (
    "base_url",
    "authority_url",
    "tenant_id",
    "environment",
    "client_id",
    "ca_bundle",
)
SERVE_FIELDS = ("public_url", "subscription_check_s")  # the Project page's keys of `serve:`
SUBSCRIPTION_ID_SHOWN = 8  # characters of a subscription id shown (enough to tell them apart)
SECTIONS = {"clients": "Clients", "incoming": "Incoming", "outgoing": "Outgoing", "flows": "Flows"}


@dataclass
class FormState:
    """What a form shows: the item's values, the problems by field, and a message on top."""

    values: dict[str, Any]
    version: str
    problems: dict[str, list[str]]
    general: list[str]


def config_routes(service: FlowService) -> list[Route]:
    """The routes of the configuration pages."""
    pages = ConfigPages(service)
    routes = []
    for section in ("clients", "incoming", "outgoing"):
        routes += [
            Route(f"/{section}", pages.listing(section)),
            Route(f"/{section}/new", pages.form_page(section)),
            Route(f"/{section}/new", csrf_checked(pages.submit(section)), methods=["POST"]),
            Route(f"/{section}/edit/{{name}}", pages.form_page(section)),
            Route(
                f"/{section}/edit/{{name}}", csrf_checked(pages.submit(section)), methods=["POST"]
            ),
        ]
    routes += [
        Route(f"/{section}/delete/{{name}}", csrf_checked(pages.delete(section)), methods=["POST"])
        for section in SECTIONS
    ]
    routes += [
        Route(f"/{section}/rename/{{name}}", csrf_checked(pages.rename(section)), methods=["POST"])
        for section in SECTIONS
    ]
    routes += [
        Route("/project", pages.project_page),
        Route("/project", csrf_checked(pages.save_project), methods=["POST"]),
    ]
    routes += [
        Route("/flows/new", pages.form_page("flows")),
        Route("/flows/new", csrf_checked(pages.submit("flows")), methods=["POST"]),
        Route("/flows/edit/{name}", pages.form_page("flows")),
        Route("/flows/edit/{name}", csrf_checked(pages.submit("flows")), methods=["POST"]),
        Route("/clients/grant/{name}", csrf_checked(pages.grant), methods=["POST"]),
        Route("/catalog/actions", pages.actions_options),
        Route("/catalog/fields", pages.entity_fields),
    ]
    return routes


# --- from the file to the form and back ---------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _yaml_text(value: Any) -> str:
    """Steps or an endpoint mapping as YAML a person edits."""
    if value in (None, [], {}):
        return ""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100).strip()


def _endpoint_text(value: Any) -> str:
    """A flow's from/to: a name or a location as written, a mapping as one line of YAML."""
    if isinstance(value, dict):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()
    return _text(value)


def form_values(section: str, item: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of a section's form, filled from an item as read (secrets as `Secret`)."""
    item = item or {}
    if section == "clients":
        secret = item.get("client_secret", Secret.NOT_SET)
        certificate = _mapping(item.get("certificate"))
        return {
            "base_url": _text(item.get("base_url", DEFAULT_BASE_URL)),
            "authority_url": _text(item.get("authority_url")),
            "tenant_id": _text(item.get("tenant_id")),
            "environment": _text(item.get("environment", "production")),
            "client_id": _text(item.get("client_id")),
            "ca_bundle": _text(item.get("ca_bundle")),
            "secret_state": secret if isinstance(secret, Secret) else Secret.SET,
            "scopes": "\n".join(item.get("scopes") or [BC_SCOPE]),
            "log_requests": bool(item.get("log_requests")),
            "certificate_key_path": _text(certificate.get("private_key_path")),
            "certificate_thumbprint": _text(certificate.get("thumbprint")),
        }
    if section in ("incoming", "outgoing"):
        values: dict[str, Any] = {
            key: _text(item.get(key))
            for key in ("client", "entity", "company", "key", "cursor", "key_field", "action")
        }
        values["params"] = [(str(k), _text(v)) for k, v in (item.get("params") or {}).items()]
        values["params_transform"] = _yaml_text(item.get("params_transform"))
        values["page_size"] = _text(item.get("page_size"))
        values["etag"] = _text(item.get("etag", "fetch"))
        values["allow_duplicates"] = bool(item.get("allow_duplicates"))
        values["trigger"] = _text(item.get("trigger", "poll"))
        values["reconcile"] = _text(item.get("reconcile"))
        values["on_delete"] = _text(item.get("on_delete", "tombstone"))
        return values
    return {
        "from": _endpoint_text(item.get("from")),
        "transform": _yaml_text(item.get("transform")),
        "to": _endpoint_text(item.get("to")),
        "schedule": _text(item.get("schedule")),
    }


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _field(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _params(form: FormData) -> dict[str, str]:
    names, values = form.getlist("param_name"), form.getlist("param_value")
    return {
        str(name).strip(): str(value)
        for name, value in zip(names, values, strict=False)
        if str(name).strip()
    }


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    """`key` set to `value`, or left out when the field is empty."""
    if value in ("", None, [], {}):
        data.pop(key, None)
    else:
        data[key] = value


def _parsed_yaml(text: str, key: str, problems: dict[str, list[str]], *, steps: bool) -> Any:
    if not text.strip():
        return [] if steps else None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problems.setdefault(key, []).append(f"not valid YAML{where}: fix the text")
        return None
    if steps and not isinstance(value, list):
        problems.setdefault(key, []).append("expected a list of steps, e.g. - keep: [id, name]")
        return None
    return value


def _endpoint(text: str, key: str, problems: dict[str, list[str]]) -> Any:
    if text.startswith("{"):
        return _parsed_yaml(text, key, problems, steps=False)
    return text


def item_data(
    section: str, form: FormData, base: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The item a form describes, laid over the item as read; problems found before the
    project's loader sees it (YAML that does not parse, a number that is not one)."""
    data = dict(base or {})
    problems: dict[str, list[str]] = {}
    if section == "clients":
        for key in CLIENT_TEXT_FIELDS:
            _set(data, key, _field(form, key))
        secret = form.get("client_secret")
        data["client_secret"] = secret if isinstance(secret, str) and secret else Secret.SET
        scopes = _field(form, "scopes").split()
        _set(data, "scopes", [] if scopes == [BC_SCOPE] else scopes)
        _set(data, "log_requests", form.get("log_requests") == "on" or None)
        _certificate(data, form)
    elif section in ("incoming", "outgoing"):
        keys = ["client", "entity", "company", "key"]
        keys += ["cursor"] if section == "incoming" else ["action", "key_field", "etag"]
        for key in keys:
            _set(data, key, _field(form, key))
        if section == "outgoing":
            if data.get("etag") == "fetch":
                data.pop("etag")  # the default
            _set(data, "allow_duplicates", form.get("allow_duplicates") == "on" or None)
        _set(data, "params", _params(form))
        if section == "incoming":
            chain = _parsed_yaml(
                _field(form, "params_transform"), "params_transform", problems, steps=True
            )
            _set(data, "params_transform", chain)
            size = _field(form, "page_size")
            if size and not size.isdigit():
                problems.setdefault("page_size", []).append("expected a whole number, e.g. 1000")
            _set(data, "page_size", int(size) if size.isdigit() else None)
            _trigger(data, form)
    else:
        for key in ("from", "to"):
            data[key] = _endpoint(_field(form, key), key, problems)
        steps = _parsed_yaml(_field(form, "transform"), "transform", problems, steps=True)
        _set(data, "transform", steps)
        _set(data, "schedule", _field(form, "schedule"))
    return data, problems


def _trigger(data: dict[str, Any], form: FormData) -> None:
    """An incoming's trigger: `webhook` with its reconcile schedule (blank: the loader's
    default) and on_delete; a poll incoming (the default) keeps none of these keys, which
    only a webhook incoming reads."""
    trigger = _field(form, "trigger") or "poll"
    webhook = trigger != "poll"  # another word is kept for the loader to refuse at the field
    _set(data, "trigger", trigger if webhook else None)
    _set(data, "reconcile", _field(form, "reconcile") if webhook else None)
    _set(data, "on_delete", _field(form, "on_delete") if webhook else None)


def _certificate(data: dict[str, Any], form: FormData) -> None:
    """A certificate instead of a secret: given, it replaces a secret not typed anew (the
    loader refuses both); its other keys (the public certificate's path) are kept."""
    key_path = _field(form, "certificate_key_path")
    thumbprint = _field(form, "certificate_thumbprint")
    if not key_path and not thumbprint:
        data.pop("certificate", None)
        return
    old = _mapping(data.get("certificate"))
    data["certificate"] = {**old, "private_key_path": key_path, "thumbprint": thumbprint}
    if isinstance(data.get("client_secret"), Secret):
        data["client_secret"] = None  # removed: the certificate is the credential now


def _shown_value(section: str, form: FormData, secret_state: Any) -> dict[str, Any]:
    """The form's values as typed, to show again with its problems (the secret left out)."""
    values = form_values(section, None)
    for key in values:
        if isinstance(values[key], str):
            values[key] = _field(form, key)
    values["log_requests"] = form.get("log_requests") == "on"
    values["allow_duplicates"] = form.get("allow_duplicates") == "on"
    values["params"] = list(_params(form).items())
    values["secret_state"] = secret_state
    values["name"] = _field(form, "name")  # a new item's name, kept through Preview and errors
    return values


def _problems_by_field(
    problems: list[FieldProblem], section: str, name: str
) -> tuple[dict[str, list[str]], list[str]]:
    """The problems of this item at their field (the first key under the item); the others
    (the whole item, another item, the file) on top of the form."""
    fields: dict[str, list[str]] = {}
    general = []
    for problem in problems:
        if problem.section == section and problem.item == name and problem.field:
            fields.setdefault(problem.field.split(".")[0], []).append(problem.message)
        elif problem.section == section and problem.item == name:
            general.append(problem.message)
        else:
            general.append(problem.text)
    return fields, general


def subscription_states(store: Store, incoming: list[str]) -> dict[str, dict[str, Any]]:
    """What `bcbridge serve` keeps of the BC subscription of each of these incoming (the id
    shortened, expiry, last renewal, notifications refused for a wrong clientState); never the
    clientState nor its digest. {} where the store cannot say (the reason is the store's, shown
    on the pages that use it)."""
    from bcbridge.webhooks import WebhookStore  # it imports the dashboard's service

    try:
        rows = WebhookStore(store).subscriptions()
    except (BCBridgeError, sqlalchemy.exc.SQLAlchemyError):
        return {}
    shown = {}
    for row in rows:
        if row.incoming not in incoming:
            continue  # left from an incoming renamed or no longer a webhook one: serve removes it
        short = row.subscription_id[:SUBSCRIPTION_ID_SHOWN]
        shown[row.incoming] = {
            "id": short + ("…" if len(row.subscription_id) > SUBSCRIPTION_ID_SHOWN else ""),
            "expires_at": _moment(row.expires_at),
            "renewed_at": _moment(row.renewed_at),
            "refused": row.refused,
        }
    return shown


def _moment(value: datetime) -> str:
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _actions_of(entity: str) -> list[str]:
    """The actions an outgoing can take on an entity set: the writes its operations allow and
    its bound actions (as the loader checks them)."""
    try:
        entity_set = catalog.get(entity)
    except BCBridgeError:
        return []
    return actions_for(entity_set)


def _fields_of(entity: str) -> list[str]:
    try:
        return list(catalog.get(entity).field_names) if entity else []
    except BCBridgeError:
        return []


class ConfigPages:
    """The configuration pages of one service's project."""

    def __init__(self, service: FlowService):
        self.service = service

    @property
    def project_file(self) -> ProjectFile:
        return ProjectFile(Path(self.service.project.source))

    async def _read(self) -> Any:
        return await anyio.to_thread.run_sync(self.project_file.read)

    async def _subscriptions(
        self, section: str, rows: list[tuple[str, dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        """The subscription state of the webhook incoming among `rows`."""
        hooked = [name for name, values in rows if values.get("trigger") == "webhook"]
        if section != "incoming" or not hooked:
            return {}
        store = self.service.store
        return await anyio.to_thread.run_sync(lambda: subscription_states(store, hooked))

    def _client_factory(self) -> Any:
        return self.service.client_factory or BusinessCentralClient

    # --- pages ----------------------------------------------------------------------------

    def listing(self, section: str) -> Any:
        async def listing(request: Request) -> Response:
            snapshot = await self._read()
            items = snapshot.sections.get(section) or {}
            rows = [(name, form_values(section, item)) for name, item in items.items()]
            return _page(
                request,
                "config_list.html",
                section=section,
                title=SECTIONS[section],
                rows=rows,
                problems=[p.text for p in snapshot.problems],
                subscriptions=await self._subscriptions(section, rows),
                webhooks=any(values.get("trigger") == "webhook" for _, values in rows),
            )

        listing.__name__ = f"{section}_list"
        return listing

    def form_page(self, section: str) -> Any:
        async def form_page(request: Request) -> Response:
            name = request.path_params.get("name")
            snapshot = await self._read()
            item = snapshot.item(section, name) if name else None
            if name and item is None:
                return HTMLResponse(f"no {section} item named {name}", status_code=404)
            state = FormState(form_values(section, item), snapshot.version, {}, [])
            hooked = [(name, state.values)] if name else []
            subscriptions = await self._subscriptions(section, hooked)
            return self._form(request, section, name, state, subscriptions=subscriptions)

        form_page.__name__ = f"{section}_form"
        return form_page

    def _form(
        self,
        request: Request,
        section: str,
        name: str | None,
        state: FormState,
        status_code: int = 200,
        **extra: Any,
    ) -> HTMLResponse:
        project = self.service.project
        response = _page(
            request,
            f"config_{section}.html",
            section=section,
            title=SECTIONS[section],
            name=name,
            form=state.values,
            version=state.version,
            problems=state.problems,
            general=state.general,
            clients=project.client_names,
            entities=catalog.names(),
            actions=_actions_of(state.values.get("entity", "")),
            fields=_fields_of(state.values.get("entity", "")),
            etags=ETAG_POLICIES,
            webhook_entities=WEBHOOK_ENTITIES,
            incoming=list(project.incoming),
            outgoing=list(project.outgoing),
            param_rows=PARAM_ROWS,
            **extra,
        )
        response.status_code = status_code
        return response

    def submit(self, section: str) -> Any:
        async def submit(request: Request) -> Response:
            form = await request.form()
            name = request.path_params.get("name") or _field(form, "name")
            action = _field(form, "do") or "save"
            version = _field(form, "version")
            snapshot = await anyio.to_thread.run_sync(lambda: self.project_file.read(check=False))
            base = snapshot.item(section, name) if name else None
            secret_state = form_values(section, base).get("secret_state", Secret.NOT_SET)
            shown = _shown_value(section, form, secret_state)
            data, early = item_data(section, form, base)
            if action == "preview" and section in ("incoming", "outgoing"):
                extra = await self._preview(section, data, form)
                state = FormState(shown, version, early, [])
                return self._form(request, section, request.path_params.get("name"), state, **extra)
            if action == "companies" and section == "incoming":
                extra = await self._companies(_field(form, "client"))
                state = FormState(shown, version, early, [])
                return self._form(request, section, request.path_params.get("name"), state, **extra)
            problems = dict(early)
            if not name:
                problems.setdefault("name", []).append("give the item a name")
            elif not NAME.fullmatch(name):
                problems.setdefault("name", []).append(
                    "use letters, digits, _ , - and . only (the name is part of the page's URL)"
                )
            elif "name" in form and name in (snapshot.sections.get(section) or {}):
                problems.setdefault("name", []).append(f"there is already one named {name!r}")
            if problems:
                state = FormState(shown, version, problems, [])
                return self._form(request, section, request.path_params.get("name"), state, 422)
            try:
                await anyio.to_thread.run_sync(
                    lambda: self.project_file.put(section, name, data, version=version)
                )
            except Conflict:
                state = FormState(shown, version, {}, [CONFLICT])
                return self._form(request, section, request.path_params.get("name"), state, 409)
            except InvalidChange as exc:
                fields, general = _problems_by_field(exc.problems, section, name)
                state = FormState(shown, version, fields, general)
                return self._form(request, section, request.path_params.get("name"), state, 422)
            except BCBridgeError as exc:  # the lock held too long, a file that cannot be read
                state = FormState(shown, version, {}, [_redact.text(str(exc))])
                return self._form(request, section, request.path_params.get("name"), state, 409)
            try:
                await anyio.to_thread.run_sync(self.service.reload_project)
                _flash(request, f"{section}: {name} saved")
            except BCBridgeError as exc:  # e.g. a ${VAR} set in the file's .env only later
                _flash(request, f"{section}: {name} saved, but the project did not load: {exc}")
            target = "/flows" if section == "flows" else f"/{section}/edit/{name}"
            return RedirectResponse(target, status_code=303)

        submit.__name__ = f"{section}_submit"
        return submit

    def delete(self, section: str) -> Any:
        async def delete(request: Request) -> Response:
            form = await request.form()
            name = str(request.path_params["name"])
            version = _field(form, "version")
            try:
                await anyio.to_thread.run_sync(
                    lambda: self.project_file.delete(section, name, version=version)
                )
            except BCBridgeError as exc:
                snapshot = await self._read()
                item = snapshot.item(section, name)
                if item is None:
                    return HTMLResponse(f"no {section} item named {name}", status_code=404)
                if isinstance(exc, InvalidChange):
                    general = [problem.text for problem in exc.problems]
                else:
                    general = [CONFLICT if isinstance(exc, Conflict) else _redact.text(str(exc))]
                state = FormState(form_values(section, item), version, {}, general)
                return self._form(request, section, name, state, 409)
            try:
                await anyio.to_thread.run_sync(self.service.reload_project)
                _flash(request, f"{section}: {name} deleted")
            except BCBridgeError as exc:
                _flash(request, f"{section}: {name} deleted, but the project did not load: {exc}")
            return RedirectResponse(f"/{section}", status_code=303)

        delete.__name__ = f"{section}_delete"
        return delete

    def rename(self, section: str) -> Any:
        """Rename an item and every reference to it in the file (a flow's from/to, a
        connection's client); a flow's or an incoming's state in the store follows it."""

        async def rename(request: Request) -> Response:
            form = await request.form()
            name = str(request.path_params["name"])
            new = _field(form, "new_name")
            version = _field(form, "version")
            snapshot = await self._read()
            item = snapshot.item(section, name)
            if item is None:
                return HTMLResponse(f"no {section} item named {name}", status_code=404)
            problems: dict[str, list[str]] = {}
            if not NAME.fullmatch(new):
                problems["new_name"] = [
                    "use letters, digits, _ , - and . only (the name is part of the page's URL)"
                ]
            elif section == "flows" and self.service.running(name) is not None:
                problems["new_name"] = ["the flow is running: rename it when its run has ended"]
            if problems:
                state = FormState(form_values(section, item), version, problems, [])
                return self._form(request, section, name, state, 422)
            moved = False  # the store's state, renamed before the file
            try:
                if new != name:
                    await anyio.to_thread.run_sync(lambda: self._rename(section, name, new))
                    moved = True
                await anyio.to_thread.run_sync(
                    lambda: self.project_file.rename(section, name, new, version=version)
                )
            except BCBridgeError as exc:
                if isinstance(exc, InvalidChange):
                    fields, general = _problems_by_field(exc.problems, section, new)
                    general = [*general, *(m for ms in fields.values() for m in ms)]
                else:
                    general = [CONFLICT if isinstance(exc, Conflict) else _redact.text(str(exc))]
                if moved:  # the file did not change: the store's state goes back
                    await anyio.to_thread.run_sync(lambda: self._rename(section, new, name))
                state = FormState(form_values(section, item), version, {"new_name": general}, [])
                return self._form(request, section, name, state, 409)
            await self._reloaded(request, f"{section}: {name} renamed {new}")
            return RedirectResponse(f"/{section}/edit/{new}", status_code=303)

        rename.__name__ = f"{section}_rename"
        return rename

    def _rename(self, section: str, old: str, new: str) -> None:
        """The store's side of a rename: a flow's runs, tasks and cursors, an incoming's
        positions. FlowBusy when another process runs the flow now."""
        if section == "flows":
            self.service.store.rename_flow(old, new)
        elif section == "incoming":
            self.service.store.rename_incoming(old, new)

    async def _reloaded(self, request: Request, done: str) -> None:
        try:
            await anyio.to_thread.run_sync(self.service.reload_project)
            _flash(request, done)
        except BCBridgeError as exc:
            _flash(request, f"{done}, but the project did not load: {exc}")

    # --- project settings ---------------------------------------------------------------------

    async def project_page(self, request: Request) -> Response:
        snapshot = await self._read()
        return await self._project_form(
            request, _text(snapshot.sections.get("store")), snapshot.version
        )

    async def _project_form(
        self,
        request: Request,
        store: str | None,
        version: str,
        problems: list[str] | None = None,
        status_code: int = 200,
        serve: dict[str, str] | None = None,
        serve_problems: dict[str, list[str]] | None = None,
    ) -> HTMLResponse:
        snapshot = await anyio.to_thread.run_sync(lambda: self.project_file.read(check=False))
        if store is None:  # the serve form was posted: the store's as on disk
            store = _text(snapshot.sections.get("store"))
        if serve is None:
            written = _mapping(snapshot.sections.get("serve"))
            serve = {key: _text(written.get(key)) for key in SERVE_FIELDS}
        response = _page(
            request,
            "config_project.html",
            store=store,
            version=version,
            problems=problems or [],
            serve=serve,
            serve_problems=serve_problems or {},
            in_use=_redact.url(self.service.store.url),
            source=self.service.project.source,
        )
        response.status_code = status_code
        return response

    async def save_project(self, request: Request) -> Response:
        """The store's URL (its password, if one is typed, goes to the .env). The running
        service keeps the store it opened: the new one is used once it restarts."""
        form = await request.form()
        if _field(form, "part") == "serve":
            return await self._save_serve(request, form)
        url, version = _field(form, "store"), _field(form, "version")
        try:
            await anyio.to_thread.run_sync(
                lambda: self.project_file.set_store(url, version=version)
            )
        except BCBridgeError as exc:
            if isinstance(exc, InvalidChange):
                problems = [problem.message for problem in exc.problems]
            else:
                problems = [CONFLICT if isinstance(exc, Conflict) else _redact.text(str(exc))]
            return await self._project_form(request, _redact.url(url), version, problems, 422)
        await self._reloaded(
            request, "store saved; bcbridge serve uses it once restarted (the CLI at once)"
        )
        return RedirectResponse("/project", status_code=303)

    async def _save_serve(self, request: Request, form: FormData) -> Response:
        """`serve:`'s public URL (where BC sends webhooks) and how often subscriptions are
        looked at, checked by the loader; a running `bcbridge serve` uses them once restarted."""
        version = _field(form, "version")
        typed = {key: _field(form, key) for key in SERVE_FIELDS}
        problems: dict[str, list[str]] = {}
        check = typed["subscription_check_s"]
        seconds: float | None = None
        try:
            seconds = float(check) if check else None
        except ValueError:
            problems["subscription_check_s"] = ["expected a number of seconds, e.g. 60"]
        if not problems:
            settings = {"public_url": typed["public_url"] or None, "subscription_check_s": seconds}
            if seconds is not None and seconds.is_integer():
                settings["subscription_check_s"] = int(seconds)  # written as typed: 60, not 60.0
            try:
                await anyio.to_thread.run_sync(
                    lambda: self.project_file.set_serve(settings, version=version)
                )
            except InvalidChange as exc:
                for problem in exc.problems:
                    key = problem.path.removeprefix("serve.").split(".")[0]
                    field = key if key in SERVE_FIELDS else "form"
                    problems.setdefault(field, []).append(
                        problem.message if problem.path.startswith("serve.") else problem.text
                    )
            except BCBridgeError as exc:
                general = CONFLICT if isinstance(exc, Conflict) else _redact.text(str(exc))
                problems["form"] = [general]
        if problems:
            return await self._project_form(
                request, None, version, serve=typed, serve_problems=problems, status_code=422
            )
        await self._reloaded(
            request, "serve settings saved; bcbridge serve uses them once restarted"
        )
        return RedirectResponse("/project", status_code=303)

    # --- the catalog, for the forms' lists (htmx fragments) ------------------------------------

    async def actions_options(self, request: Request) -> Response:
        """The actions of an entity set as the options of the Outgoing form's action list."""
        entity = request.query_params.get("entity", "")
        return _page(request, "_catalog.html", actions=_actions_of(entity), fields=None)

    async def entity_fields(self, request: Request) -> Response:
        """The properties of an entity set, shown under the Incoming form's entity."""
        entity = request.query_params.get("entity", "")
        return _page(request, "_catalog.html", actions=None, fields=_fields_of(entity))

    # --- talking to Business Central ------------------------------------------------------------

    async def grant(self, request: Request) -> Response:
        """Grant access: a token through the client's settings, proved by listing the
        companies it reaches (as `bcbridge client grant`)."""
        name = str(request.path_params["name"])
        snapshot = await self._read()
        item = snapshot.item("clients", name)
        if item is None:
            return HTMLResponse(f"no client named {name}", status_code=404)
        grant: dict[str, Any] | None = None
        error = None
        try:
            settings = self.service.project.client_settings(name)
            async with self._client_factory()(settings) as client:
                result = await client.grant()
            grant = {
                "token": result.token,
                "expires_at": datetime.fromtimestamp(result.expires_at, UTC).isoformat(
                    timespec="seconds"
                ),
                "roles": result.claims.get("roles") or [],
                "companies": [(c.name, c.id) for c in result.companies],
            }
        except BCBridgeError as exc:
            error = _redact.text(str(exc))
        state = FormState(form_values("clients", item), snapshot.version, {}, [])
        return self._form(request, "clients", name, state, grant=grant, grant_error=error)

    async def _companies(self, client_name: str) -> dict[str, Any]:
        """The companies the client reaches, for the company list of an incoming."""
        try:
            settings = self.service.project.client_settings(client_name or "default")
            async with self._client_factory()(settings) as client:
                companies = await client.companies(refresh=True)
        except BCBridgeError as exc:
            return {"companies_error": _redact.text(str(exc))}
        return {"companies": [company.name for company in companies]}

    async def _preview(self, section: str, data: dict[str, Any], form: FormData) -> dict[str, Any]:
        if section == "outgoing":
            return self._outgoing_preview(data, _field(form, "sample"))
        try:
            incoming = IncomingConfig.model_validate(data)
            settings = self.service.project.client_settings(incoming.client)
            async with self._client_factory()(settings) as client:
                subscriber = Subscriber(
                    client,
                    incoming.entity,
                    company=incoming.company,
                    key=incoming.key,
                    params=dict(incoming.params),
                    transform=load_chain(incoming.params_transform)
                    if incoming.params_transform
                    else None,
                    page_size=min(incoming.page_size, PREVIEW_ROWS),
                )
                records = []
                async for record in subscriber.records():
                    records.append(record)
                    if len(records) >= PREVIEW_ROWS:
                        break
        except ValidationError as exc:
            return {"preview_error": "; ".join(_validation_lines(exc))}
        except BCBridgeError as exc:
            return {"preview_error": _redact.text(str(exc))}
        columns = list(dict.fromkeys(k for r in records for k in r if not k.startswith("@")))
        rows = [
            [_redact.text(_cell(record.get(column))) for column in columns[:PREVIEW_COLUMNS]]
            for record in records
        ]
        return {"preview_columns": columns[:PREVIEW_COLUMNS], "preview_rows": rows}

    def _outgoing_preview(self, data: dict[str, Any], sample: str) -> dict[str, Any]:
        try:
            record = orjson.loads(sample or "{}")
        except orjson.JSONDecodeError as exc:
            return {"preview_error": f"the sample record is not JSON: {exc}"}
        if not isinstance(record, dict):
            return {"preview_error": 'the sample must be a JSON object, e.g. {"number": "1"}'}
        try:
            result = preview_payload(
                str(data.get("entity", "")),
                str(data.get("action", "")),
                record,
                key=data.get("key"),
                key_field=data.get("key_field"),
            )
        except BCBridgeError as exc:
            return {"preview_error": _redact.text(str(exc)), "sample": sample}
        body = orjson.dumps(result.body, option=orjson.OPT_INDENT_2).decode()
        return {
            "sample": sample,
            "payload": {
                "body": _redact.text(body) if result.body is not None else None,
                "left_out": result.left_out,
                "target": result.target,
                "ok": result.ok,
                "refusal": result.ok
                or f"{result.status or ''} {result.code}: {_redact.text(result.message or '')}",
            },
        }


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return _text(value)


def _validation_lines(exc: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    ]
