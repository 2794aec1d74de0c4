"""The storage interface every backend implements, and its domain errors.

Backends are asynchronous and own their connections. Writes that must survive
a crash (registrations, seals) return only once they are durably committed.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from shotstamp_service.log.tiles import TileCache, TileCoord, TileNodeReader, TileWrite
from shotstamp_service.records import (
    AnchorJob,
    AnchorStatus,
    ApiKey,
    CheckpointRecord,
    NewRegistration,
    Registration,
    SigningKeyRecord,
    WebhookDelivery,
    WebhookRecord,
)

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

NodeCoord = tuple[int, int]
"""(level, index) of a complete subtree: it covers leaves [index·2^level, (index+1)·2^level)."""


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


RegistrationGuard = Callable[[Sequence[NewRegistration]], Awaitable[Sequence[StoreError | None]]]
"""Given registrations about to be written, an error for each that must not be (else None)."""


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


@dataclass(frozen=True)
class SealBatch:
    """Everything one seal writes, committed together or not at all."""

    assignments: Sequence[tuple[int, int]]  # (registration seq, leaf index)
    tiles: Sequence[TileWrite]  # (level, index, data) of every tile the seal changed, whole
    checkpoint: CheckpointRecord


@dataclass(frozen=True)
class AnchorAttempt:
    """The outcome of one attempt at an anchor job, written by `finish_anchor_attempt`."""

    status: AnchorStatus
    attempts: int
    next_attempt_at: float
    progress: dict[str, Any] | None = None
    last_error: str | None = None
    evidence: dict[str, Any] | None = None
    anchored_at: str | None = None


class Store(abc.ABC):
    """Registrations, the log's nodes and checkpoints, API keys, and webhooks."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect and migrate; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; pending writes are finished first."""

    def guard_registrations(self, guard: RegistrationGuard) -> None:  # noqa: B027
        """Have `guard` look at each batch of new registrations just before it is written.

        A store shared by several processes calls it under the lock that orders
        registration commits, so everything the others committed is visible to
        it; a registration it returns an error for is not stored, and that
        error is raised to its caller. Both stores call it (several processes
        may share one SQLite file too).
        """

    async def hold_sealer_lock(self) -> bool:
        """Become, or confirm still being, the one process that seals; False if another is.

        Called before every seal. The answer comes from a lock that is released
        when its holder dies (SQLite: an flock beside the database; PostgreSQL:
        an advisory lock), so another process can take over. This default,
        for a store no two processes share, always answers True.
        `commit_seal` refusing a stale tree size keeps the log whole even if
        two processes ever both believe they hold it.
        """
        return True

    async def release_sealer_lock(self) -> None:  # noqa: B027 - optional hook
        """Let another process seal: this one cannot (it lacks the active signing key)."""

    # -- API keys ---------------------------------------------------------
    @abc.abstractmethod
    async def add_api_key(self, key: ApiKey) -> None: ...

    @abc.abstractmethod
    async def get_api_key(self, key_id: str) -> ApiKey | None: ...

    @abc.abstractmethod
    async def list_api_keys(self) -> list[ApiKey]: ...

    @abc.abstractmethod
    async def revoke_api_key(self, key_id: str, revoked_at: str) -> bool:
        """Mark a key revoked; False if there is no such active key."""

    # -- registrations ----------------------------------------------------
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
    def iter_fingerprints(self, after_seq: int = 0) -> AsyncIterator[StoredFingerprint]:
        """Every registration's fingerprint with seq > after_seq, in seq order."""

    @abc.abstractmethod
    async def get_features(self, seqs: Iterable[int]) -> dict[int, bytes]: ...

    @abc.abstractmethod
    async def get_thumbnail(self, seq: int) -> bytes | None: ...

    # -- the log ----------------------------------------------------------
    @abc.abstractmethod
    async def pending(self, limit: int) -> list[Registration]:
        """Unsealed registrations in seq order, at most `limit`."""

    @abc.abstractmethod
    async def count_pending(self) -> int: ...

    @abc.abstractmethod
    async def tree_size(self) -> int:
        """Number of leaves sealed so far (the latest checkpoint's size)."""

    @abc.abstractmethod
    async def get_tiles(self, coords: Iterable[TileCoord]) -> dict[TileCoord, bytes]:
        """The stored contents of each of these tiles that exists (see `tiles.py`).

        A tile's contents only ever grow by appending, so a reader that needs
        the first W hashes may take a prefix of whatever it gets.
        """

    @cached_property
    def _node_reader(self) -> TileNodeReader:
        return TileNodeReader(self, TileCache())

    async def get_nodes(self, coords: Iterable[NodeCoord]) -> dict[NodeCoord, bytes]:
        """Complete-subtree hashes, rebuilt from the tiles (a `tree.NodeReader`)."""
        return await self._node_reader.get_nodes(coords)

    @abc.abstractmethod
    async def commit_seal(self, batch: SealBatch) -> None:
        """Assign leaf indices, write the tiles and the checkpoint in one transaction.

        Fails, changing nothing, if the checkpoint's size is not the next one,
        or if a tile write is not an extension of what is stored (hashes, once
        written, never change).
        """

    @abc.abstractmethod
    async def latest_checkpoint(self) -> CheckpointRecord | None: ...

    @abc.abstractmethod
    async def get_checkpoint(self, tree_size: int) -> CheckpointRecord | None: ...

    @abc.abstractmethod
    async def first_checkpoint_covering(self, leaf_index: int) -> CheckpointRecord | None:
        """The earliest checkpoint whose tree contains this leaf."""

    # -- webhooks and their outbox ---------------------------------------
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

    # -- signing keys (public halves; the private keys live on disk) ---------
    @abc.abstractmethod
    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        """Every key the log has signed with, oldest first."""

    @abc.abstractmethod
    async def activate_signing_key(self, key: SigningKeyRecord, *, replacing: str | None) -> None:
        """Make `key` the active key, retiring the active one at `key.not_before`.

        Compare-and-swap: raises `ActiveKeyChanged`, changing nothing, unless
        the active key is `replacing` (None: there is no active key yet).
        """

    # -- anchors (checkpoints handed to a TSA, a chain, ...) -------------------
    @abc.abstractmethod
    async def schedule_anchor(
        self, anchor: str, kind: str, tree_size: int, *, now: float, interval: float
    ) -> bool:
        """Queue the checkpoint of `tree_size` for `anchor`, at most once per `interval`.

        Atomic, so replicas racing to schedule queue one job: does nothing
        (False) if the anchor already has a job for a tree at least this large
        or one created after `now - interval`. Otherwise inserts a pending job
        due at `now`, marks the anchor's older pending jobs that hold no
        `progress` superseded, and returns True. The checkpoint must exist.
        """

    @abc.abstractmethod
    async def claim_anchor_jobs(
        self, anchors: Sequence[str], now: float, lease_until: float, limit: int
    ) -> list[AnchorJob]:
        """Pending jobs of these anchors due at `now`, oldest first, with their checkpoint.

        Each is leased: `next_attempt_at` moves to `lease_until` and `claim`
        gets a fresh token, so no other worker (another replica, or this one
        after a crash) takes it before the lease ends.
        """

    @abc.abstractmethod
    async def finish_anchor_attempt(self, job_id: int, claim: str, outcome: AnchorAttempt) -> bool:
        """Record an attempt, if the job is still under this `claim`; False if it is not
        (the lease ran out and another worker took it: its result wins)."""

    @abc.abstractmethod
    async def anchors_covering(self, tree_size: int) -> list[AnchorJob]:
        """For each anchor, its anchored job of the smallest tree at least `tree_size`
        (the tightest bound for a leaf first sealed at that size), with its checkpoint;
        ordered by anchor name."""

    @abc.abstractmethod
    async def list_anchor_jobs(self, *, anchor: str | None = None, limit: int = 100) -> list[
        AnchorJob
    ]:
        """The most recent jobs (of one anchor, or all), newest first, without checkpoints."""
