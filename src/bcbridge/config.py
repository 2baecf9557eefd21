"""Client settings: typed, from YAML or the environment, secrets masked everywhere.

``${VAR}`` and ``${VAR:-default}`` in YAML are expanded before validation, from the
environment and, under it, from a `.env` file beside the YAML file (`dotenv_beside`: a value
already in the environment wins; `.env` values are taken literally, no ``$`` expansion inside
them). A value expanded for a key that looks secret (client_secret, password, token, *_key), a
variable named so (BC_CLIENT_SECRET, DB_PASSWORD) or a URL's password is registered with
`_redact`, so no message, log line or stored error shows it. Validation errors name the file,
the line and the field path (and the BC_* variable a setting came from), never a value.
"""

from __future__ import annotations

import difflib
import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values
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
from pydantic_core import ErrorDetails, PydanticCustomError

from bcbridge import _redact
from bcbridge.errors import ConfigError

__all__ = [
    "ENVIRONMENT",
    "CertificateCredential",
    "ClientSettings",
    "Problem",
    "RateLimit",
    "RetryPolicy",
    "anchor_settings_paths",
    "config_error",
    "did_you_mean",
    "dotenv_beside",
    "expand_env",
    "line_of",
    "load_yaml",
    "problems_of",
    "validate_settings",
]

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_SECRET_WORDS = {"secret", "password", "passwd", "pwd", "token", "key"}
_ALONE_NOT_SECRET = {"pwd", "key"}  # $PWD is the working folder; a flow's `key:` a field name
_KEY_BEFORE = re.compile(r"""["']?([\w-]+)["']?\s*:\s*["']?[^:{}\[\],"']*$""")
_URL_USER = re.compile(r"://[^\s/:@]*:[^\s/@]*$")  # `scheme://user:` right before the ${VAR}
# /v2.0/<tenant>/<environment>[/api/...], or a part of it: what `api_root` adds to the host
_API_ROOT = re.compile(
    r"/v2\.0/(?P<tenant>[^/]+)/(?P<environment>[^/]+)(/api(/.*)?)?/?$|/api(/.*)?$|/v2\.0/?$"
)
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
    # $schemaversion sent with every read of a Subscriber; None: 2.1 only when a $filter needs it
    # (the `in` operator, nested functions; bcbridge.odata.needs_schema_21)
    schema_version: Literal["1.0", "2.0", "2.1"] | None = None
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

    @field_validator("base_url", "authority_url")
    @classmethod
    def _a_host(cls, value: str) -> str:
        """A host URL. The whole API root in base_url would give a doubled path, which BC
        answers with a bare 400: say which values to set instead."""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PydanticCustomError("not_a_url", "expected an https:// URL")
        root = _API_ROOT.search(parts.path)
        if root:
            host = f"{parts.scheme}://{parts.netloc}{parts.path[: root.start()]}"
            context = {"host": host, "tenant": root["tenant"], "environment": root["environment"]}
            raise PydanticCustomError("api_root_in_base_url", "the whole API root", context)
        return value

    @field_validator("api_route")
    @classmethod
    def _an_api_route(cls, value: str) -> str:
        if not re.fullmatch(r"v2\.0|[\w-]+/[\w-]+/v[\w.]+", value):
            raise PydanticCustomError(
                "api_route", "api_route must be v2.0 or publisher/group/version"
            )
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> ClientSettings:
        if self.client_secret is not None:  # from a flag, a file or BC_CLIENT_SECRET: never shown
            _redact.register_secret(self.client_secret.get_secret_value())
        if self.client_secret is None and self.certificate is None:
            raise PydanticCustomError("no_credential", "give client_secret or certificate")
        if self.client_secret is not None and self.certificate is not None:
            raise PydanticCustomError("two_credentials", "give client_secret or certificate")
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
        return validate_settings(values, source=ENVIRONMENT)

    @classmethod
    def from_yaml(cls, path: Path, key: str | None = None) -> ClientSettings:
        data, lines = load_yaml(path)
        section = data.get(key, {}) if key else data
        return validate_settings(
            section, source=str(path), lines=lines, prefix=key, base=path.resolve().parent
        )


