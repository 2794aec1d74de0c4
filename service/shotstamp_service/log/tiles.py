"""The log's Merkle tree stored as C2SP tlog-tiles: tiles of 256 hashes.

c2sp.org/tlog-tiles cuts the tree into tiles of height 8. Tile `(L, N)` holds
the hashes of the complete subtrees at tree level 8·L with indices
N·256 .. N·256+255, i.e. `MTH(D[(N·256 + i)·256^L : (N·256 + i + 1)·256^L])`.
Level-0 tiles hold the leaf hashes. The rightmost tile of each level is
usually *partial* (width W < 256); it is rewritten as the log grows, always by
appending, so any older width is a prefix of what is stored. Full tiles never
change.

Stored this way the whole tree costs n·(1 + 1/256 + …) ≈ 1.004·n hashes, and a
node at level 8·L + r (r < 8) is rebuilt from 2^r hashes of one tile: any
proof reads a handful of tiles, whatever the size of the log. The same rows
are what `/tile/<L>/<N>[.p/<W>]` serves, so the store *is* the public layout.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shotstamp._merkle import HASH_SIZE, node_hash

__all__ = [
    "MAX_TILE_LEVEL",
    "TILE_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileCache",
    "TileCoord",
    "TileEdge",
    "TileNodeReader",
    "TileReader",
    "TileRequest",
    "TileWrite",
    "edge_widths",
    "parse_tile_path",
    "tile_path",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # hashes in a full tile
TILE_BYTES = TILE_WIDTH * HASH_SIZE  # 8,192 bytes
# The spec allows tile levels 0..63; a tree of at most 2^64 leaves needs 0..7.
MAX_TILE_LEVEL = 63
# No tree of at most 2^64 leaves has a tile index this large at any level.
_MAX_TILE_INDEX = 2**64 // (1 << TILE_HEIGHT)

TileCoord = tuple[int, int]
"""(level, index) of a tile."""

TileWrite = tuple[int, int, bytes]
"""(level, index, data): a tile's full current contents, written by a seal."""


class TileReader(Protocol):
    async def get_tiles(self, coords: Iterable[TileCoord]) -> dict[TileCoord, bytes]:
        """The stored contents (full or partial) of each of these tiles that exists."""
        ...


# -- paths (c2sp.org/tlog-tiles, "Merkle Tree") ---------------------------------


def _encode_index(index: int) -> str:
    # Zero-padded 3-digit groups, all but the last prefixed with "x":
    # 1234067 -> "x001/x234/067", 5 -> "005".
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """`tile/<L>/<N>[.p/<W>]` for a hash tile, or with level "entries" an entry bundle."""
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{_encode_index(index)}{suffix}"


@dataclass(frozen=True)
class TileRequest:
    """A parsed tile path. `level` is None for an entry bundle; `width` None for a full tile."""

    level: int | None
    index: int
    width: int | None

    @property
    def entries(self) -> bool:
        return self.level is None


_LEVEL = re.compile(r"0|[1-9][0-9]?")
_GROUP_X = re.compile(r"x[0-9]{3}")
_GROUP_LAST = re.compile(r"[0-9]{3}")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")


def parse_tile_path(path: str) -> TileRequest:
    """Parse `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]` (the part after `tile/`).

    Only the canonical encoding is accepted, so every tile has exactly one
    path: no leading `x000` groups, no leading zeroes in L or W, W in 1..255.
    Raises `ValueError` naming what is wrong.
    """
    parts = path.split("/")
    width: int | None = None
    if len(parts) >= 2 and parts[-2].endswith(".p"):
        if not _WIDTH.fullmatch(parts[-1]) or int(parts[-1]) >= TILE_WIDTH:
            raise ValueError(f"partial tile width {parts[-1]!r} is not 1-255")
        width = int(parts[-1])
        parts = [*parts[:-2], parts[-2][: -len(".p")]]
    if len(parts) < 2:
        raise ValueError("a tile path is <L>/<N>[.p/<W>]")
    head, groups = parts[0], parts[1:]
    level: int | None
    if head == "entries":
        level = None
    elif _LEVEL.fullmatch(head) and int(head) <= MAX_TILE_LEVEL:
        level = int(head)
    else:
        raise ValueError(f"tile level {head!r} is not 0-{MAX_TILE_LEVEL} without leading zeroes")
    if len(groups) > 7:  # 20 digits already exceed any tile index
        raise ValueError("tile index beyond any tree")
    if not _GROUP_LAST.fullmatch(groups[-1]) or not all(
        _GROUP_X.fullmatch(g) for g in groups[:-1]
    ):
        raise ValueError("a tile index is 3-digit groups, all but the last prefixed with 'x'")
    index = int("".join(g.lstrip("x") for g in groups))
    if index >= _MAX_TILE_INDEX:
        raise ValueError("tile index beyond any tree")
    if _encode_index(index) != "/".join(groups):
        raise ValueError(f"tile index {index} is not canonically encoded")
    return TileRequest(level, index, width)


