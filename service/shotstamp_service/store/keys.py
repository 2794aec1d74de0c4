"""API keys: who may call the service, as which seller, in which role.

No rule here beyond what the schema says (a key id is unique; revoking applies
once), so a backend implements this interface directly.
"""

from __future__ import annotations

import abc
from typing import Protocol

from shotstamp_service.records import ApiKey

__all__ = ["KeyStore"]


class KeyStore(Protocol):
    """Used by `http.auth` and the `keys` command."""

    @abc.abstractmethod
    async def add_api_key(self, key: ApiKey) -> None: ...

    @abc.abstractmethod
    async def get_api_key(self, key_id: str) -> ApiKey | None: ...

    @abc.abstractmethod
    async def list_api_keys(self) -> list[ApiKey]: ...

    @abc.abstractmethod
    async def revoke_api_key(self, key_id: str, revoked_at: str) -> bool:
        """Mark a key revoked; False if there is no such active key."""
