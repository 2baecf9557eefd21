"""The project file (`bcbridge.yaml`): clients, incoming, outgoing and flows, validated up front.

```yaml
store: sqlite:///.bcbridge/state.db        # optional; any SQLAlchemy URL
engine: inline                              # or procrastinate: `bcbridge worker`s, PostgreSQL store
clients:
  bc: {tenant_id: ..., client_id: ..., client_secret: "${BC_CLIENT_SECRET}"}
incoming:
  customers: {client: bc, entity: customers, company: CRONUS, cursor: lastModifiedDateTime}
  # params_transform: steps applied to the request parameters ($filter, $top, ...)
  # trigger: webhook  -> BC notifies `bcbridge serve` (serve.public_url); reconcile: 1h pulls
  #                      by cursor to catch what was missed; on_delete: tombstone|delete|ignore
outgoing:
  items: {client: bc, entity: items, action: upsert, key_field: number}
flows:
  customers_to_sqlite:
    from: customers                         # an incoming name, or a reader spec (file, SQL URL, -)
    transform: [{keep: [id, number, displayName]}]
    to: {writer: "sqlite:///out.db#customers", key: id}   # or an outgoing name
    schedule: 5m                            # or a cron expression
serve: {public_url: "https://bcbridge.example.com"}  # where BC reaches /webhooks/<incoming>
```
Without a `clients:` section the `default` client comes from the BC_* environment variables.
``${VAR}`` and the BC_* variables are read from the environment and, under it, from a `.env`
file beside the project file (a variable set in the environment wins).
Relative paths (the store, readers, writers, SQLite URLs, clients' CA bundle, certificate and
log file) are relative to the project file. Errors name the file, the line and the key path;
unknown names list the valid ones; a key given twice is an error, not "the last one wins".
Entity sets, actions and fields are checked against the catalog.
Every transform chain is built when the file is loaded (steps, JMESPath, `python:` functions,
imported with the project's folder on sys.path), so a mistake there stops nothing half-way.
URLs keep their password for the code that connects, but show it masked in repr() and in dumps;
the password is registered with `_redact`, so tables and messages mask it too.
"""

from __future__ import annotations

import codecs
import difflib
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from bcbridge import _redact, catalog
from bcbridge import transform as steps
from bcbridge.catalog import WEBHOOK_ENTITIES
from bcbridge.config import (
    ClientSettings,
    Problem,
    anchor_settings_paths,
    dotenv_beside,
    line_of,
    load_yaml,
    problems_of,
)
from bcbridge.errors import ConfigError
from bcbridge.schedule import parse_schedule
from bcbridge.sinks import _format_of as format_of
from bcbridge.sinks import sql_target
from bcbridge.store import DEFAULT_URL

__all__ = [
    "FlowConfig",
    "IncomingConfig",
    "OutgoingConfig",
    "ProjectConfig",
    "anchored",
    "check_project",
    "default_config",
    "find_config",
    "load_project",
]

DEFAULT_CLIENT = "default"
EtagPolicy = Literal["fetch", "record", "force"]  # as publisher.ETAG_POLICIES
Format = Literal["jsonl", "csv"]  # as sinks.FORMATS
Trigger = Literal["poll", "webhook"]
OnDelete = Literal["delete", "tombstone", "ignore"]
PUBLIC_URL_ENV = "BCBRIDGE_PUBLIC_URL"


