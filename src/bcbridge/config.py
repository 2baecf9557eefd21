"""Client settings: typed, from YAML or the environment, secrets masked everywhere.

``${VAR}`` and ``${VAR:-default}`` in YAML are expanded from the environment before validation;
a value expanded for a key that looks secret (client_secret, password, token, *_key), a variable
named so (BC_CLIENT_SECRET, DB_PASSWORD) or a URL's password is registered with `_redact`, so no
message, log line or stored error shows it. Validation errors name the file, the line and the
field path (and the BC_* variable a setting came from) and never show a value.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bcbridge import _redact
from bcbridge.errors import ConfigError

__all__ = [
    "CertificateCredential",
    "ClientSettings",
    "RateLimit",
    "RetryPolicy",
    "expand_env",
    "load_yaml",
]

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_SECRET_WORDS = {"secret", "password", "passwd", "pwd", "token", "key"}
_ALONE_NOT_SECRET = {"pwd", "key"}  # $PWD is the working folder; a flow's `key:` a field name
_KEY_BEFORE = re.compile(r"""["']?([\w-]+)["']?\s*:\s*["']?[^:{}\[\],"']*$""")
_URL_USER = re.compile(r"://[^\s/:@]*:[^\s/@]*$")  # `scheme://user:` right before the ${VAR}
ENV_FIELDS = {
    "BC_BASE_URL": "base_url",
    "BC_AUTHORITY_URL": "authority_url",
    "BC_TENANT_ID": "tenant_id",
    "BC_ENVIRONMENT": "environment",
    "BC_CLIENT_ID": "client_id",
    "BC_CLIENT_SECRET": "client_secret",
    "BC_COMPANY": "company",
    "BC_CA_BUNDLE": "ca_bundle",
}


class RateLimit(BaseModel):
    """BC's per-user limit: 6,000 requests per 5-minute sliding window (bc-api.md §8)."""

    model_config = ConfigDict(extra="forbid")
    requests: int = Field(6000, ge=1)
    per_seconds: float = Field(300.0, gt=0)


class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter, capped; Retry-After wins when BC sends it."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(6, ge=1)
    backoff_base: float = Field(0.5, ge=0)
    backoff_max: float = Field(30.0, ge=0)
    retry_after_max: float = Field(120.0, ge=0)


class CertificateCredential(BaseModel):
    """A certificate credential: a PEM private key and its thumbprint (MSAL's dict form)."""

    model_config = ConfigDict(extra="forbid")
    private_key_path: FilePath  # checked when the settings are read, not when MSAL opens it
    thumbprint: str
    public_certificate_path: FilePath | None = None