def validate_settings(
    values: Mapping[str, Any],
    *,
    source: str,
    lines: Mapping[str, int] | None = None,
    prefix: str | None = None,
    base: Path | None = None,
) -> ClientSettings:
    """`values` as ClientSettings, or a ConfigError in the user's words. `base`: the folder of
    the file the values come from, which their relative paths are relative to."""
    if base is not None:
        values = anchor_settings_paths(values, base)
    try:
        return ClientSettings.model_validate(values)
    except ValidationError as exc:
        raise config_error(
            exc, source=source, lines=lines, prefix=prefix, model=ClientSettings
        ) from None


_PATH_SETTINGS = ("ca_bundle", "log_file", "token_cache_file")
_CERTIFICATE_PATHS = ("private_key_path", "public_certificate_path")


def anchor_settings_paths(values: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Client settings from a file with their relative paths (the CA bundle, the certificate's
    files, the request log, the token cache) made relative to the file's folder `base`, as every
    other path in a project file is; not to wherever the command happens to run."""
    anchored = dict(values)
    for key in _PATH_SETTINGS:
        anchored[key] = _anchor(anchored.get(key), base)
    certificate = anchored.get("certificate")
    if isinstance(certificate, Mapping):
        anchored["certificate"] = {
            **certificate,
            **{key: _anchor(certificate.get(key), base) for key in _CERTIFICATE_PATHS},
        }
    return {key: value for key, value in anchored.items() if key in values or value is not None}


def _anchor(value: Any, base: Path) -> Any:
    if isinstance(value, str | Path) and str(value) and not Path(value).expanduser().is_absolute():
        return str(base / value)
    return value.expanduser() if isinstance(value, Path) else value


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a configuration: the dotted key path it is about (e.g. flows.f1.from,
    or BC_TENANT_ID) and the line telling the user where, what, and what to do."""

    path: str
    text: str

    @property
    def section(self) -> str:
        """The top-level key the problem is in: clients, incoming, flows, ..."""
        return self.path.partition(".")[0]


def config_error(
    exc: ValidationError,
    *,
    source: str,
    lines: Mapping[str, int] | None = None,
    prefix: str | None = None,
    model: type[BaseModel] | None = None,
) -> ConfigError:
    """One line per problem (see `problems_of`)."""
    found = problems_of(exc, source=source, lines=lines, prefix=prefix, model=model)
    return ConfigError("\n".join(problem.text for problem in found))


def problems_of(
    exc: ValidationError,
    *,
    source: str,
    lines: Mapping[str, int] | None = None,
    prefix: str | None = None,
    model: type[BaseModel] | None = None,
) -> list[Problem]:
    """One problem per mistake, `file:line: key.path: what is wrong and what to do`, in the
    user's words rather than pydantic's: the BC_* variable a setting comes from, the YAML key as
    written, an unknown key with the closest valid one (a misspelt key is one problem, not also
    a missing one). Values are not shown (they may be secrets), except an enum's, a path's and a
    URL's, masked as every message is."""
    errors = exc.errors(include_url=False)
    misspelt = _misspelt_keys(errors, model)
    problems = []
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == "missing" and loc in misspelt:
            continue  # said by the unknown key's "did you mean"
        if source == ENVIRONMENT and not prefix:
            name, text = _env_problem(error, loc)
            problems.append(Problem(name, _redact.text(text)))
            continue
        path = ".".join(str(part) for part in ((prefix,) if prefix else ()) + loc)
        line = line_of(path, lines or {})
        where = f"{source}:{line}" if line else source
        message = _in_user_words(error, loc, model)
        problems.append(Problem(path, _redact.text(f"{where}: {path or '(top level)'}: {message}")))
    return problems


def _misspelt_keys(
    errors: list[ErrorDetails], model: type[BaseModel] | None
) -> set[tuple[Any, ...]]:
    """The locs of missing keys that an unknown key next to them is a misspelling of."""
    missing = {tuple(e["loc"]) for e in errors if e["type"] == "missing"}
    found = set()
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] != "extra_forbidden" or not loc or model is None:
            continue
        close = difflib.get_close_matches(str(loc[-1]), _field_names(model, loc[:-1]), n=1)
        if close and (*loc[:-1], close[0]) in missing:
            found.add((*loc[:-1], close[0]))
    return found


ENVIRONMENT = "environment"  # the `source` of settings read from the BC_* variables
_ENV_OF_FIELD = {field: name for name, field in ENV_FIELDS.items()}
_WHAT = {  # what a required setting holds, for the hint that asks for it
    "tenant_id": "the Entra tenant id (a GUID or contoso.onmicrosoft.com)",
    "client_id": "the app registration's application (client) id",
    "client_secret": "the app registration's client secret",
}