# A URL or a path: the real value for the code, the password masked in model_dump(_json).
Location = Annotated[str, PlainSerializer(_redact.url, return_type=str)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """repr() masks the password of any URL (a store, a reader, a writer)."""
        for name, value in super().__repr_args__():
            if isinstance(value, str) and "://" in value:
                value = _redact.url(value)
            yield name, value


class IncomingConfig(_Strict):
    client: str = DEFAULT_CLIENT
    entity: str
    company: str | None = None
    key: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    # request-parameter transformers: applied to `params` before each read (the records'
    # transformers are the flow's `transform:`)
    params_transform: list[Any] = Field(default_factory=list)
    cursor: str | None = None  # e.g. lastModifiedDateTime: read incrementally
    page_size: int = Field(1000, ge=1, le=20000)
    # read as N concurrent streams over key ranges, or "auto" (bcbridge.partition)
    partitions: PositiveInt | Literal["auto"] | None = None
    # webhook: BC notifies `bcbridge serve` of changes (bcbridge.webhooks); poll: runs read by
    # cursor on the flow's schedule only
    trigger: Trigger = "poll"
    # a webhook incoming's safety net: a pull by cursor on this schedule catches what was missed
    reconcile: str = "1h"
    # what a `deleted` notification becomes: a tombstone record through the flow, the deletion
    # of its key's row from the flow's SQL table, or nothing
    on_delete: OnDelete = "tombstone"

    @field_validator("reconcile")
    @classmethod
    def _reconcile(cls, value: str) -> str:
        try:
            parse_schedule(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("schedule: ")) from None
        return value


class OutgoingConfig(_Strict):
    client: str = DEFAULT_CLIENT
    entity: str
    action: str
    company: str | None = None
    key: str | None = None
    key_field: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    etag: EtagPolicy = "fetch"
    batch_size: int = Field(500, ge=1)
    allow_duplicates: bool = False  # create without key_field: BC has no idempotency keys


class Endpoint(_Strict):
    incoming: str | None = None
    outgoing: str | None = None
    reader: Location | None = None
    writer: Location | None = None
    format: Format | None = None
    encoding: str | None = None  # a reader's text encoding (default UTF-8), e.g. latin-1
    key: str | None = None  # a writer's upsert key
    annotations: bool = False  # a writer keeps OData annotations such as @odata.etag

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    f"unknown text encoding {value!r}; e.g. utf-8, utf-8-sig, latin-1, cp1252"
                ) from None
        return value


class FlowConfig(_Strict):
    source: Endpoint = Field(alias="from")
    transform: list[Any] = Field(default_factory=list)
    target: Endpoint = Field(alias="to")
    schedule: str | None = None
    chunk_size: int = Field(500, ge=1)  # records per committed step of a run

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_schedule(value)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("schedule: ")) from None
        return value

    @model_validator(mode="after")
    def _one_each(self) -> FlowConfig:
        for key, (name, location) in (
            ("from", ("incoming", "reader")),
            ("to", ("outgoing", "writer")),
        ):
            endpoint = self.source if key == "from" else self.target
            given = [part for part in (name, location) if getattr(endpoint, part) is not None]
            if len(given) != 1:
                problem = "both are given" if given else "neither is given"
                raise ValueError(
                    f"{key}: give an {name} name or a {location} (a file or a SQL URL); {problem}"
                )
        return self


class ServeConfig(_Strict):
    """`serve:`: settings of `bcbridge serve`."""

    # where BC reaches this server's /webhooks/<incoming> (a reverse proxy or a tunnel in
    # front of it); the --public-url flag and BCBRIDGE_PUBLIC_URL override it
    public_url: str | None = None
    subscription_check_s: float = Field(60.0, gt=0)  # how often subscriptions are looked at

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_public_url(value)
        return None if value is None else value.rstrip("/")


