"""The tiled tree gives the same roots and proofs as the RFC 9162 reference."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shotstamp import _merkle as merkle
from shotstamp_service.log.tiles import (
    TILE_WIDTH,
    TileEdge,
    edge_widths,
    parse_tile_path,
    tile_path,
)
from shotstamp_service.log.tree import LogTree, consistency_proof, inclusion_proof
from tests.kit import TESTDATA


class MemoryTiles:
    """A tile store in a dict that checks a tile only ever grows, and counts reads."""

    def __init__(self) -> None:
        self.tiles: dict[tuple[int, int], bytes] = {}
        self.reads = 0

    async def get_tiles(self, coords):
        coords = set(coords)
        self.reads += len(coords)
        return {c: self.tiles[c] for c in coords if c in self.tiles}

    async def get_nodes(self, coords):
        from shotstamp_service.log.tiles import TileNodeReader

        return await TileNodeReader(self).get_nodes(coords)

    def apply(self, writes):
        for level, index, data in writes:
            old = self.tiles.get((level, index), b"")
            assert len(data) > len(old) and data.startswith(old), "a stored hash changed"
            assert len(data) % 32 == 0 and len(data) <= 32 * TILE_WIDTH
            self.tiles[(level, index)] = data


def leaves(n: int, start: int = 0) -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(start, n)]


def grow(batches: list[int]) -> tuple[MemoryTiles, list[bytes], list[LogTree]]:
    store, all_leaves, states = MemoryTiles(), [], []
    tree = LogTree.empty()
    for size in batches:
        new = leaves(len(all_leaves) + size, len(all_leaves))
        tree, writes = tree.append(new)
        store.apply(writes)
        all_leaves += new
        states.append(tree)
    return store, all_leaves, states


def check_tiles_follow_the_spec(store: MemoryTiles, all_leaves: list[bytes]) -> None:
    # c2sp.org/tlog-tiles: hash i of tile (l, n) is
    # MTH(D[(n * 256 + i) * 256**l : (n * 256 + i + 1) * 256**l]).
    size = len(all_leaves)
    widths = edge_widths(size)
    expected_tiles = set()
    for level, width in enumerate(widths):
        count = size // 256**level
        expected_tiles |= {(level, n) for n in range((count + 255) // 256)}
        for n in range((count + 255) // 256):
            data = store.tiles[(level, n)]
            want = 256 if n < count // 256 else width
            assert len(data) == 32 * want
            for i in range(want):
                span = all_leaves[(n * 256 + i) * 256**level : (n * 256 + i + 1) * 256**level]
                assert data[32 * i : 32 * (i + 1)] == merkle.root_hash(span)
    assert set(store.tiles) == expected_tiles


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=5))
def test_roots_and_tiles_match_the_reference_after_any_batches(batches):
    store, all_leaves, states = grow(batches)
    total = 0
    for size, state in zip(batches, states, strict=True):
        total += size
        assert state.size == total
        assert state.root() == merkle.root_hash(all_leaves[:total])
    check_tiles_follow_the_spec(store, all_leaves)


def test_the_spec_example_of_70000_leaves():
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one
    # partial level 0 tile of width 112, one full level 1 tile, one partial
    # level 1 tile of width 17, and one partial level 2 tile of width 1."
    store, all_leaves, (state,) = grow([70_000])
    assert edge_widths(70_000) == [112, 17, 1]
    lengths = {coord: len(data) // 32 for coord, data in store.tiles.items()}
    assert sorted(c for c, w in lengths.items() if c[0] == 0 and w == 256) == [
        (0, n) for n in range(273)
    ]
    assert lengths[(0, 273)] == 112
    assert (lengths[(1, 0)], lengths[(1, 1)], lengths[(2, 0)]) == (256, 17, 1)
    assert len(lengths) == 274 + 2 + 1
    assert state.root() == merkle.root_hash(all_leaves)
    # "a tree of size 256 will be represented by a full level 0 tile and a
    # partial level 1 tile of width 1."
    assert edge_widths(256) == [0, 1]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=700), st.data())
async def test_proofs_from_tiles_match_reference(size, data):
    store, all_leaves, _ = grow([size])
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    at = data.draw(st.integers(min_value=index + 1, max_value=size))
    got = await inclusion_proof(store, index, at)
    assert got == merkle.inclusion_proof(all_leaves[:at], index)
    merkle.verify_inclusion(index, at, all_leaves[index], got, merkle.root_hash(all_leaves[:at]))
    old = data.draw(st.integers(min_value=1, max_value=size))
    new = data.draw(st.integers(min_value=old, max_value=size))
    got = await consistency_proof(store, old, new)
    assert got == merkle.consistency_proof(all_leaves[:new], old)
    assert await consistency_proof(store, 0, new) == []


# The leaves of the RFC 6962 / Certificate Transparency test tree that the
# transparency-dev vectors in tests/testdata are computed over.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]


def _vectors(kind: str) -> list[dict]:
    return [
        json.loads(path.read_text())
        for path in sorted((TESTDATA / kind).glob("*/happy-path.json"))
    ]


async def test_published_vectors_through_the_tiled_tree():
    store = MemoryTiles()
    tree, roots = LogTree.empty(), []
    for leaf in CT_LEAVES:  # one seal per leaf: every size is a checkpoint
        tree, writes = tree.append([merkle.leaf_hash(leaf)])
        store.apply(writes)
        roots.append(tree.root())
    b64 = base64.b64decode
    consistency = _vectors("consistency")
    assert len(consistency) == 5
    for vector in consistency:
        size1, size2 = vector["size1"], vector["size2"]
        assert roots[size1 - 1] == b64(vector["root1"])
        assert roots[size2 - 1] == b64(vector["root2"])
        got = await consistency_proof(store, size1, size2)
        assert got == [b64(h) for h in vector["proof"] or []]
    inclusion = _vectors("inclusion")
    assert len(inclusion) == 5
    for vector in inclusion:
        got = await inclusion_proof(store, vector["leafIdx"], vector["treeSize"])
        assert got == [b64(h) for h in vector["proof"] or []]


async def test_proofs_read_a_few_tiles_at_any_size():
    store, _, _ = grow([70_000])
    store.reads = 0
    await inclusion_proof(store, 12345, 70_000)
    assert store.reads <= 6  # one tile per tile level, plus the right border's
    store.reads = 0
    await consistency_proof(store, 43210, 70_000)
    assert store.reads <= 8


async def test_load_rebuilds_the_border_and_the_edge():
    store, all_leaves, (state,) = grow([777])
    loaded = await LogTree.load(store, 777)
    assert loaded == state
    assert loaded.root() == merkle.root_hash(all_leaves)
    # And appending after a load writes the same tiles as without it.
    more = leaves(1000, 777)
    assert loaded.append(more)[1] == state.append(more)[1]


def test_a_seal_rewrites_only_the_tiles_it_changes():
    _, _, (state,) = grow([70_000])
    _, writes = state.append(leaves(70_100, 70_000))
    # 100 leaves only widen the partial level-0 tile (112 -> 212 hashes).
    assert [(level, index) for level, index, _ in writes] == [(0, 273)]
    _, writes = state.append(leaves(70_200, 70_000))  # completes tile 273
    assert [(level, index, len(data) // 32) for level, index, data in writes] == [
        (0, 273, 256),
        (0, 274, 56),
        (1, 1, 18),
    ]


def test_extend_refuses_nodes_out_of_order():
    edge = TileEdge()
    with pytest.raises(ValueError, match="out of order"):
        edge.extend(2, [(0, 1, b"\0" * 32), (0, 0, b"\1" * 32)])


@pytest.mark.parametrize(
    ("level", "index", "width", "path"),
    [
        (0, 0, 256, "tile/0/000"),
        (0, 5, 256, "tile/0/005"),
        (1, 1234067, 256, "tile/1/x001/x234/067"),
        (2, 1000, 17, "tile/2/x001/000.p/17"),
        ("entries", 42, 1, "tile/entries/042.p/1"),
    ],
)
def test_tile_paths_round_trip(level, index, width, path):
    assert tile_path(level, index, width) == path
    parsed = parse_tile_path(path.removeprefix("tile/"))
    assert parsed.index == index
    assert parsed.width == (None if width == 256 else width)
    assert parsed.entries == (level == "entries")
    if level != "entries":
        assert parsed.level == level


@pytest.mark.parametrize(
    "path",
    [
        "0",
        "00/000",
        "64/000",
        "0/5",
        "0/0005",
        "0/x000/005",
        "0/001/x234",
        "0/x1/234",
        "0/000.p/0",
        "0/000.p/256",
        "0/000.p/07",
        "0/000.p/",
        "0/000.p",
        "entries/12",
        "0/abc",
        "0/x072/x057/x594/x037/x927/x936",  # 2**56: no tree has this tile
        "0/" + "x999/" * 20 + "999",
    ],
)
def test_non_canonical_tile_paths_are_refused(path):
    with pytest.raises(ValueError):
        parse_tile_path(path)


async def test_a_tile_cache_keeps_full_tiles_and_changes_no_answer():
    from shotstamp_service.log.tiles import TileCache, TileNodeReader

    store, all_leaves, _ = grow([70_000])
    cache = TileCache(capacity=3)
    reader = TileNodeReader(store, cache)
    for index in (5, 70_000 - 1, 40_000, 5, 65_000):
        got = await inclusion_proof(reader, index, 70_000)
        assert got == await inclusion_proof(store, index, 70_000)
    assert len(cache._tiles) == 3  # the least recently used went out
    store.reads = 0
    await inclusion_proof(reader, 65_001, 70_000)  # same leaf tile, same full tile above
    assert store.reads == 2  # only the partial tiles at levels 1 and 2 were read again
    assert await consistency_proof(reader, 300, 70_000) == merkle.consistency_proof(
        all_leaves, 300
    )
