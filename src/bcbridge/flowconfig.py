"""The project file (`bcbridge.yaml`): clients, incoming, outgoing and flows, validated up front.

```yaml
store: sqlite:///.bcbridge/state.db        # optional; any SQLAlchemy URL
clients:
  bc: {tenant_id: ..., client_id: ..., client_secret: "${BC_CLIENT_SECRET}"}
incoming:
  customers: {client: bc, entity: customers, company: CRONUS, cursor: lastModifiedDateTime}
outgoing:
  items: {client: bc, entity: items, action: upsert, key_field: number}
flows:
  customers_to_sqlite:
    from: customers                         # an incoming name, or a reader spec (file, SQL URL, -)
    transform: [{keep: [id, number, displayName]}]
    to: {writer: "sqlite:///out.db#customers", key: id}   # or an outgoing name
    schedule: 5m                            # or a cron expression
```
Without a `clients:` section the `default` client comes from the BC_* environment variables.
Relative paths (the store, readers, writers, SQLite URLs) are relative to the project file.
Errors name the file, the line and the field path; unknown names list the valid ones.
Every transform chain is built when the file is loaded (steps, JMESPath, `python:` functions,
imported with the project's folder on sys.path), so a mistake there stops nothing half-way.
URLs keep their password for the code that connects, but show it masked in repr() and in dumps;
the password is registered with `_redact`, so tables and messages mask it too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from bcbridge import _redact
from bcbridge import transform as steps
from bcbridge.config import ClientSettings, config_error, load_yaml
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
    "default_config",
    "find_config",
    "load_project",
]

DEFAULT_CLIENT = "default"


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
    transform: list[Any] = Field(default_factory=list)  # applied to the request parameters
    cursor: str | None = None  # e.g. lastModifiedDateTime: read incrementally
    page_size: int = Field(1000, ge=1, le=20000)


class OutgoingConfig(_Strict):
    client: str = DEFAULT_CLIENT
    entity: str
    action: str
    company: str | None = None
    key: str | None = None
    key_field: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    etag: str = "fetch"
    batch_size: int = Field(500, ge=1)
    allow_duplicates: bool = False  # create without key_field: BC has no idempotency keys


class Endpoint(_Strict):
    incoming: str | None = None
    outgoing: str | None = None
    reader: Location | None = None
    writer: Location | None = None
    format: str | None = None
    encoding: str | None = None  # a reader's text encoding (default UTF-8), e.g. latin-1
    key: str | None = None  # a writer's upsert key
    annotations: bool = False  # a writer keeps OData annotations such as @odata.etag


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
        if (self.source.incoming is None) == (self.source.reader is None):
            raise ValueError("from: give an incoming name or a reader, not both")
        if (self.target.outgoing is None) == (self.target.writer is None):
            raise ValueError("to: give an outgoing name or a writer, not both")
        return self


class ProjectConfig(_Strict):
    """A project file: the store, clients, incoming and outgoing connections, and the flows that
    join them. Load it with `load_project`, which also checks names, steps and paths."""

    store: Location = DEFAULT_URL
    clients: dict[str, ClientSettings] = Field(default_factory=dict)  # validated at load
    incoming: dict[str, IncomingConfig] = Field(default_factory=dict)
    outgoing: dict[str, OutgoingConfig] = Field(default_factory=dict)
    flows: dict[str, FlowConfig] = Field(default_factory=dict)
    source: str = "environment"
    lines: dict[str, int] = Field(default_factory=dict, exclude=True)

    def client_settings(self, name: str) -> ClientSettings:
        if name in self.clients:
            return self.clients[name]
        if name == DEFAULT_CLIENT:
            return ClientSettings.from_env()
        raise ConfigError(f"no client named {name!r}; defined: {', '.join(self.clients) or 'none'}")

    def flow(self, name: str) -> FlowConfig:
        if name not in self.flows:
            raise ConfigError(
                f"no flow named {name!r}; defined: {', '.join(self.flows) or 'none'}",
                source=self.source,
            )
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


def _where(config: ProjectConfig, path: str) -> str:
    """`file:line: path` for an error about the item at `path` (e.g. flows.copy)."""
    line = config.lines.get(path)
    return f"{config.source}:{line}: {path}" if line else f"{config.source}: {path}"


def _check_names(config: ProjectConfig) -> None:
    for name, flow in config.flows.items():
        for kind, wanted, known in (
            ("incoming", flow.source.incoming, config.incoming),
            ("outgoing", flow.target.outgoing, config.outgoing),
        ):
            if wanted is not None and wanted not in known:
                raise ConfigError(
                    f"{_where(config, f'flows.{name}')}: unknown {kind} {wanted!r}; "
                    f"defined: {', '.join(known) or 'none'}"
                )
        outgoing = config.outgoing.get(str(flow.target.outgoing))
        if (
            outgoing is not None
            and outgoing.action == "create"
            and not outgoing.key_field
            and not outgoing.allow_duplicates
        ):
            raise ConfigError(
                f"{_where(config, f'flows.{name}')}: outgoing {flow.target.outgoing!r} creates "
                "records, so it needs key_field (e.g. number or externalDocumentNumber): a record "
                "re-sent after a crash is matched on it instead of created twice (BC has no "
                "idempotency keys); or set allow_duplicates: true to accept that risk"
            )
    for kind, section in (("incoming", config.incoming), ("outgoing", config.outgoing)):
        for name, item in section.items():
            if item.client != DEFAULT_CLIENT and item.client not in config.clients:
                raise ConfigError(
                    f"{_where(config, f'{kind}.{name}.client')}: unknown client "
                    f"{item.client!r}; defined: {', '.join(config.clients) or 'none'}"
                )


def load_project(path: Path) -> ProjectConfig:
    """Read and check the project file at `path`: every problem a user can fix (a YAML error, an
    unknown name, a step that cannot be built, a missing driver) is a one-line ConfigError with
    file:line and the key's path; relative paths are anchored to the file's folder."""
    data, lines = load_yaml(path)
    try:
        config = ProjectConfig.model_validate({**_short_forms(data), "source": str(path)})
    except ValidationError as exc:
        raise config_error(exc, source=str(path), lines=lines, model=ProjectConfig) from None
    config.lines = lines
    _check_names(config)
    _anchor_paths(config, path.resolve().parent)
    _check_transforms(config, path.resolve().parent)
    _check_locations(config)
    return config


def _check_locations(config: ProjectConfig) -> None:
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
                raise ConfigError(
                    _redact.text(f"{_where(config, f'flows.{name}.{key}')}: {message}")
                ) from None


def _check_location(spec: str, format: str | None) -> None:
    target = sql_target(spec)
    if target is None:
        format_of(spec, format)
        return
    try:
        url = sa.engine.make_url(target[0])
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


def _check_transforms(config: ProjectConfig, base: Path) -> None:
    """Build every chain now, so a bad step is a ConfigError naming its line before any run.
    `python:` modules are looked up next to the project file too (it stays on sys.path, for
    the runs that build the chains again)."""
    if str(base) not in sys.path:
        sys.path.append(str(base))
    for kind, section in (("flows", config.flows), ("incoming", config.incoming)):
        for name, item in section.items():
            _check_chain(config, f"{kind}.{name}", item.transform)


_STEP_INDEX = re.compile(r"transform\[(\d+)\]")


def _check_chain(config: ProjectConfig, path: str, specs: list[Any]) -> None:
    for index, spec in enumerate(specs):
        problem = _step_problem(spec, index)
        if problem is not None:
            line = config.lines.get(f"{path}.transform.{index}")
            where = f"{config.source}:{line}" if line else config.source
            one_line = " ".join(f"{where}: {path}.{problem}".split())
            raise ConfigError(_redact.text(one_line))


def _step_problem(spec: Any, index: int) -> str | None:
    """What is wrong with one step, as `transform[i]...: message`, or None."""
    where = f"transform[{index}]"
    shape = _argument_problem(spec)
    if shape is not None:
        return f"{where}: {shape}"
    try:
        steps.load_chain([spec])
    except ConfigError as exc:
        message = str(exc)
        if _STEP_INDEX.search(message):
            return _STEP_INDEX.sub(where, message, count=1)
        return f"{where}: {message}"
    except Exception as exc:  # a step's own check tripping on an odd value; or the module's import
        return f"{where}: {type(exc).__name__}: {exc}"
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
    if shape == "mapping":
        good = isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
        if isinstance(value, Mapping) and name in ("map", "rename", "convert"):
            good = good and all(isinstance(v, str) for v in value.values())
    elif shape == "names":
        good = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        good = isinstance(value, str)
    return None if good else f"{name}: expected {_EXPECTED[shape]}, got {type(value).__name__}"


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