def check_public_url(value: str) -> str:
    """An absolute http(s) URL without query or fragment; ValueError saying what is wrong."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{value!r} is not an absolute http(s) URL; e.g. https://bcbridge.example.com"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r}: give the URL without ?query or #fragment")
    return value.rstrip("/")


class ProjectConfig(_Strict):
    """A project file: the store, clients, incoming and outgoing connections, and the flows that
    join them. Load it with `load_project`, which also checks names, steps and paths."""

    store: Location = DEFAULT_URL
    clients: dict[str, ClientSettings] = Field(default_factory=dict)  # validated at load
    incoming: dict[str, IncomingConfig] = Field(default_factory=dict)
    outgoing: dict[str, OutgoingConfig] = Field(default_factory=dict)
    flows: dict[str, FlowConfig] = Field(default_factory=dict)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    # who runs the flows: this process (`inline`), or `bcbridge worker` processes over the
    # PostgreSQL store (`procrastinate`, see bcbridge.engine)
    engine: Literal["inline", "procrastinate"] = "inline"
    # set by load_project, not keys of the file (so never offered as valid keys)
    source: str = Field("environment", exclude=True)
    lines: dict[str, int] = Field(default_factory=dict, exclude=True)
    # the `.env` beside the file: under the environment, for the `default` client's BC_* too
    dotenv: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)

    def client_settings(self, name: str) -> ClientSettings:
        if name in self.clients:
            return self.clients[name]
        if name == DEFAULT_CLIENT:
            return ClientSettings.from_env({**self.dotenv, **os.environ})
        closest = _closest(name, self.client_names, "defined")
        raise ConfigError(f"no client named {name!r}{closest}", source=self.source)

    @property
    def client_names(self) -> list[str]:
        """The clients defined, and `default` (from the BC_* variables) when it is not."""
        return list(dict.fromkeys([*self.clients, DEFAULT_CLIENT]))

    def webhook_incoming(self) -> dict[str, IncomingConfig]:
        """The incoming BC notifies of changes (`trigger: webhook`)."""
        return {name: item for name, item in self.incoming.items() if item.trigger == "webhook"}

    def flows_of(self, incoming: str) -> list[str]:
        """The flows that read `incoming`."""
        return [name for name, flow in self.flows.items() if flow.source.incoming == incoming]

    def schedule_of(self, name: str) -> str | None:
        """When flow `name` runs by itself: its `schedule:`, else, when it reads a webhook
        incoming, that incoming's reconciliation pull (`reconcile:`, hourly by default)."""
        flow = self.flows[name]
        incoming = self.incoming.get(flow.source.incoming or "")
        if flow.schedule or incoming is None or incoming.trigger != "webhook":
            return flow.schedule
        return incoming.reconcile

    def flow(self, name: str) -> FlowConfig:
        if name not in self.flows:
            closest = _closest(name, self.flows, "defined")
            raise ConfigError(f"no flow named {name!r}{closest}", source=self.source)
        return self.flows[name]


def _short_forms(data: dict[str, Any]) -> dict[str, Any]:
    """`from: x` / `to: x`: a file (`items.csv`, `out/a.jsonl`), a URL or `-` is a reader or a
    writer; anything else is the name of an incoming or outgoing, so that a mistyped name is
    reported with the valid ones instead of being read as a file that is not there."""
    incoming, outgoing, flows = (
        _mapping(data.get(key)) for key in ("incoming", "outgoing", "flows")
    )
    for flow in flows.values():
        if not isinstance(flow, dict):
            continue
        if isinstance(flow.get("from"), str):
            source = flow["from"]
            flow["from"] = {"reader" if _is_location(source, incoming) else "incoming": source}
        if isinstance(flow.get("to"), str):
            target = flow["to"]
            flow["to"] = {"writer" if _is_location(target, outgoing) else "outgoing": target}
    return data


def _mapping(value: Any) -> dict[str, Any]:
    """A section as a dict; a section of the wrong type is left for validation to report."""
    return value if isinstance(value, dict) else {}


def _is_location(text: str, names: dict[str, Any]) -> bool:
    if text in names:
        return False
    return text == "-" or "://" in text or "/" in text or bool(Path(text).suffix)


class _Problems:
    """The problems found in one project file, each `file:line: key.path: message`."""

    def __init__(self, source: str, lines: Mapping[str, int]):
        self.source = source
        self.lines = lines
        self.found: list[Problem] = []

    def add(self, path: str, message: str, shown: str | None = None) -> None:
        """A problem at the key `path` (its line), shown as `shown` (default: the path)."""
        line = line_of(path, self.lines)
        where = f"{self.source}:{line}" if line else self.source
        text = " ".join(f"{where}: {shown or path}: {message}".split())
        self.found.append(Problem(path, _redact.text(text)))


def _unknown(kind: str, name: str, valid: Iterable[str], listed_as: str = "valid") -> str:
    """`unknown entity set 'custmers' (did you mean 'customers'?); valid: ...`"""
    return f"unknown {kind} {name!r}{_closest(name, valid, listed_as)}"


def _closest(name: str, valid: Iterable[str], listed_as: str = "valid") -> str:
    """` (did you mean 'x'?); valid: x, y` for a name that is none of `valid`."""
    names = list(valid)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; {listed_as}: {', '.join(names) or 'none'}"


