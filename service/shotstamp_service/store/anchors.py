"""Anchors: checkpoints handed to a TSA, a chain, ..., as jobs with their evidence.

The scheduling rule (one job per anchor per interval, only for a larger tree;
older untouched jobs superseded) and the claiming rule (a lease with a fresh
fencing token per job) are written once, in `AnchorStoreCore`; a backend
opens the transactions and does an `AnchorQueue`'s plain reads and writes
inside them (SKIP LOCKED keeps PostgreSQL replicas' claims disjoint).
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from shotstamp_service.records import AnchorJob, AnchorStatus

__all__ = ["AnchorAttempt", "AnchorQueue", "AnchorStore", "AnchorStoreCore"]


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


class AnchorStore(Protocol):
    """Used by `anchors.runner`, the proofs (anchors covering a checkpoint) and the CLI."""

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


class AnchorQueue(Protocol):
    """A backend's plain reads and writes inside one scheduling transaction."""

    async def anchor_history(self, anchor: str) -> tuple[int | None, float | None]:
        """The largest tree size and the latest `created_at` of the anchor's jobs."""
        ...

    async def supersede_anchor_jobs(self, anchor: str, below: int) -> None:
        """Mark superseded the anchor's pending jobs without progress for trees below `below`."""
        ...

    async def add_anchor_job(self, anchor: str, kind: str, tree_size: int, now: float) -> None:
        """Insert a pending job created and due at `now`."""
        ...

    async def due_anchor_jobs(self, anchors: Sequence[str], now: float, limit: int) -> list[int]:
        """Ids of pending jobs of these anchors due at `now`, soonest due first, at most
        `limit`, locked for this transaction (skipping jobs another one holds)."""
        ...

    async def lease_anchor_jobs(self, claims: dict[int, str], lease_until: float) -> None:
        """Set each job's claim token and move its `next_attempt_at` to `lease_until`."""
        ...

    async def anchor_jobs_with_checkpoints(self, ids: Sequence[int]) -> list[AnchorJob]:
        """These jobs with their checkpoints, by id."""
        ...


class AnchorStoreCore(AnchorStore):
    """The anchors' scheduling rule, shared by the backends (they provide `_anchor_transaction`)."""

    @abc.abstractmethod
    def _anchor_transaction(self) -> AbstractAsyncContextManager[AnchorQueue]:
        """One transaction holding the lock that orders scheduling; rolled back on error."""

    @abc.abstractmethod
    def _anchor_claim_transaction(self) -> AbstractAsyncContextManager[AnchorQueue]:
        """One transaction in which claims do not race (without the scheduling lock)."""

    async def schedule_anchor(
        self, anchor: str, kind: str, tree_size: int, *, now: float, interval: float
    ) -> bool:
        async with self._anchor_transaction() as queue:
            largest, newest = await queue.anchor_history(anchor)
            if largest is not None and (
                largest >= tree_size or (newest is not None and newest > now - interval)
            ):
                return False
            await queue.supersede_anchor_jobs(anchor, tree_size)
            await queue.add_anchor_job(anchor, kind, tree_size, now)
            return True

    async def claim_anchor_jobs(
        self, anchors: Sequence[str], now: float, lease_until: float, limit: int
    ) -> list[AnchorJob]:
        names = sorted(set(anchors))
        if not names:
            return []
        async with self._anchor_claim_transaction() as queue:
            ids = await queue.due_anchor_jobs(names, now, limit)
            if not ids:
                return []
            # A fresh fencing token per job and lease, which `finish_anchor_attempt` must show.
            await queue.lease_anchor_jobs({job: secrets.token_hex(8) for job in ids}, lease_until)
            return await queue.anchor_jobs_with_checkpoints(ids)
