"""API keys: random, shown once, stored as SHA-256 hashes, compared in constant time.

A key reads `ss_<key id>_<secret>`. The key id (public, 12 hex digits) finds the
row; the SHA-256 of the whole key is compared with `hmac.compare_digest`.
Hashing without a slow KDF is sound here because the secret is 256 random bits,
not a password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from shotstamp_service.records import ApiKey, Role, format_time, utc_now
from shotstamp_service.store import KeyStore

__all__ = ["Principal", "authenticate", "issue_key", "parse_bearer"]

_PREFIX = "ss"


@dataclass(frozen=True)
class Principal:
    seller: str
    role: Role
    key_id: str

    @property
    def is_staff(self) -> bool:
        return self.role == "staff"


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def issue_key(seller: str, role: Role, label: str | None = None) -> tuple[str, ApiKey]:
    """A new key: the secret string (show it once) and the record to store."""
    key_id = secrets.token_hex(6)
    key = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        key_id=key_id,
        secret_hash=_hash(key),
        seller=seller,
        role=role,
        created_at=format_time(utc_now()),
        label=label,
    )
    return key, record


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(store: KeyStore, key: str) -> Principal | None:
    """The principal for a presented key, or None (unknown, malformed or revoked)."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or len(parts[1]) != 12:
        return None
    record = await store.get_api_key(parts[1])
    if record is None:
        # Compare anyway so an unknown id costs the same as a wrong secret.
        hmac.compare_digest(_hash(key), b"\0" * 32)
        return None
    if not hmac.compare_digest(_hash(key), record.secret_hash) or not record.active:
        return None
    return Principal(seller=record.seller, role=record.role, key_id=record.key_id)
