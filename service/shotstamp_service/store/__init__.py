"""Storage backends behind one interface per concern (see docs/storage.md)."""

from shotstamp_service.store.anchors import AnchorAttempt, AnchorStore
from shotstamp_service.store.base import Store
from shotstamp_service.store.errors import (
    ActiveKeyChanged,
    DuplicateIdempotencyKey,
    RegistrationSuperseded,
    StoreError,
)
from shotstamp_service.store.keys import KeyStore
from shotstamp_service.store.log import CheckpointReader, LogStore, NodeCoord, SealBatch
from shotstamp_service.store.outbox import OutboxStore
from shotstamp_service.store.registrations import (
    ForeignScreen,
    RegistrationGuard,
    RegistrationStore,
    ScreenFactory,
    StoredFingerprint,
)
from shotstamp_service.store.signing_keys import SigningKeyStore

__all__ = [
    "ActiveKeyChanged",
    "AnchorAttempt",
    "AnchorStore",
    "CheckpointReader",
    "DuplicateIdempotencyKey",
    "ForeignScreen",
    "KeyStore",
    "LogStore",
    "NodeCoord",
    "OutboxStore",
    "RegistrationGuard",
    "RegistrationStore",
    "RegistrationSuperseded",
    "ScreenFactory",
    "SealBatch",
    "SigningKeyStore",
    "Store",
    "StoreError",
    "StoredFingerprint",
]