class ClientSettings(BaseModel):
    """How to reach one BC environment as one app: hosts, tenant, environment, the credential
    (a client secret or a certificate), scopes, limits, retries and request logging.

    Build it from the BC_* variables (`from_env`), a YAML file (`from_yaml`) or keywords; a
    bad value is a ConfigError naming the setting. The secret is a SecretStr, masked in repr and
    registered so that no message or log line ever shows it.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base_url: str = "https://api.businesscentral.dynamics.com"
    authority_url: str = "https://login.microsoftonline.com"
    tenant_id: str
    environment: str = "production"
    client_id: str
    client_secret: SecretStr | None = None
    certificate: CertificateCredential | None = None
    scopes: list[str] = Field(default_factory=lambda: [BC_SCOPE])
    api_route: str = "v2.0"
    company: str | None = None
    ca_bundle: FilePath | None = None
    log_requests: bool = False
    log_file: Path | None = None  # None: stderr
    timeout: float = Field(60.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    max_concurrency: int = Field(5, ge=1)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    token_cache_file: Path | None = None

    @field_validator("log_file", "token_cache_file")
    @classmethod
    def _folder_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.parent.is_dir():
            raise ValueError(f"the folder {value.parent} does not exist; create it first")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> ClientSettings:
        if self.client_secret is not None:  # from a flag, a file or BC_CLIENT_SECRET: never shown
            _redact.register_secret(self.client_secret.get_secret_value())
        if (self.client_secret is None) == (self.certificate is None):
            raise ValueError("give exactly one of client_secret or certificate")
        if not re.fullmatch(r"v2\.0|[\w-]+/[\w-]+/v[\w.]+", self.api_route):
            raise ValueError("api_route must be 'v2.0' or 'publisher/group/version'")
        return self

    @property
    def api_root(self) -> str:
        return (
            f"{self.base_url.rstrip('/')}/v2.0/{self.tenant_id}/{self.environment}"
            f"/api/{self.api_route}"
        )

    @property
    def authority(self) -> str:
        return f"{self.authority_url.rstrip('/')}/{self.tenant_id}"

    @property
    def principal(self) -> str:
        """What BC's limits are counted per: the tenant and the app."""
        return f"{self.tenant_id}/{self.client_id}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientSettings:
        """Settings from the BC_* variables; `overrides` (e.g. CLI flags) win when not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {
            field: environ[name] for name, field in ENV_FIELDS.items() if environ.get(name)
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return validate_settings(values, source="environment")

    @classmethod
    def from_yaml(cls, path: Path, key: str | None = None) -> ClientSettings:
        data, lines = load_yaml(path)
        section = data.get(key, {}) if key else data
        return validate_settings(section, source=str(path), lines=lines, prefix=key)


def validate_settings(
    values: Mapping[str, Any],
    *,
    source: str,
    lines: Mapping[str, int] | None = None,
    prefix: str | None = None,
) -> ClientSettings:
    try:
        return ClientSettings.model_validate(values)
    except ValidationError as exc:
        raise config_error(
            exc, source=source, lines=lines, prefix=prefix, model=ClientSettings
        ) from None


def config_error(
    exc: ValidationError,
    *,
    source: str,
    lines: Mapping[str, int] | None = None,
    prefix: str | None = None,
    model: type[BaseModel] | None = None,
) -> ConfigError:
    """One message per problem: file, line, field path and what was expected; no input values.
    pydantic's words are put in the user's: the BC_* variable a missing setting comes from, an
    unknown key with the closest valid one."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(error["loc"])
        path = ".".join(str(part) for part in ((prefix,) if prefix else ()) + loc)
        line = _line_of(path, lines or {})
        where = f"{source}:{line}" if line else source
        message = _in_user_words(error["type"], error["msg"], loc, source, model)
        problems.append(_redact.text(f"{where}: {path or '(top level)'}: {message}"))
    return ConfigError("\n".join(problems))


def _line_of(path: str, lines: Mapping[str, int]) -> int | None:
    """The line of `path`, else of its nearest parent (a missing key has no line of its own)."""
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return None


_ENV_OF_FIELD = {field: name for name, field in ENV_FIELDS.items()}


