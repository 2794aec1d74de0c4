"""Webhooks and the outbox of their deliveries.

The rules of delivery (retries, leases, signing) live in `webhooks/`; the
store keeps the rows and leases them atomically, which each backend does its
own way (one writer for SQLite, SKIP LOCKED for PostgreSQL).
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Sequence
from typing import Literal, Protocol

from shotstamp_service.records import WebhookDelivery, WebhookRecord

__all__ = ["OutboxStore"]


class OutboxStore(Protocol):
    """Used by `webhooks.dispatcher` and the webhook routes."""

    @abc.abstractmethod
    async def add_webhook(self, hook: WebhookRecord) -> None: ...

    @abc.abstractmethod
    async def list_webhooks(self, seller: str) -> list[WebhookRecord]:
        """The seller's webhooks, oldest first."""

    @abc.abstractmethod
    async def get_webhook(self, webhook_id: str) -> WebhookRecord | None: ...

    @abc.abstractmethod
    async def delete_webhook(self, webhook_id: str, seller: str) -> bool:
        """Delete the seller's webhook and its outbox; False if the seller has no such one."""

    @abc.abstractmethod
    async def webhooks_for_sellers(self, sellers: Iterable[str]) -> list[WebhookRecord]: ...

    @abc.abstractmethod
    async def enqueue_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None:
        """Durably add pending deliveries to the outbox (one transaction)."""

    @abc.abstractmethod
    async def claim_deliveries(
        self,
        now: float,
        lease_until: float,
        limit: int,
        *,
        per_seller: int | None = None,
        exclude_sellers: Collection[str] = (),
    ) -> list[WebhookDelivery]:
        """Pending deliveries due at `now`, oldest first, with the webhook's url, secret, seller.

        At most `per_seller` of each seller's, and none of `exclude_sellers`', so
        one seller's backlog cannot fill a claim. Each is leased: its
        `next_attempt_at` moves to `lease_until`, so another dispatcher (or this
        one, after a crash) retries it only once the lease ends.
        """

    @abc.abstractmethod
    async def finish_delivery_attempt(
        self,
        delivery_id: str,
        *,
        status: Literal["pending", "delivered", "failed"],
        next_attempt_at: float,
        last_status: int | None,
        last_error: str | None,
        delivered_at: str | None,
    ) -> None:
        """Record one attempt: counts it, and sets the outcome and the next try."""

    @abc.abstractmethod
    async def list_deliveries(self, webhook_id: str, limit: int = 100) -> list[WebhookDelivery]:
        """The webhook's most recent deliveries, newest first."""