def _misplaced_transformers(data: dict[str, Any], problems: _Problems) -> None:
    """The two kinds of transformers in the wrong place: an incoming's `transform:` (its
    request-parameter transformers were called so, easily taken for the records' ones) and a
    flow's `params_transform:`."""
    for name, item in _mapping(data.get("incoming")).items():
        if isinstance(item, dict) and "transform" in item:
            problems.add(
                f"incoming.{name}.transform",
                "an incoming's transformers change the request parameters ($filter, $top, ...) "
                "and are called params_transform: rename the key; transformers of the records "
                "go in the flow's transform:",
            )
            item.pop("transform")
    for name, flow in _mapping(data.get("flows")).items():
        if isinstance(flow, dict) and "params_transform" in flow:
            source = flow.get("from")
            owner = f"incoming.{source}" if isinstance(source, str) else "the incoming"
            problems.add(
                f"flows.{name}.params_transform",
                "request-parameter transformers belong to the incoming the flow reads: move "
                f"them to {owner}.params_transform; a flow's transform: changes the records",
            )
            flow.pop("params_transform")


def _anchor_client_paths(data: dict[str, Any], base: Path) -> None:
    """Clients' relative paths (ca_bundle, certificate, log_file) mean: next to the project file.
    Done before validation, which checks that the files are there."""
    clients = _mapping(data.get("clients"))
    for name, settings in clients.items():
        if isinstance(settings, Mapping):
            clients[name] = anchor_settings_paths(settings, base)


def _check_names(config: ProjectConfig, problems: _Problems) -> None:
    """The names a project refers to: its own incoming, outgoing and clients."""
    for name, flow in config.flows.items():
        for kind, key, wanted, known in (
            ("incoming", "from", flow.source.incoming, config.incoming),
            ("outgoing", "to", flow.target.outgoing, config.outgoing),
        ):
            if wanted is not None and wanted not in known:
                problems.add(f"flows.{name}.{key}", _unknown(kind, wanted, known, "defined"))
    for kind, section in (("incoming", config.incoming), ("outgoing", config.outgoing)):
        for name, item in section.items():
            if item.client != DEFAULT_CLIENT and item.client not in config.clients:
                problems.add(
                    f"{kind}.{name}.client",
                    _unknown("client", item.client, config.client_names, "defined"),
                )


def _check_entities(config: ProjectConfig, problems: _Problems) -> None:
    """Entity sets, actions and fields through the catalog, before anything talks to BC."""
    for name, incoming in config.incoming.items():
        entity_set = _entity_set(f"incoming.{name}", incoming.entity, problems)
        if entity_set is not None and incoming.cursor:
            _check_field(f"incoming.{name}.cursor", entity_set, incoming.cursor, problems)
    for name, outgoing in config.outgoing.items():
        entity_set = _entity_set(f"outgoing.{name}", outgoing.entity, problems)
        if entity_set is not None:
            _check_action(f"outgoing.{name}", entity_set, outgoing, problems)


def _check_webhooks(config: ProjectConfig, problems: _Problems) -> None:
    """A webhook incoming: an entity set BC notifies on, whole (no key), with a cursor for the
    reconciliation pull; `on_delete: delete` only where its flows write to a SQL table with a
    key."""
    for name, incoming in config.webhook_incoming().items():
        path = f"incoming.{name}"
        if incoming.entity not in WEBHOOK_ENTITIES:
            problems.add(
                f"{path}.trigger",
                f"BC sends no webhooks for {incoming.entity!r}; use trigger: poll (webhooks: "
                f"{', '.join(WEBHOOK_ENTITIES)})",
            )
        if incoming.key is not None:
            problems.add(
                f"{path}.key",
                "a webhook incoming reads the whole entity set: remove key, or use trigger: poll",
            )
        if not incoming.cursor:
            problems.add(  # at the cursor key (a form's field), named as the incoming
                f"{path}.cursor",
                "trigger: webhook needs cursor: lastModifiedDateTime, for the reconciliation "
                "pull that catches notifications BC could not deliver",
                shown=path,
            )
        if incoming.on_delete == "delete":
            for flow_name in config.flows_of(name):
                target = config.flows[flow_name].target
                if target.writer is None or sql_target(target.writer) is None or not target.key:
                    problems.add(
                        f"{path}.on_delete",
                        f"delete removes the row of the record's key from a SQL table, but "
                        f"flow {flow_name!r} does not write to one with a key (to: {{writer: "
                        "'sqlite:///x.db#table', key: id}): use on_delete: tombstone (a "
                        "record with deleted: true) or ignore",
                    )


