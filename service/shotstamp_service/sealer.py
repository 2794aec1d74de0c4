"""The sealer: once a second, append what is pending to the log and sign a checkpoint.

Each seal is one store transaction (leaf indices, the tiles it changed, the
signed checkpoint), so a crash leaves either the whole seal or none of it;
pending registrations simply wait for the next one. The cost of a seal grows
with the batch (a few hashes per leaf, one partial tile rewritten per tile
level), never with the size of the log: the sealer keeps the tree's right
border and partial tiles in memory and reads nothing else.

The key it signs with comes from a `SignerSource`: a fixed `LogSigner`, or the
service's `SigningKeys`, which follows rotations made while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from shotstamp.merkle import leaf_hash

from .records import CheckpointRecord
from .signer import SignerSource
from .store import SealBatch, Store, StoreError
from .tree import LogTree

__all__ = ["Sealer"]

log = logging.getLogger(__name__)


class Sealer:
    def __init__(
        self,
        store: Store,
        signer: SignerSource,
        *,
        interval: float = 1.0,
        max_batch: int = 50_000,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.signer = signer
        self.interval = interval
        self.max_batch = max_batch
        self._clock_ns = clock_ns
        self._tree: LogTree | None = None
        self._sealed = asyncio.Condition()
        self._lock = asyncio.Lock()
        self.last_checkpoint: CheckpointRecord | None = None

    @property
    def tree_size(self) -> int:
        return self._tree.size if self._tree else 0

    async def load(self) -> None:
        """Rebuild the right border from the store and check it against the last checkpoint."""
        latest = await self.store.latest_checkpoint()
        size = latest.tree_size if latest else 0
        tree = await LogTree.load(self.store, size)
        if latest is not None and tree.root() != latest.root_hash:
            raise RuntimeError(
                f"stored tree of size {size} has root {tree.root().hex()}, "
                f"but its checkpoint says {latest.root_hash.hex()}"
            )
        self._tree = tree
        self.last_checkpoint = latest
        if latest is None:
            # Publish the empty tree so /v1/checkpoints/latest always answers.
            await self._commit(tree, [], [])

    async def seal_once(self) -> CheckpointRecord | None:
        """Seal everything pending (up to `max_batch`); None when nothing was pending."""
        async with self._lock:
            if self._tree is None:
                await self.load()
            assert self._tree is not None
            pending = await self.store.pending(self.max_batch)
            if not pending:
                return None
            tree, tiles = self._tree.append(leaf_hash(reg.leaf_bytes()) for reg in pending)
            assignments = [(reg.seq, self._tree.size + k) for k, reg in enumerate(pending)]
            return await self._commit(tree, assignments, tiles)

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
        except StoreError:
            # Our view of the tree may be stale (another sealer, a failed disk):
            # forget it so the next seal starts again from what is stored.
            self._tree = None
            raise
        self._tree = tree
        self.last_checkpoint = checkpoint
        async with self._sealed:
            self._sealed.notify_all()
        return checkpoint

    async def wait_for_seal(self, timeout: float) -> bool:
        """Wait for the next seal; False on timeout."""
        async with self._sealed:
            try:
                await asyncio.wait_for(self._sealed.wait(), timeout)
            except TimeoutError:
                return False
        return True

    async def run(self) -> None:
        """Seal on a fixed one-second beat until cancelled."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += self.interval
            try:
                await self.seal_once()
            except Exception:
                log.exception("seal failed; retrying on the next tick")
            delay = next_tick - loop.time()
            if delay < 0:  # a slow seal: start again from now rather than burst
                next_tick = loop.time()
                delay = 0
            await asyncio.sleep(delay)
