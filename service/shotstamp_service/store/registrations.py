"""Registrations: what was uploaded, by whom, when, and its fingerprints.

Writes go through group commit (`group_commit.py`): concurrent uploads share
one durable transaction. What both backends share is in
`RegistrationStoreCore`; the rest is plain reads.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shotstamp_service.records import NewRegistration, Registration
from shotstamp_service.store.errors import StoreError

__all__ = [
    "ForeignScreen",
    "RegistrationGuard",
    "RegistrationStore",
    "RegistrationStoreCore",
    "ScreenFactory",
    "StoredFingerprint",
]

RegistrationGuard = Callable[[Sequence[NewRegistration]], Awaitable[Sequence[StoreError | None]]]
"""Given registrations about to be written, an error for each that must not be (else None)."""


class ForeignScreen(Protocol):
    """The guard's look at a batch, taken on the event loop before the commit lock.

    Under the lock the store reads the registrations other processes committed
    with a seq above `after` and asks `check` about them, on whatever thread
    holds the lock; only when `check` cannot decide alone (a row is a candidate
    that needs stage 2) does the store run the whole guard on the event loop.
    """

    after: int  # every registration committed elsewhere above this seq is unseen by the look

    def check(self, rows: Sequence[StoredFingerprint]) -> list[StoreError | None] | None:
        """Verdicts for the batch against `rows` (pure: any thread), or None: ask the guard."""


ScreenFactory = Callable[[Sequence[NewRegistration]], ForeignScreen | None]
"""A batch's `ForeignScreen`, made on the event loop without awaiting; None: only the guard."""


@dataclass(frozen=True)
class StoredFingerprint:
    """What the in-memory index needs of each registration to be rebuilt at start."""

    seq: int
    seller: str
    sha256: str
    perceptual: dict[str, str]
    features: bytes | None
    width: int
    height: int


class RegistrationStore(Protocol):
    """Used by the registry (decisions, the index) and the registration routes."""

    @abc.abstractmethod
    def guard_registrations(
        self, guard: RegistrationGuard, screen: ScreenFactory | None = None
    ) -> None:
        """Have `guard` look at each batch of new registrations just before it is written.

        A store shared by several processes calls it under the lock that orders
        registration commits, so everything the others committed is visible to
        it; a registration it returns an error for is not stored, and that
        error is raised to its caller. With `screen`, the store first asks the
        batch's `ForeignScreen` about the rows other processes committed since
        the look it was made from, under the lock without leaving its thread,
        and calls `guard` only when the screen cannot decide.
        """

    @abc.abstractmethod
    async def add_registration(self, new: NewRegistration) -> Registration:
        """Durably store a pending registration and return it with its `seq`.

        Raises DuplicateIdempotencyKey when (seller, idempotency_key) exists.
        """

    @abc.abstractmethod
    async def get_registration(self, registration_id: str) -> Registration | None: ...

    @abc.abstractmethod
    async def get_registrations(self, seqs: Iterable[int]) -> dict[int, Registration]: ...

    @abc.abstractmethod
    async def find_by_sha256(self, sha256: str) -> list[Registration]:
        """Registrations of these exact file bytes, oldest first."""

    @abc.abstractmethod
    async def find_by_idempotency_key(self, seller: str, key: str) -> Registration | None: ...

    @abc.abstractmethod
    def iter_fingerprints(
        self, after_seq: int = 0, skip: Sequence[int] = ()
    ) -> AsyncIterator[StoredFingerprint]:
        """Every registration's fingerprint with seq > after_seq, in seq order, but those
        whose seq is in `skip` (the reader has them: not read at all)."""

    @abc.abstractmethod
    async def get_features(self, seqs: Iterable[int]) -> dict[int, bytes]: ...

    @abc.abstractmethod
    async def get_thumbnail(self, seq: int) -> bytes | None: ...


class RegistrationStoreCore(RegistrationStore):
    """What every backend does alike; it provides `_fingerprint_page`."""

    fingerprint_page = 20_000

    def guard_registrations(
        self, guard: RegistrationGuard, screen: ScreenFactory | None = None
    ) -> None:
        return None  # a store only this process writes: nothing to guard against

    @abc.abstractmethod
    async def _fingerprint_page(
        self, after_seq: int, limit: int, skip: Sequence[int] = ()
    ) -> list[StoredFingerprint]:
        """At most `limit` fingerprints with seq > after_seq and not in `skip`, in seq order."""

    async def iter_fingerprints(
        self, after_seq: int = 0, skip: Sequence[int] = ()
    ) -> AsyncIterator[StoredFingerprint]:
        while True:
            page = await self._fingerprint_page(after_seq, self.fingerprint_page, skip)
            for item in page:
                yield item
            if len(page) < self.fingerprint_page:
                return
            after_seq = page[-1].seq
