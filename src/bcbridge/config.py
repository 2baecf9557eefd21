"""Client settings: typed, from YAML or the environment, secrets masked everywhere.

``${VAR}`` and ``${VAR:-default}`` in YAML are expanded from the environment before validation.
Validation errors name the file, the line and the field path, and never show a secret's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

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
    private_key_path: Path
    thumbprint: str
    public_certificate_path: Path | None = None


class ClientSettings(BaseModel):
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
    ca_bundle: Path | None = None
    log_requests: bool = False
    log_file: Path | None = None  # None: stderr
    timeout: float = Field(60.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    max_concurrency: int = Field(5, ge=1)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    token_cache_file: Path | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> ClientSettings:
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
        raise config_error(exc, source=source, lines=lines, prefix=prefix) from None


def config_error(
    exc: ValidationError,
    *,
    source: str,
    lines: Mapping[str, int] | None = None,
    prefix: str | None = None,
) -> ConfigError:
    """One message per problem: file, line, field path and what was expected; no input values."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in ((prefix,) if prefix else ()) + tuple(error["loc"]))
        line = (lines or {}).get(path)
        where = f"{source}:{line}" if line else source
        problems.append(f"{where}: {path or '(top level)'}: {error['msg']}")
    return ConfigError("\n".join(problems))


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset VAR without default is an error.
    Whole-line YAML comments are left alone, so examples in comments need no variables."""
    environ = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set and has no default", field=name)

    return "".join(
        line if line.lstrip().startswith("#") else _VAR.sub(replace, line)
        for line in text.splitlines(keepends=True)
    )


def load_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The YAML mapping after ``${VAR}`` expansion, and the line of each dotted key path."""
    try:
        text = expand_env(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", source=str(path))
    lines: dict[str, int] = {}
    _index_lines(node, "", lines)
    return data, lines


def _index_lines(node: yaml.Node | None, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[path] = key_node.start_mark.line + 1
            _index_lines(value_node, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = f"{prefix}.{index}"
            lines[path] = item.start_mark.line + 1
            _index_lines(item, path, lines)