# -- the shape of the tiles of a tree ---------------------------------------------


def edge_widths(size: int) -> list[int]:
    """Width of the rightmost (partial) tile at each tile level of a tree of `size` leaves.

    Element L is `floor(size / 256^L) mod 256` (0: no partial tile at L); the
    list stops at the highest level with any hash. The tile's index at level L
    is `(size >> 8L) // 256`.
    """
    widths = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        widths.append((size >> (TILE_HEIGHT * level)) % TILE_WIDTH)
        level += 1
    return widths


@dataclass(frozen=True)
class TileEdge:
    """The partial tile of each level, which the next seal extends.

    `data[L]` holds the hashes of the rightmost, not yet full tile at level L
    (empty when every tile at L is full). Together with the tree's size that
    is all a seal needs to write every tile it changes.
    """

    size: int = 0
    data: tuple[bytes, ...] = ()

    @classmethod
    async def load(cls, reader: TileReader, size: int) -> TileEdge:
        """Read the partial tiles of the tree of `size` leaves from the store."""
        widths = edge_widths(size)
        wanted = {
            (level, (size >> (TILE_HEIGHT * level)) // TILE_WIDTH): width
            for level, width in enumerate(widths)
            if width
        }
        tiles = await reader.get_tiles(wanted)
        data = []
        for level, width in enumerate(widths):
            if not width:
                data.append(b"")
                continue
            coord = (level, (size >> (TILE_HEIGHT * level)) // TILE_WIDTH)
            stored = tiles.get(coord, b"")
            if len(stored) < width * HASH_SIZE:
                raise LookupError(
                    f"tile {coord} holds {len(stored) // HASH_SIZE} hashes, "
                    f"the tree of size {size} needs {width}"
                )
            # A later seal may already have extended it (another replica); the
            # tree of |size| has exactly |width| of them.
            data.append(stored[: width * HASH_SIZE])
        return cls(size, tuple(data))

    def extend(
        self, new_size: int, nodes: Iterable[tuple[int, int, bytes]]
    ) -> tuple[TileEdge, list[TileWrite]]:
        """Add the complete subtrees a seal created; returns the new edge and the tiles to write.

        `nodes` are (tree level, index, hash) of every complete subtree that
        appeared between `self.size` and `new_size` leaves, as
        `LogTree.append` produces them; only levels that are multiples of 8
        are stored. Every tile that changed is returned whole: full tiles
        completed by this seal and the new partial tile of each level.
        """
        pending: dict[int, list[bytes]] = {}
        for level, index, digest in nodes:
            if level % TILE_HEIGHT:
                continue
            tile_level = level // TILE_HEIGHT
            hashes = pending.setdefault(tile_level, [])
            expected = (self.size >> level) + len(hashes)
            if index != expected:
                raise ValueError(f"node ({level}, {index}) out of order, want index {expected}")
            hashes.append(digest)
        writes: list[TileWrite] = []
        data = list(self.data)
        for tile_level in range(len(edge_widths(new_size))):
            shift = TILE_HEIGHT * tile_level
            if (self.size >> shift) + len(pending.get(tile_level, [])) != new_size >> shift:
                raise ValueError(f"tile level {tile_level} did not get every new node")
            if tile_level >= len(data):
                data.append(b"")
            new = pending.get(tile_level)
            if not new:
                continue
            first = (self.size >> shift) // TILE_WIDTH  # the tile the old edge lives in
            buffer = data[tile_level] + b"".join(new)
            for offset in range(0, len(buffer), TILE_BYTES):
                index = first + offset // TILE_BYTES
                writes.append((tile_level, index, buffer[offset : offset + TILE_BYTES]))
            tail = len(buffer) % TILE_BYTES
            data[tile_level] = buffer[len(buffer) - tail :] if tail else b""
        return TileEdge(new_size, tuple(data)), writes


# -- tree nodes from tiles ----------------------------------------------------


def _subtree_levels(hashes: Sequence[bytes], height: int) -> list[list[bytes]]:
    """The complete subtrees up to `height` levels above these 2^k-aligned hashes."""
    levels = [list(hashes)]
    while len(levels) <= height and len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


class TileCache:
    """Full tiles with the subtrees inside them hashed, least recently used out.

    Full tiles never change, so keeping them is always safe. Every proof
    passes through the few tiles at the top of the tree; with them kept, a
    proof hashes inside little more than its leaf's own tile.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._tiles: OrderedDict[TileCoord, list[list[bytes]]] = OrderedDict()

    def get(self, coord: TileCoord) -> list[list[bytes]] | None:
        levels = self._tiles.get(coord)
        if levels is not None:
            self._tiles.move_to_end(coord)
        return levels

    def put(self, coord: TileCoord, levels: list[list[bytes]]) -> None:
        self._tiles[coord] = levels
        self._tiles.move_to_end(coord)
        while len(self._tiles) > self.capacity:
            self._tiles.popitem(last=False)


class TileNodeReader:
    """The tree's complete-subtree hashes `(level, index)`, computed from stored tiles.

    Implements `tree.NodeReader`. Each call reads every tile it needs in one
    batch (none that `cache` holds) and hashes inside each tile at most once
    (255 hashes for a full one).
    """

    def __init__(self, tiles: TileReader, cache: TileCache | None = None) -> None:
        self._tiles = tiles
        self._cache = cache

    async def get_nodes(self, coords: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        wanted = set(coords)
        where: dict[tuple[int, int], tuple[TileCoord, int, int]] = {}
        for level, index in wanted:
            tile_level, within = divmod(level, TILE_HEIGHT)
            # The node spans 2^within hashes of tree level 8·tile_level, all in one tile.
            first = index << within
            where[(level, index)] = ((tile_level, first // TILE_WIDTH), within, first % TILE_WIDTH)
        height: dict[TileCoord, int] = {}
        for tile, within, _ in where.values():
            height[tile] = max(height.get(tile, 0), within)
        expanded: dict[TileCoord, list[list[bytes]]] = {}
        if self._cache is not None:
            for tile in height:
                levels = self._cache.get(tile)
                if levels is not None:
                    expanded[tile] = levels
        tiles = await self._tiles.get_tiles(height.keys() - expanded.keys())
        for tile, data in tiles.items():
            if tile not in height:
                continue
            if self._cache is not None and len(data) == TILE_BYTES:
                # Hash a full tile all the way up once; it serves every later call.
                expanded[tile] = _subtree_levels(_split_hashes(data), TILE_HEIGHT)
                self._cache.put(tile, expanded[tile])
            else:
                # Otherwise hash only as high as this call needs.
                expanded[tile] = _subtree_levels(_split_hashes(data), height[tile])
        found: dict[tuple[int, int], bytes] = {}
        for coord, (tile, within, position) in where.items():
            levels = expanded.get(tile)
            if levels is None:
                continue
            row = position >> within
            if within < len(levels) and row < len(levels[within]):
                found[coord] = levels[within][row]
        return found


def _split_hashes(data: bytes) -> list[bytes]:
    if not data or len(data) % HASH_SIZE or len(data) > TILE_BYTES:
        raise ValueError(f"a stored tile of {len(data)} bytes is not 1-256 hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

