"""Storage backends behind one interface."""

from shotstamp_service.store.base import (
    ActiveKeyChanged,
    AnchorAttempt,
    DuplicateIdempotencyKey,
    NodeCoord,
    RegistrationGuard,
    RegistrationSuperseded,
    SealBatch,
    Store,
    StoredFingerprint,
    StoreError,
)

__all__ = [
    "ActiveKeyChanged",
    "AnchorAttempt",
    "DuplicateIdempotencyKey",
    "NodeCoord",
    "RegistrationGuard",
    "RegistrationSuperseded",
    "SealBatch",
    "Store",
    "StoreError",
    "StoredFingerprint",
]
