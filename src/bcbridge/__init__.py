"""bcbridge: a connector for Microsoft Dynamics 365 Business Central API v2.0."""

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
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BCAPIError",
    "BCBridgeError",
    "ConfigError",
    "FatalAPIError",
    "NotFound",
    "PreconditionFailed",
    "RetriableAPIError",
    "Throttled",
    "TransformError",
    "TransportError",
    "Unauthorized",
    "ValidationFailed",
    "__version__",
]
