"""bcbridge: a connector for Microsoft Dynamics 365 Business Central API v2.0.

Everything a program needs is importable from here::

    from bcbridge import BusinessCentralClient, ClientSettings, Publisher, Subscriber

The errors are imported at once (they are small); the rest is imported on first use, so that
``import bcbridge`` (and so ``bcbridge --help``) does not pay for httpx, MSAL and SQLAlchemy.
The submodules stay importable for the names not listed here.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from bcbridge.errors import (
    AuthError,
    BCAPIError,
    BCBridgeError,
    ConfigError,
    FatalAPIError,
    NotFound,
    PreconditionFailed,
    RetriableAPIError,
    Throttled,
    TransformError,
    TransportError,
    Unauthorized,
    ValidationFailed,
    WriteError,
)

# The one place the version is written: pyproject.toml reads it from here (hatchling's dynamic
# version), and installed metadata (importlib.metadata) is built from it.
__version__ = "0.1.0"

if TYPE_CHECKING:  # type checkers and IDEs see real imports; at run time __getattr__ does them
    from bcbridge.auth import MsalTokenSource, StaticToken, TokenSource
    from bcbridge.client import BatchOperation, BatchResult, BusinessCentralClient
    from bcbridge.config import ClientSettings
    from bcbridge.flowconfig import ProjectConfig, load_project
    from bcbridge.flows import FlowRunner, RunResult
    from bcbridge.publisher import Outcome, Publisher, RecordResult
    from bcbridge.store import FlowBusy, LeaseLost, RunStatus, Store, StoreError, Task, TaskStatus
    from bcbridge.subscriber import Subscriber
    from bcbridge.sync import Client
    from bcbridge.transform import Chain, load_chain, load_chain_file

# public name -> the module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "BusinessCentralClient": "bcbridge.client",
    "BatchOperation": "bcbridge.client",
    "BatchResult": "bcbridge.client",
    "Client": "bcbridge.sync",
    "ClientSettings": "bcbridge.config",
    "TokenSource": "bcbridge.auth",
    "MsalTokenSource": "bcbridge.auth",
    "StaticToken": "bcbridge.auth",
    "Subscriber": "bcbridge.subscriber",
    "Publisher": "bcbridge.publisher",
    "RecordResult": "bcbridge.publisher",
    "Outcome": "bcbridge.publisher",
    "Chain": "bcbridge.transform",
    "load_chain": "bcbridge.transform",
    "load_chain_file": "bcbridge.transform",
    "ProjectConfig": "bcbridge.flowconfig",
    "load_project": "bcbridge.flowconfig",
    "FlowRunner": "bcbridge.flows",
    "RunResult": "bcbridge.flows",
    "Store": "bcbridge.store",
    "Task": "bcbridge.store",
    "TaskStatus": "bcbridge.store",
    "RunStatus": "bcbridge.store",
    "StoreError": "bcbridge.store",
    "LeaseLost": "bcbridge.store",
    "FlowBusy": "bcbridge.store",
}


if not TYPE_CHECKING:  # hidden from type checkers, so that a misspelt name is still an error

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'bcbridge' has no attribute {name!r}")
        value = getattr(import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AuthError",
    "BCAPIError",
    "BCBridgeError",
    "BatchOperation",
    "BatchResult",
    "BusinessCentralClient",
    "Chain",
    "Client",
    "ClientSettings",
    "ConfigError",
    "FatalAPIError",
    "FlowBusy",
    "FlowRunner",
    "LeaseLost",
    "MsalTokenSource",
    "NotFound",
    "Outcome",
    "PreconditionFailed",
    "ProjectConfig",
    "Publisher",
    "RecordResult",
    "RetriableAPIError",
    "RunResult",
    "RunStatus",
    "StaticToken",
    "Store",
    "StoreError",
    "Subscriber",
    "Task",
    "TaskStatus",
    "Throttled",
    "TokenSource",
    "TransformError",
    "TransportError",
    "Unauthorized",
    "ValidationFailed",
    "WriteError",
    "__version__",
    "load_chain",
    "load_chain_file",
    "load_project",
]
