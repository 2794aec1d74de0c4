"""The log's Merkle tree: appending, roots and O(log n) proofs over stored tiles.

The store keeps the tree as C2SP tlog-tiles (`tiles.py`): the hashes of the
complete subtrees at every eighth level, about 1.004·n hashes for n leaves,
from which any complete subtree `(level, index)` is rebuilt inside one tile.
Any tree hash the RFC 9162 proofs need is either such a node or the root of a
right-border subtree, folded from at most log2(n) of them, so an inclusion or
consistency proof at any size reads a few tiles, never a pass over the leaves.

In memory the sealer keeps only the tree's right border (the complete subtrees
that make up [0, size)) and the partial tile of each tile level: enough to
append, compute the new root and write every tile a seal changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shotstamp._merkle import (
    decompose_range,
    node_hash,
    root_hash,
    subtree_ranges_for_consistency,
    subtree_ranges_for_inclusion,
)
from shotstamp_service.log.tiles import TileEdge, TileNodeReader, TileReader, TileWrite

__all__ = [
    "LogTree",
    "NodeReader",
    "consistency_proof",
    "inclusion_proof",
    "range_hashes",
]

Node = tuple[int, int, bytes]  # (level, index, hash)


class NodeReader(Protocol):
    async def get_nodes(self, coords: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The hashes of these complete subtrees `(level, index)` that exist."""
        ...


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of a range from its complete subtrees, left to right (RFC 9162 MTH)."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


@dataclass(frozen=True)
class LogTree:
    """An immutable tree state: size, right border (left to right) and tile edge.

    `border[k]` is (level, hash) of the k-th complete subtree of [0, size);
    their levels are the set bits of `size`, highest first. `edge` holds the
    partial tile of each tile level, which the next append extends.
    """

    size: int
    border: tuple[tuple[int, bytes], ...]
    edge: TileEdge = field(default_factory=TileEdge)

    @classmethod
    def empty(cls) -> LogTree:
        return cls(0, ())

    @classmethod
    async def load(cls, tiles: TileReader, size: int) -> LogTree:
        """The tree of `size` leaves as stored: its border nodes and partial tiles."""
        coords = decompose_range(0, size)
        nodes = await TileNodeReader(tiles).get_nodes(coords)
        missing = [c for c in coords if c not in nodes]
        if missing:
            raise LookupError(f"tree nodes {missing} missing from the store at size {size}")
        border = tuple((level, nodes[(level, idx)]) for level, idx in coords)
        return cls(size, border, await TileEdge.load(tiles, size))

    def root(self) -> bytes:
        if not self.border:
            return root_hash([])
        return _fold([h for _, h in self.border])

    def append(self, leaf_hashes: Iterable[bytes]) -> tuple[LogTree, list[TileWrite]]:
        """The tree with these leaves added, and every tile that changes (whole).

        Costs about two hashes per leaf plus rewriting one partial tile per
        tile level: proportional to the batch, never to the size of the log.
        """
        size, border, nodes = self._grow(leaf_hashes)
        edge, writes = self.edge.extend(size, nodes)
        return LogTree(size, border, edge), writes

    def _grow(
        self, leaf_hashes: Iterable[bytes]
    ) -> tuple[int, tuple[tuple[int, bytes], ...], list[Node]]:
        """New size and border, and every complete subtree the leaves complete, in order."""
        size = self.size
        border = list(self.border)
        nodes: list[Node] = []
        for leaf in leaf_hashes:
            level, index, current = 0, size, leaf
            nodes.append((0, index, current))
            # Merging equal-sized neighbours mirrors binary carry in |size|.
            while border and border[-1][0] == level:
                _, left = border.pop()
                current = node_hash(left, current)
                level += 1
                index >>= 1
                nodes.append((level, index, current))
            border.append((level, current))
            size += 1
        return size, tuple(border), nodes


async def range_hashes(
    reader: NodeReader, ranges: Sequence[tuple[int, int]]
) -> list[bytes]:
    """The Merkle hash of each leaf range [begin, end), in one batched read."""
    layouts = [decompose_range(begin, end) for begin, end in ranges]
    wanted = {coord for layout in layouts for coord in layout}
    nodes = await reader.get_nodes(wanted)
    missing = wanted - nodes.keys()
    if missing:
        raise LookupError(f"tree nodes {sorted(missing)} missing from the store")
    return [_fold([nodes[c] for c in layout]) for layout in layouts]


async def inclusion_proof(reader: NodeReader, index: int, size: int) -> list[bytes]:
    """RFC 9162 inclusion proof for leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} outside tree of size {size}")
    return await range_hashes(reader, subtree_ranges_for_inclusion(index, size))


async def consistency_proof(reader: NodeReader, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 consistency proof from the tree of `size1` leaves to `size2`."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to {size2}")
    if size1 == 0:  # every tree extends the empty one; RFC 9162 has no proof for it
        return []
    return await range_hashes(reader, subtree_ranges_for_consistency(size1, size2))
