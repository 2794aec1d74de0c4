"""The stored-node tree gives the same roots and proofs as the RFC 9162 reference."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from shotstamp import merkle
from shotstamp_service.tree import LogTree, consistency_proof, inclusion_proof


class DictNodes:
    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.reads = 0

    async def get_nodes(self, coords):
        coords = set(coords)
        self.reads += len(coords)
        return {c: self.nodes[c] for c in coords if c in self.nodes}


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(n)]


def grow(batches: list[int]) -> tuple[DictNodes, list[bytes], list[LogTree]]:
    store, all_leaves, states = DictNodes(), [], []
    tree = LogTree.empty()
    for size in batches:
        new = leaves(len(all_leaves) + size)[len(all_leaves) :]
        tree, nodes = tree.append(new)
        for level, idx, h in nodes:
            assert (level, idx) not in store.nodes, "a node was written twice"
            store.nodes[(level, idx)] = h
        all_leaves += new
        states.append(tree)
    return store, all_leaves, states


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6))
def test_roots_match_reference_after_any_batches(batches):
    store, all_leaves, states = grow(batches)
    total = 0
    for size, state in zip(batches, states, strict=True):
        total += size
        assert state.size == total
        assert state.root() == merkle.root_hash(all_leaves[:total])
    # Every stored node is the hash of the complete subtree it names.
    for (level, idx), h in store.nodes.items():
        span = all_leaves[idx << level : (idx + 1) << level]
        assert len(span) == 1 << level
        assert h == merkle.root_hash(span)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=200), st.data())
async def test_proofs_from_stored_nodes_match_reference(size, data):
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


async def test_proof_reads_are_logarithmic():
    store, _, _ = grow([5000, 3000])
    store.reads = 0
    await inclusion_proof(store, 1234, 8000)
    assert store.reads <= 2 * 13  # log2(8000) ≈ 13: never a pass over the leaves
    store.reads = 0
    await consistency_proof(store, 4321, 8000)
    assert store.reads <= 3 * 13


async def test_load_rebuilds_the_border_from_stored_nodes():
    store, all_leaves, (state,) = grow([777])
    loaded = await LogTree.load(store, 777)
    assert loaded == state
    assert loaded.root() == merkle.root_hash(all_leaves)