def _entity_set(path: str, entity: str, problems: _Problems) -> catalog.EntitySet | None:
    if entity in catalog.CATALOG:
        return catalog.get(entity)
    problems.add(f"{path}.entity", _unknown("entity set", entity, catalog.names()))
    return None


def _check_field(path: str, entity_set: catalog.EntitySet, field: str, problems: _Problems) -> None:
    """A field the catalog knows of `entity_set`; unchecked where it lists no fields."""
    if entity_set.described and field not in entity_set.field_names:
        closest = _closest(field, entity_set.field_names)
        problems.add(path, f"{entity_set.name} has no field {field!r}{closest}")


# the HTTP methods each write needs the entity set to allow (an upsert may create or update)
_METHODS_OF = {
    "create": ("POST",),
    "update": ("PATCH",),
    "upsert": ("PATCH", "POST"),
    "delete": ("DELETE",),
}


def actions_for(entity_set: catalog.EntitySet) -> list[str]:
    """The actions an outgoing can take on `entity_set`: the writes its operations allow, then
    its bound actions."""
    writes = [
        action
        for action, methods in _METHODS_OF.items()
        if all(entity_set.allows(method) for method in methods)
    ]
    return [*writes, *entity_set.actions]


def _check_action(
    path: str, entity_set: catalog.EntitySet, outgoing: OutgoingConfig, problems: _Problems
) -> None:
    """The action is one the entity set allows (a write its operations permit, or one of its
    bound actions), with the key_field it needs."""
    valid = actions_for(entity_set)
    if outgoing.action not in valid:
        closest = _closest(outgoing.action, valid)
        problems.add(
            f"{path}.action", f"{entity_set.name} has no action {outgoing.action!r}{closest}"
        )
        return
    if outgoing.key_field:
        _check_field(f"{path}.key_field", entity_set, outgoing.key_field, problems)
    elif outgoing.action == "upsert":
        problems.add(
            path,
            "upsert matches records on a key field: add key_field: <a field such as number>",
        )
    elif outgoing.action == "create" and not outgoing.allow_duplicates:
        problems.add(
            path,
            "create needs key_field (e.g. number or externalDocumentNumber): a record re-sent "
            "after a crash is matched on it instead of created twice (BC has no idempotency "
            "keys); or set allow_duplicates: true to accept that risk",
        )


def load_project(path: Path) -> ProjectConfig:
    """Read and check the project file at `path` (see `check_project`); every problem is one
    line of the ConfigError, `file:line: key.path: message`."""
    config, problems = check_project(path)
    if problems or config is None:
        raise ConfigError("\n".join(problem.text for problem in problems))
    return config


def check_project(
    path: Path, dotenv: Mapping[str, str] | None = None
) -> tuple[ProjectConfig | None, list[Problem]]:
    """The project at `path` and every problem a user can fix in it: YAML errors and keys given
    twice, unknown keys and names (with the closest valid one), entity sets, actions and fields
    unknown to the catalog, a missing key_field, steps that cannot be built, `python:` modules
    that cannot be imported, formats and database drivers. Relative paths are anchored to the
    file's folder. The project is None when the file cannot be read into one.
    Variables come from the environment over `dotenv`: the `.env` beside `path` by default
    (an editor checking a would-be project passes its would-be `.env`)."""
    try:
        dotenv = dotenv_beside(path) if dotenv is None else dict(dotenv)
        data, lines = load_yaml(path, {**dotenv, **os.environ})
    except ConfigError as exc:
        return None, [Problem("", str(exc))]
    base = path.resolve().parent
    problems = _Problems(str(path), lines)
    _misplaced_transformers(data, problems)
    _anchor_client_paths(data, base)
    try:
        config = ProjectConfig.model_validate({**_short_forms(data), "source": str(path)})
    except ValidationError as exc:
        found = problems_of(exc, source=str(path), lines=lines, model=ProjectConfig)
        return None, problems.found + found
    config.lines = lines
    config.dotenv = dict(dotenv)
    _anchor_paths(config, base)
    _check_names(config, problems)
    _check_entities(config, problems)
    _check_webhooks(config, problems)
    _check_transforms(config, base, problems)
    _check_locations(config, problems)
    _check_store(config, problems)
    return config, problems.found


