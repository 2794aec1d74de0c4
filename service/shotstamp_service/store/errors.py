"""The store's domain errors; the HTTP layer maps them to statuses."""

from __future__ import annotations

from shotstamp_service.records import Registration

__all__ = ["ActiveKeyChanged", "DuplicateIdempotencyKey", "RegistrationSuperseded", "StoreError"]


class StoreError(Exception):
    """A backend failed; the operation did not take effect."""


class ActiveKeyChanged(StoreError):
    """The active signing key is not the one the caller expected to replace."""


class DuplicateIdempotencyKey(StoreError):
    """The seller already used this idempotency key; `existing` is that registration."""

    def __init__(self, existing: Registration) -> None:
        super().__init__(f"idempotency key already used by registration {existing.id}")
        self.existing = existing


class RegistrationSuperseded(StoreError):
    """Not stored: a registration another process committed first decides this upload."""
