"""The whole store: one interface per concern, implemented by each backend in one class.

Backends are asynchronous and own their connections. Writes that must survive
a crash (registrations, seals) return only once they are durably committed.
Consumers take the narrowest interface they need (see docs/storage.md):

| concern          | interface           | module              |
| ---------------- | ------------------- | ------------------- |
| API keys         | `KeyStore`          | `keys.py`           |
| registrations    | `RegistrationStore` | `registrations.py`  |
| the log          | `LogStore`          | `log.py`            |
| webhook outbox   | `OutboxStore`       | `outbox.py`         |
| signing keys     | `SigningKeyStore`   | `signing_keys.py`   |
| anchors          | `AnchorStore`       | `anchors.py`        |

Rules that are the same whatever the database (the log's append-only checks,
the signing keys' compare-and-swap, anchor scheduling) are written once, in
each module's `...Core` class; a backend supplies plain reads and writes.
"""

from __future__ import annotations

from shotstamp_service.store.anchors import AnchorAttempt, AnchorStoreCore
from shotstamp_service.store.errors import (
    ActiveKeyChanged,
    DuplicateIdempotencyKey,
    RegistrationSuperseded,
    StoreError,
)
from shotstamp_service.store.keys import KeyStore
from shotstamp_service.store.log import LogStoreCore, NodeCoord, SealBatch
from shotstamp_service.store.outbox import OutboxStore
from shotstamp_service.store.registrations import (
    RegistrationGuard,
    RegistrationStoreCore,
    StoredFingerprint,
)
from shotstamp_service.store.signing_keys import SigningKeyStoreCore

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


class Store(
    KeyStore,
    RegistrationStoreCore,
    LogStoreCore,
    OutboxStore,
    SigningKeyStoreCore,
    AnchorStoreCore,
):
    """All six concerns on one connection manager: what a backend implements."""

    async def open(self) -> None:
        """Connect and migrate; called once before use."""

    async def close(self) -> None:
        """Release connections; pending writes are finished first."""
