"""The sealer: once a second, append what is pending to the log and sign a checkpoint.

Each seal is one store transaction (leaf indices, the tiles it changed, the
signed checkpoint), so a crash leaves either the whole seal or none of it;
pending registrations simply wait for the next one. The cost of a seal grows
with the batch (a few hashes per leaf, one partial tile rewritten per tile
level), never with the size of the log: the sealer keeps the tree's right
border and partial tiles in memory and reads nothing else.

The key it signs with comes from a `SignerSource`: a fixed `LogSigner`, or the
service's `SigningKeys`, which follows rotations made while it runs.

Several replicas may share one store: before every seal the sealer asks the
store for the sealer lock (`LogStore.hold_sealer_lock`), so one replica seals at
a time. The others follow: they read the latest checkpoint every
`follow_interval` seconds, so requests waiting for a seal (`wait=true`) are
answered on any replica, and they try for the lock on every tick, so one of
them takes over within a tick of the sealing replica's death. Whoever seals
reloads its tree from the store first; the store refuses a seal made from a
stale tree, so the log never forks.

Only a replica that holds the active signing key's private half contends for
the lock: one that lacks it (a rotation it has no copy of) releases the lock
if it held it and logs why, so a replica that has the key takes over instead
of the log stalling behind one that cannot sign.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from shotstamp._merkle import leaf_hash
from shotstamp_service.log.signer import SignerSource, SigningKeyUnavailable
from shotstamp_service.log.tree import LogTree
from shotstamp_service.records import CheckpointRecord, Registration
from shotstamp_service.store import LogStore, SealBatch, StoreError

# Seconds a stopping replica that does not seal waits for its pending registrations to be sealed.
DRAIN_WAIT = 10.0

__all__ = ["SealObserver", "Sealer"]

log = logging.getLogger(__name__)

SealObserver = Callable[[CheckpointRecord, Sequence[Registration], float], None]
"""Told of each seal: its checkpoint, the registrations it sealed, and the seconds it took."""


class Sealer:
    def __init__(
        self,
        store: LogStore,
        signer: SignerSource,
        *,
        interval: float = 1.0,
        follow_interval: float = 0.1,
        max_batch: int = 50_000,
        clock_ns: Callable[[], int] = time.time_ns,
        on_sealed: SealObserver | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.interval = interval
        self.follow_interval = follow_interval
        self.max_batch = max_batch
        self._clock_ns = clock_ns
        self._on_sealed = on_sealed
        self._tree: LogTree | None = None
        self._sealed = asyncio.Condition()
        self._lock = asyncio.Lock()
        self.last_checkpoint: CheckpointRecord | None = None
        self.leading = False  # whether this replica held the sealer lock at the last tick
        self._follow_failing = False
        self._cannot_sign: str | None = None  # why this replica may not seal, once logged

    @property
    def tree_size(self) -> int:
        """Size of the newest checkpoint this replica knows of, its own or another's."""
        return self.last_checkpoint.tree_size if self.last_checkpoint else 0

    async def load(self) -> None:
        """Rebuild the right border from the store and check it against the last checkpoint."""
        async with self._lock:
            await self._load()

    async def _load(self) -> None:
        latest = await self.store.latest_checkpoint()
        size = latest.tree_size if latest else 0
        tree = await LogTree.load(self.store, size)
        if latest is not None and tree.root() != latest.root_hash:
            raise RuntimeError(
                f"stored tree of size {size} has root {tree.root().hex()}, "
                f"but its checkpoint says {latest.root_hash.hex()}"
            )
        self._tree = tree
        if latest is not None:
            await self._publish(latest)
            return
        # Publish the empty tree so /v1/checkpoints/latest always answers.
        try:
            await self._commit(tree, [], [])
        except StoreError:
            if await self.store.latest_checkpoint() is None:
                raise
            await self._load()  # another replica published it first

    async def seal_once(self) -> CheckpointRecord | None:
        """Seal everything pending (up to `max_batch`); None when nothing was pending."""
        async with self._lock:
            started = time.perf_counter()
            if self._tree is None:
                await self._load()
            assert self._tree is not None
            pending = await self.store.pending(self.max_batch)
            if not pending:
                return None
            tree, tiles = self._tree.append(leaf_hash(reg.leaf_bytes()) for reg in pending)
            assignments = [(reg.seq, self._tree.size + k) for k, reg in enumerate(pending)]
            checkpoint = await self._commit(tree, assignments, tiles)
            if self._on_sealed is not None:
                self._on_sealed(checkpoint, pending, time.perf_counter() - started)
            return checkpoint

    async def drain(self) -> None:
        """Seal everything pending if this replica may seal: a clean stop leaves nothing waiting.

        One that may not seal waits, while registrations are pending (at most DRAIN_WAIT),
        for the one that seals to seal them, or to let go of the lock (it may be stopping
        too, having drained before this one's last commits): then it seals them itself.
        """
        deadline = time.monotonic() + DRAIN_WAIT
        while not await self._lead():
            if not await self.store.pending(1) or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.05)
        while await self.seal_once() is not None:
            pass

    async def follow(self) -> None:
        """Take note of checkpoints another replica published, waking whoever waits for one."""
        latest = await self.store.latest_checkpoint()
        if latest is not None and latest.tree_size > self.tree_size:
            await self._publish(latest)

    async def _lead(self) -> bool:
        if await self._can_sign():
            held = await self.store.hold_sealer_lock()
        else:
            held = False
            await self.store.release_sealer_lock()
        if held != self.leading:
            async with self._lock:
                self.leading = held
                # Another replica may have sealed meanwhile: reload before sealing.
                self._tree = None
            log.info("this replica %s", "now seals" if held else "no longer seals")
        return held

    async def _can_sign(self) -> bool:
        """Whether this process holds the active key's private half (logged when that changes)."""
        try:
            await self.signer.current()
        except SigningKeyUnavailable as exc:
            if str(exc) != self._cannot_sign:
                log.error("this replica cannot seal: %s", exc)
            self._cannot_sign = str(exc)
            return False
        except StoreError:
            return True  # an outage: the sealer lock answers for it, quietly
        if self._cannot_sign is not None:
            log.info("this replica holds the active signing key again")
            self._cannot_sign = None
        return True

    async def _commit(
        self,
        tree: LogTree,
        assignments: list[tuple[int, int]],
        tiles: list[tuple[int, int, bytes]],
    ) -> CheckpointRecord:
        signer = await self.signer.current()
        timestamp_ns = self._clock_ns()
        root = tree.root()
        checkpoint = CheckpointRecord(
            tree_size=tree.size,
            root_hash=root,
            timestamp_ns=timestamp_ns,
            note=signer.sign_checkpoint(tree.size, root, timestamp_ns),
            key_id=signer.key_id,
        )
        try:
            await self.store.commit_seal(SealBatch(assignments, tiles, checkpoint))
        except BaseException:
            # Our view of the tree may be stale (another sealer, a failed disk, or a stop's
            # cancel after the store committed): the next seal starts from what is stored.
            self._tree = None
            raise
        self._tree = tree
        await self._publish(checkpoint)
        return checkpoint

    async def _publish(self, checkpoint: CheckpointRecord) -> None:
        self.last_checkpoint = checkpoint
        async with self._sealed:
            self._sealed.notify_all()

    async def wait_for_seal(self, timeout: float) -> bool:
        """Wait for the next seal; False on timeout."""
        async with self._sealed:
            try:
                await asyncio.wait_for(self._sealed.wait(), timeout)
            except TimeoutError:
                return False
        return True

    async def run(self) -> None:
        """Seal on a fixed one-second beat until cancelled (follow, when another replica seals)."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += self.interval
            try:
                if await self._lead():
                    await self.seal_once()
            except Exception:
                log.exception("seal failed; retrying on the next tick")
            while (delay := next_tick - loop.time()) > 0:
                if self.leading:
                    await asyncio.sleep(delay)
                    break
                await asyncio.sleep(min(delay, self.follow_interval))
                await self._follow_quietly()
            if next_tick < loop.time():  # a slow seal: start again from now rather than burst
                next_tick = loop.time()

    async def _follow_quietly(self) -> None:
        """`follow`, logging a store outage once rather than ten times a second."""
        try:
            await self.follow()
        except Exception as exc:
            if not self._follow_failing:
                log.warning("cannot read the latest checkpoint: %s", exc)
            self._follow_failing = True
        else:
            self._follow_failing = False
