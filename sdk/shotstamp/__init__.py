"""shotstamp: register product photos in a signed Merkle log and prove it offline.

Every public name is defined in one module, listed in that module's `__all__`
and re-exported here; `__all__` below is their sorted union (a test checks it).
"""

from shotstamp.canonical import (
    MAX_SAFE_INTEGER,
    canonical_json,
)
from shotstamp.errors import (
    APIError,
    AuthError,
    ConflictError,
    MalformedProofError,
    NotFoundError,
    RateLimited,
    RootMismatchError,
    ServerError,
    ShotstampError,
    TransportError,
    ValidationError,
    VerificationError,
    error_class_for_status,
)

__all__ = [
    "MAX_SAFE_INTEGER",
    "APIError",
    "AuthError",
    "ConflictError",
    "MalformedProofError",
    "NotFoundError",
    "RateLimited",
    "RootMismatchError",
    "ServerError",
    "ShotstampError",
    "TransportError",
    "ValidationError",
    "VerificationError",
    "canonical_json",
    "error_class_for_status",
]