def _check_store(config: ProjectConfig, problems: _Problems) -> None:
    """The store's URL and its database driver (opening it is left to the commands: it
    creates the database)."""
    try:
        _check_database(config.store)
    except ConfigError as exc:
        problems.add("store", str(exc))
        return
    if config.engine != "procrastinate":
        return
    if not config.store.startswith("postgresql"):
        problems.add(
            "engine",
            "procrastinate needs a PostgreSQL `store:` (postgresql+psycopg://user@host/db), "
            "where workers share jobs and state; set `store:` to one, or `engine: inline`",
        )
    elif importlib.util.find_spec("procrastinate") is None:
        problems.add("engine", "procrastinate is not installed: pip install 'bcbridge[workers]'")


def _check_locations(config: ProjectConfig, problems: _Problems) -> None:
    """Readers and writers: a format that is known, a SQL URL with its #table and a database
    driver that is installed, so that none of these stops a run half-way."""
    for name, flow in config.flows.items():
        for key, endpoint, spec in (
            ("from", flow.source, flow.source.reader),
            ("to", flow.target, flow.target.writer),
        ):
            if spec is None:
                continue
            try:
                _check_location(spec, endpoint.format)
            except ConfigError as exc:
                message = str(exc).partition(": ")[2] if exc.field else str(exc)
                problems.add(f"flows.{name}.{key}", message.replace("--format", "format:"))


def _check_location(spec: str, format: str | None) -> None:
    target = sql_target(spec)
    if target is None:
        format_of(spec, format)
    else:
        _check_database(target[0])


def _check_database(location: str) -> None:
    """A SQLAlchemy URL whose database driver is installed."""
    try:
        url = sa.engine.make_url(location)
        url.get_dialect().import_dbapi()
    except sa.exc.NoSuchModuleError:
        raise ConfigError(f"unknown kind of database {url.drivername!r}") from None
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"not a SQLAlchemy URL: {exc}") from None
    except ImportError as exc:
        raise ConfigError(
            f"no database driver for {url.drivername}: {exc}; install it in the same "
            "environment as bcbridge"
        ) from None


def _check_transforms(config: ProjectConfig, base: Path, problems: _Problems) -> None:
    """Build every chain now, so a bad step is a problem naming its line before any run.
    `python:` modules are looked up next to the project file too (it stays on sys.path, for
    the runs that build the chains again)."""
    if str(base) not in sys.path:
        sys.path.append(str(base))
    for name, flow in config.flows.items():
        _check_chain(f"flows.{name}", "transform", flow.transform, problems)
    for name, incoming in config.incoming.items():
        _check_chain(f"incoming.{name}", "params_transform", incoming.params_transform, problems)


_STEP_INDEX = re.compile(r"transform\[(\d+)\]")


def _check_chain(path: str, key: str, specs: list[Any], problems: _Problems) -> None:
    for index, spec in enumerate(specs):
        problem = _step_problem(spec, index)
        if problem is not None:
            inside, message = "", problem
            if problem.startswith("."):  # about a part of the step, e.g. `.step: unknown step`
                inside, _, message = problem.partition(": ")
            if "No module named" in message:
                message += (
                    " (put the module next to the project file, which is on the import path, "
                    "or install it in bcbridge's environment)"
                )
            shown = f"{path}.{key}[{index}]{inside}"
            problems.add(f"{path}.{key}.{index}", message, shown=shown)


