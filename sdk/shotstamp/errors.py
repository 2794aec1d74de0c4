"""`shotstamp.errors`, kept for compatibility: the old module path (docs/sdk-api.md)."""

from shotstamp._exceptions import (
    APIError,
    AuthError,
    ConflictError,
    MalformedProofError,
    NotFoundError,
    NotSealedError,
    RateLimited,
    RootMismatchError,
    ServerError,
    ShotstampError,
    TransportError,
    ValidationError,
    VerificationError,
    WebhookVerificationError,
    error_class_for_status,
)

__all__ = [
    "APIError",
    "AuthError",
    "ConflictError",
    "MalformedProofError",
    "NotFoundError",
    "NotSealedError",
    "RateLimited",
    "RootMismatchError",
    "ServerError",
    "ShotstampError",
    "TransportError",
    "ValidationError",
    "VerificationError",
    "WebhookVerificationError",
    "error_class_for_status",
]
