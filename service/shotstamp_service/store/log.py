"""The log: registrations sealed into the Merkle tree's tiles under signed checkpoints.

The rules that keep the log append-only are written once, here, in
`LogStoreCore.commit_seal`; a backend only opens the transaction that orders
seals and does the plain reads and writes of a `SealWriter` inside it:

- a seal appends at the current size: its checkpoint's size is the stored
  size plus the leaves it assigns, else another sealer got there first;
- a registration is sealed once: every assignment must hit an unsealed row;
- a tile only grows: each write is 1-256 whole hashes and extends what is
  stored by appending (hashes, once written, never change);
- a checkpoint is written once per size (the table's primary key).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from shotstamp._merkle import HASH_SIZE
from shotstamp_service.log.tiles import TILE_BYTES, TileCache, TileCoord, TileNodeReader, TileWrite
from shotstamp_service.records import CheckpointRecord, Registration
from shotstamp_service.store.errors import StoreError

__all__ = [
    "CheckpointReader",
    "LogStore",
    "LogStoreCore",
    "NodeCoord",
    "SealBatch",
    "SealWriter",
    "check_tile_write",
]

NodeCoord = tuple[int, int]
"""(level, index) of a complete subtree: it covers leaves [index·2^level, (index+1)·2^level)."""


@dataclass(frozen=True)
class SealBatch:
    """Everything one seal writes, committed together or not at all."""

    assignments: Sequence[tuple[int, int]]  # (registration seq, leaf index)
    tiles: Sequence[TileWrite]  # (level, index, data) of every tile the seal changed, whole
    checkpoint: CheckpointRecord


class CheckpointReader(Protocol):
    """The signed checkpoints: enough for whoever only follows the log's size."""

    @abc.abstractmethod
    async def latest_checkpoint(self) -> CheckpointRecord | None: ...

    @abc.abstractmethod
    async def get_checkpoint(self, tree_size: int) -> CheckpointRecord | None: ...

    @abc.abstractmethod
    async def first_checkpoint_covering(self, leaf_index: int) -> CheckpointRecord | None:
        """The earliest checkpoint whose tree contains this leaf."""


class LogStore(CheckpointReader, Protocol):
    """Used by the sealer, the proofs and the log's routes."""

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

    @abc.abstractmethod
    async def get_nodes(self, coords: Iterable[NodeCoord]) -> dict[NodeCoord, bytes]:
        """Complete-subtree hashes, rebuilt from the tiles (a `tree.NodeReader`)."""

    @abc.abstractmethod
    async def commit_seal(self, batch: SealBatch) -> None:
        """Assign leaf indices, write the tiles and the checkpoint in one transaction.

        Fails with StoreError, changing nothing, if the batch breaks a rule of
        the log (see the module docstring).
        """

    @abc.abstractmethod
    async def hold_sealer_lock(self) -> bool:
        """Become, or confirm still being, the one process that seals; False if another is.

        Called before every seal. A store only one process writes (SQLite)
        always answers True; a shared store answers from a lock that is
        released when its holder dies, so another process can take over.
        `commit_seal` refusing a stale tree size keeps the log whole even if
        two processes ever both believe they hold it.
        """

    @abc.abstractmethod
    async def release_sealer_lock(self) -> None:
        """Let another process seal: this one cannot (it lacks the active signing key)."""


class SealWriter(Protocol):
    """A backend's plain reads and writes inside one seal transaction.

    The backend holds, for the whole transaction, the lock that orders seals,
    so what these read is what the writes apply to.
    """

    async def tree_size(self) -> int:
        """The latest checkpoint's size (0 without any)."""
        ...

    async def assign_leaves(self, assignments: Sequence[tuple[int, int]]) -> int:
        """Set the leaf index of each (seq, leaf index) not yet sealed; how many were set."""
        ...

    async def get_tiles(self, coords: Iterable[TileCoord]) -> dict[TileCoord, bytes]: ...

    async def put_tiles(self, tiles: Sequence[TileWrite]) -> None:
        """Insert each tile, or replace its stored contents."""
        ...

    async def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Insert it; fails (StoreError) if one of that size exists."""
        ...


def check_tile_write(write: TileWrite, stored: bytes | None) -> None:
    """Raise StoreError unless `write` is whole hashes that append to what is `stored`."""
    level, idx, data = write
    if not data or len(data) > TILE_BYTES or len(data) % HASH_SIZE:
        raise StoreError(f"tile ({level}, {idx}) of {len(data)} bytes")
    # Growing is the only change: a rewrite, a shrink or a new hash in place
    # of an old one would make proofs already handed out fail.
    if stored is not None and (len(data) <= len(stored) or not data.startswith(stored)):
        raise StoreError("a tile write would change hashes already in the log")


class LogStoreCore(LogStore):
    """The log's rules, shared by the backends (which provide `_seal_transaction`)."""

    @abc.abstractmethod
    def _seal_transaction(self) -> AbstractAsyncContextManager[SealWriter]:
        """One transaction holding the lock that orders seals; rolled back on error."""

    async def commit_seal(self, batch: SealBatch) -> None:
        cp = batch.checkpoint
        async with self._seal_transaction() as seal:
            expected = await seal.tree_size() + len(batch.assignments)
            if cp.tree_size != expected:
                raise StoreError(
                    f"seal would make tree size {cp.tree_size}, "
                    f"want {expected}: another sealer got there first"
                )
            assigned = await seal.assign_leaves(batch.assignments) if batch.assignments else 0
            if assigned != len(batch.assignments):
                raise StoreError("a registration in the seal batch was already sealed")
            if batch.tiles:
                stored = await seal.get_tiles((level, idx) for level, idx, _ in batch.tiles)
                for write in batch.tiles:
                    check_tile_write(write, stored.get(write[:2]))
                await seal.put_tiles(batch.tiles)
            await seal.add_checkpoint(cp)

    @cached_property
    def _node_reader(self) -> TileNodeReader:
        return TileNodeReader(self, TileCache())

    async def get_nodes(self, coords: Iterable[NodeCoord]) -> dict[NodeCoord, bytes]:
        return await self._node_reader.get_nodes(coords)

    async def hold_sealer_lock(self) -> bool:
        return True  # only this process writes (SQLite); a shared store overrides it

    async def release_sealer_lock(self) -> None:
        return None