def _step_problem(spec: Any, index: int) -> str | None:
    """What is wrong with one step, or None."""
    shape = _argument_problem(spec)
    if shape is not None:
        return shape
    try:
        steps.load_chain([spec])
    except ConfigError as exc:
        message = str(exc)
        found = _STEP_INDEX.search(message)
        if found:
            return message[found.end() :].removeprefix(": ")
        return message
    except Exception as exc:  # a step's own check tripping on an odd value; or the module's import
        return f"{type(exc).__name__}: {exc}"
    return None


_ARGUMENT_SHAPES: dict[str, tuple[str, str]] = {
    **{name: ("fields", "mapping") for name in ("map", "rename", "set", "default", "convert")},
    "drop": ("fields", "names"),
    "keep": ("fields", "names"),
    "filter": ("expression", "text"),
    "python": ("function", "text"),
}
_EXPECTED = {
    "mapping": "a mapping of field names, e.g. {name: value}",
    "names": "a list of field names, e.g. [id, number]",
    "text": "text",
}


def _argument_problem(spec: Any) -> str | None:
    """The steps take their arguments as given, so a wrong type would only fail on the first
    record: check the argument's type here."""
    if not isinstance(spec, Mapping):
        return None  # load_chain says what a step looks like
    name = spec.get("step") if "step" in spec else next(iter(spec), None)
    if not isinstance(name, str) or name not in _ARGUMENT_SHAPES:
        return None
    key, shape = _ARGUMENT_SHAPES[name]
    value = spec.get(key) if "step" in spec else spec[name]
    names: list[Any] = list(value) if isinstance(value, Mapping | list) else []
    if isinstance(value, Mapping) and name in ("map", "rename", "convert"):
        names += list(value.values())  # set's and default's values may be any value
    odd = next((item for item in names if _unquoted(item)), None)
    if odd is not None:
        return (
            f"{name}: {odd!r} is not text but a {type(odd).__name__} to YAML: put the field "
            f"name in quotes (YAML reads No, Yes, On, Off, null and numbers unquoted as values)"
        )
    if shape == "mapping":
        good = isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
        if isinstance(value, Mapping) and name in ("map", "rename", "convert"):
            good = good and all(isinstance(v, str) for v in value.values())
    elif shape == "names":
        good = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        good = isinstance(value, str)
    return None if good else f"{name}: expected {_EXPECTED[shape]}, got {type(value).__name__}"


def _unquoted(item: Any) -> bool:
    """A field name YAML turned into something else: `No` into False, `2024` into 2024."""
    return isinstance(item, bool | int | float) or item is None


def anchored(spec: str, base: Path) -> str:
    """A relative file path or SQLite URL in a project file means: next to the project file."""
    if spec == "-" or (Path(spec).is_absolute() and "://" not in spec):
        return spec
    if spec.startswith("sqlite:///"):
        rest = spec.removeprefix("sqlite:///")
        if rest.startswith(("/", ":memory:", "file:")) or not rest:  # file: a SQLite URI
            return spec
        return f"sqlite:///{base / rest}"
    return spec if "://" in spec else str(base / spec)


def _anchor_paths(config: ProjectConfig, base: Path) -> None:
    config.store = anchored(config.store, base)
    _redact.register_url(config.store)
    for flow in config.flows.values():
        for endpoint in (flow.source, flow.target):
            if endpoint.reader is not None:
                endpoint.reader = anchored(endpoint.reader, base)
            if endpoint.writer is not None:
                endpoint.writer = anchored(endpoint.writer, base)
            _redact.register_url(endpoint.reader)
            _redact.register_url(endpoint.writer)


def default_config() -> Path:
    """$BCBRIDGE_CONFIG, else ./bcbridge.yaml (which may not exist)."""
    return Path(os.environ.get("BCBRIDGE_CONFIG", "bcbridge.yaml"))


def find_config(explicit: Path | None) -> Path:
    """--config, else $BCBRIDGE_CONFIG, else ./bcbridge.yaml."""
    path = explicit or default_config()
    if not path.exists():
        raise ConfigError(
            f"no config file at {path} (use --config or BCBRIDGE_CONFIG)", field="config"
        )
    return path
