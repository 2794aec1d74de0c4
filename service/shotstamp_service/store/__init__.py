"""Storage backends behind one interface."""

from .base import (
    DuplicateIdempotencyKey,
    NodeCoord,
    SealBatch,
    Store,
    StoredFingerprint,
    StoreError,
)

__all__ = [
    "DuplicateIdempotencyKey",
    "NodeCoord",
    "SealBatch",
    "Store",
    "StoreError",
    "StoredFingerprint",
]
