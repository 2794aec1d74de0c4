"""Storage backends behind one interface."""

from .base import (
    ActiveKeyChanged,
    DuplicateIdempotencyKey,
    NodeCoord,
    SealBatch,
    Store,
    StoredFingerprint,
    StoreError,
)

__all__ = [
    "ActiveKeyChanged",
    "DuplicateIdempotencyKey",
    "NodeCoord",
    "SealBatch",
    "Store",
    "StoreError",
    "StoredFingerprint",
]
