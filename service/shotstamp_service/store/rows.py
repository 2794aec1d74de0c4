"""Stored rows → records, one mapping for both stores.

`sqlite3.Row` and `asyncpg.Record` both read columns by name, so the two
backends differ only in how a JSON column arrives: SQLite keeps it as TEXT,
PostgreSQL as `jsonb`, decoded by the connection's codec. `Rows(json_text=...)`
says which; the column lists are shared too, so a new column is added once.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from shotstamp_service.records import (
    AnchorJob,
    ApiKey,
    CheckpointRecord,
    Registration,
    SigningKeyRecord,
    WebhookDelivery,
    WebhookRecord,
)
from shotstamp_service.store.registrations import StoredFingerprint

__all__ = [
    "ANCHOR_COLUMNS",
    "CHECKPOINT_COLUMNS",
    "DELIVERY_COLUMNS",
    "FINGERPRINT_COLUMNS",
    "REG_COLUMNS",
    "Rows",
]

REG_COLUMNS = (
    "seq, id, seller, sha256, perceptual, received_at, width, height, title, reference,"
    " idempotency_key, idempotency_digest, leaf_index, seller_salt"
)
FINGERPRINT_COLUMNS = "seq, seller, sha256, perceptual, features, width, height"
DELIVERY_COLUMNS = (
    "d.id, d.webhook_id, d.event_id, d.event_type, d.payload, d.created_at, d.status,"
    " d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.delivered_at"
)
ANCHOR_COLUMNS = (
    "a.id, a.anchor, a.kind, a.tree_size, a.status, a.created_at, a.attempts,"
    " a.next_attempt_at, a.claim, a.progress, a.last_error, a.evidence, a.anchored_at"
)
CHECKPOINT_COLUMNS = "c.root_hash, c.timestamp_ns, c.note, c.key_id"


class Row(Protocol):
    def __getitem__(self, key: str) -> Any: ...


class Rows:
    """The record of each kind of row; `json_text`: JSON columns arrive as text."""

    def __init__(self, *, json_text: bool) -> None:
        self._json_text = json_text

    def _json(self, value: Any) -> Any:
        if value is None or not self._json_text:
            return value
        return json.loads(value)

    def registration(self, row: Row) -> Registration:
        return Registration(
            seq=row["seq"],
            id=row["id"],
            seller=row["seller"],
            sha256=row["sha256"],
            perceptual=self._json(row["perceptual"]),
            received_at=row["received_at"],
            width=row["width"],
            height=row["height"],
            title=row["title"],
            reference=row["reference"],
            idempotency_key=row["idempotency_key"],
            idempotency_digest=row["idempotency_digest"],
            leaf_index=row["leaf_index"],
            seller_salt=None if row["seller_salt"] is None else bytes(row["seller_salt"]),
        )

    def fingerprint(self, row: Row) -> StoredFingerprint:
        return StoredFingerprint(
            seq=row["seq"],
            seller=row["seller"],
            sha256=row["sha256"],
            perceptual=self._json(row["perceptual"]),
            features=bytes(row["features"]) if row["features"] is not None else None,
            width=row["width"],
            height=row["height"],
        )

    def checkpoint(self, row: Row) -> CheckpointRecord:
        return CheckpointRecord(
            tree_size=row["tree_size"],
            root_hash=bytes(row["root_hash"]),
            timestamp_ns=row["timestamp_ns"],
            note=row["note"],
            key_id=row["key_id"],
        )

    def api_key(self, row: Row) -> ApiKey:
        return ApiKey(
            key_id=row["key_id"],
            secret_hash=bytes(row["secret_hash"]),
            seller=row["seller"],
            role=row["role"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
            label=row["label"],
        )

    def webhook(self, row: Row) -> WebhookRecord:
        return WebhookRecord(
            id=row["id"],
            seller=row["seller"],
            url=row["url"],
            secret=row["secret"],
            events=tuple(self._json(row["events"])),
            created_at=row["created_at"],
        )

    def delivery(self, row: Row, *, joined: bool = False) -> WebhookDelivery:
        return WebhookDelivery(
            id=row["id"],
            webhook_id=row["webhook_id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            payload=bytes(row["payload"]),
            created_at=row["created_at"],
            status=row["status"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            last_status=row["last_status"],
            last_error=row["last_error"],
            delivered_at=row["delivered_at"],
            url=row["url"] if joined else "",
            secret=row["secret"] if joined else "",
            seller=row["seller"] if joined else "",
        )

    def signing_key(self, row: Row) -> SigningKeyRecord:
        return SigningKeyRecord(
            key_id=row["key_id"],
            name=row["name"],
            algorithm=row["algorithm"],
            public_key=bytes(row["public_key"]),
            not_before=row["not_before"],
            not_after=row["not_after"],
        )

    def anchor_job(self, row: Row, *, joined: bool = False) -> AnchorJob:
        return AnchorJob(
            id=row["id"],
            anchor=row["anchor"],
            kind=row["kind"],
            tree_size=row["tree_size"],
            status=row["status"],
            created_at=row["created_at"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            claim=row["claim"],
            progress=self._json(row["progress"]),
            last_error=row["last_error"],
            evidence=self._json(row["evidence"]),
            anchored_at=row["anchored_at"],
            checkpoint=self.checkpoint(row) if joined else None,
        )