def _env_problem(error: ErrorDetails, loc: tuple[Any, ...]) -> tuple[str, str]:
    """A problem with settings from the environment, named by its BC_* variable (or, for a
    setting no variable holds, its key): that name, and the line for the user."""
    kind = error["type"]
    field = "client_secret" if kind == "no_credential" else ".".join(map(str, loc))
    name = _ENV_OF_FIELD.get(field)
    if name and kind in ("missing", "no_credential"):
        return name, (
            f"{name} is not set: export {name}=<{_WHAT.get(field, 'its value')}>, or give "
            "--config FILE with the client settings"
        )
    where = name or (f"environment: {field}" if field else "environment")
    return name or field, f"{where}: {_in_user_words(error, loc, ClientSettings, env=True)}"


def _in_user_words(
    error: ErrorDetails, loc: tuple[Any, ...], model: type[BaseModel] | None, env: bool = False
) -> str:
    """pydantic's message for one problem, said the way a user of the YAML file would."""
    kind, ctx = error["type"], error.get("ctx") or {}
    field = str(loc[-1]) if loc else ""
    value = error.get("input")
    if kind == "missing":
        what = _WHAT.get(field) or _FIELD_HINTS.get(field, "a value")
        return f"missing: add {field}: <{what}>"
    if kind == "extra_forbidden":
        valid = _field_names(model, loc[:-1]) if model else []
        return f"unknown key {field!r}{did_you_mean(field, valid)}"
    if kind == "literal_error":
        valid = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"unknown value {value!r}{did_you_mean(str(value), valid)}"
    if kind in _CUSTOM:
        return _CUSTOM[kind](ctx, env)
    if kind in ("path_not_file", "path_not_exists", "path_not_directory"):
        relative_to = "the current folder" if env else "the file it is written in"
        return f"no file at {value} (a relative path is relative to {relative_to})"
    if kind in _LIMITS:
        return _LIMITS[kind].format(**ctx)
    for prefix, words in _TYPES.items():
        if kind.startswith(prefix):
            return words
    return _plain(error["msg"])


def did_you_mean(name: str, valid: Sequence[str]) -> str:
    """` (did you mean 'x'?); valid: a, b, c` for a name that is not one of `valid`."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid: {', '.join(valid)}" if valid else hint


def _plain(message: str) -> str:
    """pydantic's wording, with its prefixes taken off, as the last resort."""
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    return message


_FIELD_HINTS = {
    "entity": "an entity set, e.g. customers",
    "action": "create, update, upsert, delete or a bound action",
    "from": "an incoming name, a file or a SQL URL",
    "to": "an outgoing name, a file or a SQL URL",
    "thumbprint": "the certificate's SHA-1 thumbprint",
    "private_key_path": "the PEM file of the certificate's private key",
}
_LIMITS = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "too_short": "needs at least {min_length} item(s)",
    "too_long": "takes at most {max_length} item(s)",
}
_TYPES = {  # by the start of pydantic's error type
    "int_": "expected a whole number, e.g. 500",
    "float_": "expected a number, e.g. 30 or 2.5",
    "decimal_": "expected a number, e.g. 30 or 2.5",
    "bool_": "expected true or false",
    "string_": "expected text",
    "dict_": "expected a mapping (key: value)",
    "model_": "expected a mapping (key: value)",
    "list_": "expected a list, e.g. [a, b]",
}


def _no_credential(ctx: Mapping[str, Any], env: bool) -> str:
    return (
        "no credential: add client_secret: ${BC_CLIENT_SECRET}, or certificate: "
        "{private_key_path: key.pem, thumbprint: <SHA-1 thumbprint>}"
    )


def _two_credentials(ctx: Mapping[str, Any], env: bool) -> str:
    return "both client_secret and certificate are given: keep one of them"


def _bad_api_route(ctx: Mapping[str, Any], env: bool) -> str:
    return "expected v2.0, or publisher/group/version for a custom API (e.g. contoso/app/v1.0)"


