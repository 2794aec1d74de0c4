"""Records the service stores and serves: registrations, checkpoints, API keys."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from shotstamp._canonical import canonical_json
from shotstamp._verify import seller_commitment

__all__ = [
    "AnchorJob",
    "AnchorStatus",
    "ApiKey",
    "CheckpointRecord",
    "NewRegistration",
    "Registration",
    "Role",
    "SigningKeyRecord",
    "WebhookDelivery",
    "WebhookRecord",
    "format_time",
    "new_registration_id",
    "utc_now",
]

Role = Literal["seller", "staff"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_registration_id() -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, Crockford base32.

    Time-ordered so ids sort roughly by arrival, random enough that one
    seller cannot guess another's ids.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`, the one time format of the API."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NewRegistration:
    """What an accepted upload stores before it is sealed."""

    id: str
    seller: str
    sha256: str
    perceptual: dict[str, str]
    received_at: str
    width: int
    height: int
    title: str | None = None
    reference: str | None = None
    idempotency_key: str | None = None
    features: bytes | None = None
    # SHA-256 of what was sent with the idempotency key (registry.request_digest).
    idempotency_digest: str | None = None
    thumbnail: bytes | None = None
    # 32 random bytes: the leaf commits to the seller through them (leaf version 2,
    # docs/security.md). None: a registration logged before, whose leaf names the seller.
    seller_salt: bytes | None = None

    def leaf_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "sha256": self.sha256,
            "perceptual": dict(self.perceptual),
            "received_at": self.received_at,
        }
        if self.seller_salt is None:
            record["seller"] = self.seller
        else:
            record["seller_commitment"] = seller_commitment(self.seller_salt, self.seller)
        return record


@dataclass(frozen=True)
class Registration(NewRegistration):
    """A stored registration; `leaf_index` is set once the sealer has logged it."""

    seq: int = 0
    leaf_index: int | None = None

    @property
    def sealed(self) -> bool:
        return self.leaf_index is not None

    def leaf_bytes(self) -> bytes:
        """The log entry: RFC 8785 canonical JSON of the leaf record."""
        return canonical_json(self.leaf_record())


@dataclass(frozen=True)
class CheckpointRecord:
    tree_size: int
    root_hash: bytes
    timestamp_ns: int
    note: str
    key_id: str

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ns / 1e9, UTC)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    secret_hash: bytes
    seller: str
    role: Role
    created_at: str
    revoked_at: str | None = None
    label: str | None = field(default=None)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class SigningKeyRecord:
    """A checkpoint signing key's public half and when it was (or is) in use.

    The private half lives on disk, never in the store. `key_id` is the hex
    signed-note key hash, which every checkpoint's signature line carries.
    The key is active while `not_after` is None; at most one is.
    """

    key_id: str
    name: str  # the signed-note key name: the log's origin
    algorithm: str
    public_key: bytes  # 32 raw Ed25519 bytes
    not_before: str  # RFC 3339
    not_after: str | None = None

    @property
    def active(self) -> bool:
        return self.not_after is None


@dataclass(frozen=True)
class WebhookRecord:
    """A seller's webhook endpoint; `secret` signs its deliveries (kept: it must sign)."""

    id: str
    seller: str
    url: str
    secret: str
    events: tuple[str, ...]
    created_at: str


DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True)
class WebhookDelivery:
    """One event for one webhook in the outbox; `payload` is the exact body sent each try.

    `url`, `secret` and `seller` are the webhook's, joined in when a delivery is claimed.
    """

    id: str
    webhook_id: str
    event_id: str
    event_type: str
    payload: bytes
    created_at: str
    status: DeliveryStatus = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: str | None = None
    url: str = ""
    secret: str = field(default="", repr=False)
    seller: str = ""


AnchorStatus = Literal["pending", "anchored", "superseded"]


@dataclass(frozen=True)
class AnchorJob:
    """One checkpoint handed to one anchor, from scheduling to stored evidence.

    `anchor` is the configured anchor's name (unique), `kind` its type
    (`rfc3161`, `evm`). A job is `pending` until the anchor returns evidence
    (`anchored`), or until a newer checkpoint is scheduled for the same anchor
    before any work on it began (`superseded`: anchoring the newer one proves
    more, and a late anchor of the older one would prove no earlier a time).
    `progress` is what an anchor keeps between attempts (the EVM anchor's
    signed transaction, so a restart re-sends it rather than paying twice).
    `claim` is the fencing token of the lease under which a worker holds it.
    `checkpoint` is joined in when the job is claimed or served.
    """

    id: int
    anchor: str
    kind: str
    tree_size: int
    status: AnchorStatus
    created_at: float  # Unix seconds
    attempts: int = 0
    next_attempt_at: float = 0.0
    progress: dict[str, Any] | None = None
    last_error: str | None = None
    evidence: dict[str, Any] | None = None
    anchored_at: str | None = None
    claim: str | None = None
    checkpoint: CheckpointRecord | None = None
