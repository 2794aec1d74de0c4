"""Signing keys: the public halves of the keys the log signs with (private halves stay on disk).

The rule (at most one active key, replaced only by compare-and-swap) is
written once, in `SigningKeyStoreCore.activate_signing_key`; a backend opens
the transaction that orders activations and does a `KeySwap`'s plain reads
and writes inside it.
"""

from __future__ import annotations

import abc
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from shotstamp_service.records import SigningKeyRecord
from shotstamp_service.store.errors import ActiveKeyChanged

__all__ = ["KeySwap", "SigningKeyStore", "SigningKeyStoreCore"]


class SigningKeyStore(Protocol):
    """Used by `log.signer.SigningKeys` (start-up adoption, rotation)."""

    @abc.abstractmethod
    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        """Every key the log has signed with, oldest first."""

    @abc.abstractmethod
    async def activate_signing_key(self, key: SigningKeyRecord, *, replacing: str | None) -> None:
        """Make `key` the active key, retiring the active one at `key.not_before`.

        Compare-and-swap: raises `ActiveKeyChanged`, changing nothing, unless
        the active key is `replacing` (None: there is no active key yet).
        """


class KeySwap(Protocol):
    """A backend's plain reads and writes inside one activation transaction."""

    async def active_signing_key(self) -> str | None:
        """The key id of the key without `not_after`, if any."""
        ...

    async def retire_signing_key(self, not_after: str) -> None:
        """Set `not_after` of the active key."""
        ...

    async def add_signing_key(self, key: SigningKeyRecord) -> None:
        """Insert `key` as active (no `not_after`)."""
        ...


class SigningKeyStoreCore(SigningKeyStore):
    """The signing keys' rule, shared by the backends (which provide `_key_transaction`)."""

    @abc.abstractmethod
    def _key_transaction(self) -> AbstractAsyncContextManager[KeySwap]:
        """One transaction holding the lock that orders activations; rolled back on error."""

    async def activate_signing_key(self, key: SigningKeyRecord, *, replacing: str | None) -> None:
        async with self._key_transaction() as swap:
            active = await swap.active_signing_key()
            if active != replacing:
                raise ActiveKeyChanged(f"the active signing key is {active}, not {replacing}")
            await swap.retire_signing_key(key.not_before)
            await swap.add_signing_key(key)