def _api_root_in_base_url(ctx: Mapping[str, Any], env: bool) -> str:
    names = ("BC_BASE_URL", "BC_TENANT_ID", "BC_ENVIRONMENT") if env else _YAML_NAMES
    values = (ctx["host"], ctx.get("tenant"), ctx.get("environment"))
    wanted = [
        f"{name}{'=' if env else ': '}{value}"
        for name, value in zip(names, values, strict=True)
        if value
    ]
    return (
        "holds the whole API root, but bcbridge adds /v2.0/<tenant>/<environment>/api/v2.0 "
        f"itself: {'set' if env else 'give'} the host alone, {', '.join(wanted)}"
    )


_YAML_NAMES = ("base_url", "tenant_id", "environment")


def _not_a_url(ctx: Mapping[str, Any], env: bool) -> str:
    return "expected an https:// URL, e.g. https://api.businesscentral.dynamics.com"


_CUSTOM: dict[str, Callable[[Mapping[str, Any], bool], str]] = {
    "no_credential": _no_credential,
    "two_credentials": _two_credentials,
    "api_route": _bad_api_route,
    "api_root_in_base_url": _api_root_in_base_url,
    "not_a_url": _not_a_url,
}


def line_of(path: str, lines: Mapping[str, int]) -> int | None:
    """The line of `path`, else of its nearest parent (a missing key has no line of its own)."""
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return None


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys valid in the mapping at `loc` of `model` (aliases where there are), or []."""
    current: Any = model
    for part in loc:
        current = _optional_of(_inner_type(current, part))
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [info.alias or name for name, info in current.model_fields.items() if not info.exclude]


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
                f"environment variable {name} is not set and has no default: export it, or "
                f"write ${{{name}:-<default>}}",
                field=name,
            )
        if _holds_secret(name, match.string, match.start(), match.end()):
            _redact.register_secret(value)
        return value

    return "".join(
        line if line.lstrip().startswith("#") else _VAR.sub(replace, line)
        for line in text.splitlines(keepends=True)
    )


DOTENV = ".env"


def dotenv_beside(path: Path) -> dict[str, str]:
    """The variables of the `.env` file in the folder of `path` ({} when there is none): the
    convention of Meltano, docker compose and python-dotenv, and where the dashboard keeps
    secrets. Values are literal (no ``${VAR}`` expansion inside .env: a secret may hold a $)."""
    dotenv = path.parent / DOTENV
    try:
        text = dotenv.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read the file: {reason}", source=str(dotenv)) from None
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {name: value for name, value in values.items() if value is not None}


def load_yaml(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, int]]:
    """The YAML mapping after ``${VAR}`` expansion, and the line of each dotted key path.
    `environ`: the variables to expand; default the environment over the `.env` beside
    `path` (a variable set in the environment wins)."""
    try:
        raw = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read the file: {reason}", source=str(path)) from None
    if environ is None:
        environ = {**dotenv_beside(path), **os.environ}
    try:
        text = expand_env(raw, environ)
    except ConfigError as exc:  # an unset ${VAR}: name the file and the line it is on
        line = next(
            (
                number
                for number, written in enumerate(raw.splitlines(), 1)
                if f"${{{exc.field}" in written and not written.lstrip().startswith("#")
            ),
            None,
        )
        message = str(exc).removeprefix(f"{exc.field}: ")
        raise ConfigError(message, source=f"{path}:{line}" if line else str(path)) from None
    try:
        node = yaml.compose(text)
        lines: dict[str, int] = {}
        _index_lines(node, "", lines, set())
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, raw, str(path)) from None
    except DuplicateKey as twice:
        raise ConfigError(
            f"{twice.path}: given twice (first at line {twice.first}); YAML would keep only "
            "the last one: rename or remove one of them",
            source=f"{path}:{twice.line}",
        ) from None
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


_MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *base`, which may come more than once


class DuplicateKey(Exception):
    """A mapping with a key twice: YAML would silently keep the last, so it is an error."""

    def __init__(self, path: str, line: int, first: int):
        super().__init__(path)
        self.path, self.line, self.first = path, line, first


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
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            line = key_node.start_mark.line + 1
            if path in first_line and key_node.tag != _MERGE_TAG:
                raise DuplicateKey(path, line, first_line[path])
            first_line[path] = lines[path] = line
            _index_lines(value_node, path, lines, seen, inside)
    else:
        for index, item in enumerate(node.value):
            path = f"{prefix}.{index}"
            lines[path] = item.start_mark.line + 1
            _index_lines(item, path, lines, seen, inside)