def _in_user_words(
    kind: str, message: str, loc: tuple[Any, ...], source: str, model: type[BaseModel] | None
) -> str:
    field = str(loc[-1]) if loc else ""
    if kind == "missing" and source == "environment" and field in _ENV_OF_FIELD:
        return f"missing: set {_ENV_OF_FIELD[field]} (or give --config)"
    if kind == "missing":
        return "required, but not given"
    if kind == "extra_forbidden":
        valid = _field_names(model, loc[:-1]) if model else []
        close = difflib.get_close_matches(field, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = f"; valid: {', '.join(valid)}" if valid and not close else ""
        return f"unknown key {field!r}{hint}{listed}"
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys valid in the mapping at `loc` of `model` (aliases where there are), or []."""
    current: Any = model
    for part in loc:
        current = _optional_of(_inner_type(current, part))
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [info.alias or name for name, info in current.model_fields.items()]


def _inner_type(current: Any, part: Any) -> Any:
    """One step down a loc: a model's field, a dict's value or a list's item type."""
    if isinstance(current, type) and issubclass(current, BaseModel):
        for name, info in current.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    if get_origin(current) in (dict, list):
        return get_args(current)[-1]
    return None


def _optional_of(kind: Any) -> Any:
    """`X | None` -> X; anything else unchanged."""
    if get_origin(kind) in (Union, UnionType):
        arguments = [arg for arg in get_args(kind) if arg is not type(None)]
        return arguments[0] if len(arguments) == 1 else None
    return kind


def looks_secret(name: str) -> bool:
    """client_secret, password, db_password, api_key, TOKEN, BC_CLIENT_SECRET: yes;
    key, PWD, token_cache_file: no."""
    parts = [part for part in re.split(r"[_\W]+", name.lower()) if part]
    if not parts or parts[-1] not in _SECRET_WORDS:
        return False
    return len(parts) > 1 or parts[0] not in _ALONE_NOT_SECRET


def _holds_secret(name: str, line: str, start: int, end: int) -> bool:
    """Whether the ``${name}`` at line[start:end] is a secret: by its variable's name, the key
    it is the value of, or its place as a URL's password."""
    before = line[:start]
    key = _KEY_BEFORE.search(before)
    in_url_password = bool(_URL_USER.search(before)) and "@" in line[end:]
    return looks_secret(name) or bool(key and looks_secret(key[1])) or in_url_password


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset VAR without default is an error.
    Whole-line YAML comments are left alone, so examples in comments need no variables.
    Values that are secrets (see `_holds_secret`) are registered with `_redact`."""
    environ = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        if name in environ:
            value = environ[name]
        elif default is not None:
            value = default
        else:
            raise ConfigError(
                f"environment variable {name} is not set and has no default", field=name
            )
        if _holds_secret(name, match.string, match.start(), match.end()):
            _redact.register_secret(value)
        return value

    return "".join(
        line if line.lstrip().startswith("#") else _VAR.sub(replace, line)
        for line in text.splitlines(keepends=True)
    )


def load_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The YAML mapping after ``${VAR}`` expansion, and the line of each dotted key path."""
    try:
        raw = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read the file: {reason}", source=str(path)) from None
    text = expand_env(raw)
    try:
        node = yaml.compose(text)
        lines: dict[str, int] = {}
        _index_lines(node, "", lines, set())
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, raw, str(path)) from None
    except RecursionError:
        raise ConfigError("not valid YAML: nested too deeply", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", source=str(path))
    return data, lines


def _yaml_error(exc: yaml.YAMLError, raw: str, source: str) -> ConfigError:
    """One line: where, what, and the line as written (before ``${VAR}`` expansion, so a
    secret's value never shows; what is left is masked too)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return ConfigError(_redact.text(message), source=source)
    raw_lines = raw.splitlines()
    written = raw_lines[mark.line].strip() if mark.line < len(raw_lines) else ""
    near = f"; the line reads: {written[:120]}" if written else ""
    return ConfigError(
        _redact.text(f"{message}, column {mark.column + 1}{near}"),
        source=f"{source}:{mark.line + 1}",
    )


def _index_lines(
    node: yaml.Node | None,
    prefix: str,
    lines: dict[str, int],
    seen: set[int],
    inside: frozenset[int] = frozenset(),
) -> None:
    """Record each key path's line. A node met again came through an alias: it is walked once
    (many aliases of aliases would take exponential time), and one that refers to a node it is
    inside (``a: &x [*x]``) has no end, so it is an error rather than a RecursionError."""
    if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        return
    if id(node) in inside:
        raise yaml.MarkedYAMLError(
            problem=f"{prefix or 'the document'} refers to itself through an alias",
            problem_mark=node.start_mark,
        )
    if id(node) in seen:
        return
    seen.add(id(node))
    inside = inside | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[path] = key_node.start_mark.line + 1
            _index_lines(value_node, path, lines, seen, inside)
    else:
        for index, item in enumerate(node.value):
            path = f"{prefix}.{index}"
            lines[path] = item.start_mark.line + 1
            _index_lines(item, path, lines, seen, inside)
