"""The anchor runner: hands checkpoints to the anchors, off the seal path.

Every `poll` seconds (one, by default) it does two things, both through the
store so that they survive restarts and agree across replicas:

1. Schedule. For each anchor whose `interval` has passed since its last job,
   if the log has grown since, queue the latest checkpoint
   (`AnchorStore.schedule_anchor`, atomic: replicas racing queue one job). That is
   the batch: one anchor operation covers every registration sealed in the
   interval. A newer job supersedes older ones no attempt has begun on.
2. Work. Claim the due jobs under a lease (`AnchorStore.claim_anchor_jobs`), run one
   attempt of each (bounded by the anchor's timeout), and record the outcome
   under the lease's fencing token: evidence, progress to resume from, or the
   error and the next try after an exponential, jittered backoff. Attempts
   never end: a TSA down for a day is tried again, less often, until it answers
   or a newer checkpoint supersedes the job.

The sealer never waits for any of this: the runner is its own task, reads
checkpoints only once they are committed, and its store writes are small
rows. An anchor that hangs holds nothing but its own job's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from shotstamp_service.anchors.base import Anchor, Anchored, InProgress
from shotstamp_service.records import AnchorJob, format_time, utc_now
from shotstamp_service.store import AnchorAttempt, AnchorStore, CheckpointReader

__all__ = ["AnchorLog", "AnchorRunner"]

log = logging.getLogger(__name__)

# Jobs one anchor takes per round; anchoring is per interval, so rarely more than one.
_BATCH = 8
# A lease outlives the attempt's timeout by this much before another worker may take over.
_LEASE_MARGIN = 30.0


class AnchorLog(AnchorStore, CheckpointReader, Protocol):
    """What the runner needs of the store: the anchor jobs, and the checkpoints to anchor."""


class AnchorRunner:
    """Schedules and performs the anchor jobs of the configured anchors."""

    def __init__(
        self,
        store: AnchorLog,
        anchors: Sequence[Anchor],
        *,
        retry_base: float = 5.0,
        retry_max: float = 3600.0,
        poll: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        names = [anchor.name for anchor in anchors]
        if len(set(names)) != len(names):
            raise ValueError(f"anchor names must be unique, got {names}")
        self.store = store
        self.anchors = {anchor.name: anchor for anchor in anchors}
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.poll = poll
        self._clock = clock
        # Per anchor: the largest tree queued and when the next may be, as far as
        # this process knows; the store has the last word.
        self._queued_size: dict[str, int] = {}
        self._next_schedule: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self.anchored = 0  # counters, for tests and logs
        self.failed_attempts = 0

    # -- lifecycle ---------------------------------------------------------------
    async def start(self, *, background: bool = True) -> None:
        """Start the anchors and (unless `background` is False: tests step `tick()`
        themselves) the task that runs a round every `poll` seconds."""
        for anchor in self.anchors.values():
            await anchor.start()
        for name in self.anchors:
            await self._reload(name)
        if background and self.anchors:
            self._task = asyncio.create_task(self._run(), name="anchors")

    async def stop(self) -> None:
        """Stop after the attempts in flight (each bounded by its anchor's timeout)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for anchor in self.anchors.values():
            try:
                await anchor.close()
            except Exception:
                log.exception("closing anchor %s failed", anchor.name)

    def wake(self) -> None:
        """Look for work now rather than at the next poll (tests, a fresh seal)."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("anchor round failed; trying again shortly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    async def tick(self) -> None:
        """One round: schedule what is due, then attempt every due job once."""
        await self.schedule_due()
        await self.work_due()

    # -- scheduling --------------------------------------------------------------
    async def _reload(self, name: str) -> None:
        anchor = self.anchors[name]
        newest = await self.store.list_anchor_jobs(anchor=name, limit=1)
        if newest:
            self._queued_size[name] = newest[0].tree_size
            self._next_schedule[name] = newest[0].created_at + anchor.interval
        else:
            self._queued_size[name] = 0
            self._next_schedule[name] = 0.0

    async def schedule_due(self) -> list[str]:
        """Queue the latest checkpoint for each anchor due one; returns their names."""
        now = self._clock()
        due = [name for name in self.anchors if now >= self._next_schedule.get(name, 0.0)]
        if not due:
            return []
        latest = await self.store.latest_checkpoint()
        if latest is None or latest.tree_size == 0:
            return []
        queued = []
        for name in due:
            if latest.tree_size <= self._queued_size.get(name, 0):
                continue  # nothing sealed since the last job: nothing new to anchor
            anchor = self.anchors[name]
            if await self.store.schedule_anchor(
                name, anchor.kind, latest.tree_size, now=now, interval=anchor.interval
            ):
                self._queued_size[name] = latest.tree_size
                self._next_schedule[name] = now + anchor.interval
                queued.append(name)
                log.info("anchor %s: queued checkpoint %d", name, latest.tree_size)
            else:
                await self._reload(name)  # another replica queued one: follow it
        return queued

    # -- work ----------------------------------------------------------------------
    async def work_due(self) -> int:
        """Claim the due jobs and attempt each once; returns how many were attempted."""
        now = self._clock()
        attempts = []
        for anchor in self.anchors.values():
            lease = now + anchor.timeout + _LEASE_MARGIN
            for job in await self.store.claim_anchor_jobs([anchor.name], now, lease, _BATCH):
                attempts.append(self._attempt(anchor, job))
        if attempts:
            await asyncio.gather(*attempts)
        return len(attempts)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failed ones (equal jitter)."""
        ceiling = min(self.retry_max, self.retry_base * 2.0 ** (attempts - 1))
        return ceiling / 2 + random.random() * ceiling / 2

    async def _attempt(self, anchor: Anchor, job: AnchorJob) -> None:
        assert job.checkpoint is not None and job.claim is not None
        try:
            step = await asyncio.wait_for(
                anchor.attempt(job.checkpoint, job.progress), anchor.timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempts = job.attempts + 1
            delay = self.backoff(attempts)
            reason = f"{type(exc).__name__}: {exc}"[:500]
            self.failed_attempts += 1
            log.warning(
                "anchor %s: checkpoint %d, attempt %d failed (%s); next try in %.0f s",
                anchor.name,
                job.tree_size,
                attempts,
                reason,
                delay,
            )
            outcome = AnchorAttempt(
                status="pending",
                attempts=attempts,
                next_attempt_at=self._clock() + delay,
                progress=job.progress,
                last_error=reason,
            )
        else:
            if isinstance(step, Anchored):
                self.anchored += 1
                log.info("anchor %s: checkpoint %d anchored", anchor.name, job.tree_size)
                outcome = AnchorAttempt(
                    status="anchored",
                    attempts=job.attempts + 1,
                    next_attempt_at=self._clock(),
                    progress=job.progress,
                    evidence=step.evidence,
                    anchored_at=format_time(utc_now()),
                )
            else:
                assert isinstance(step, InProgress)
                outcome = AnchorAttempt(
                    status="pending",
                    attempts=job.attempts,
                    next_attempt_at=self._clock() + step.retry_after,
                    progress=step.progress,
                    last_error=job.last_error,
                )
        if not await self.store.finish_anchor_attempt(job.id, job.claim, outcome):
            log.warning(
                "anchor %s: checkpoint %d was taken over by another worker; its result stands",
                anchor.name,
                job.tree_size,
            )
