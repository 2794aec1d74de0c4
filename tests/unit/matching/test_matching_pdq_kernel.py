"""The compiled PDQ probe (`kernels.pdq_hits` behind `HammingIndex.search`) against the numpy
search it replaced (pdq_search_2bd7b28.py, verbatim): the same dict of ref → Hit, in the same
order, over random indexes (hypothesis) with near duplicates, exact ties, wide blocks of
clustered codes, discarded refs, persisted parts in every table form, in-memory tables and
the brute-force tail."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shotstamp_service.matching import index as index_module
from shotstamp_service.matching import kernels
from shotstamp_service.matching.index import (
    OFFSET_BLOCK_BITS,
    Frozen,
    HammingIndex,
    PackedOffsets,
    _back_to_back,
    build_frozen,
)
from tests.kit.matching_helpers import brute_force
from tests.unit.matching import pdq_search_2bd7b28 as before


def _near(rng: np.random.Generator, code: np.ndarray, bits: int) -> np.ndarray:
    flipped = np.unpackbits(code).copy()
    flipped[rng.choice(256, bits, replace=False)] ^= 1
    return np.packbits(flipped)


def _codes(rng: np.random.Generator, n: int, bases: np.ndarray, near: float,
           spread: int) -> np.ndarray:
    """`n` codes: a share `near` of them within `spread` bits of one of `bases` (exact
    duplicates among them when the flip count is 0), the rest uniform."""
    out = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    for i in np.flatnonzero(rng.random(n) < near):
        out[i] = _near(rng, bases[rng.integers(0, len(bases))], int(rng.integers(0, spread + 1)))
    return out


def _frozen(rng: np.random.Generator, codes: np.ndarray, first_ref: int, form: str,
            max_radius: int, chunk_bits: int | None) -> Frozen:
    """A persisted part: refs shared by up to 3 codes (with distinct tags), in one of the
    table forms a segment may hold (packed run starts and 3-byte order, both int32, or packed
    run starts with an int32 order, as a part of 2**24 codes or more keeps it)."""
    refs = first_ref + np.sort(rng.integers(0, max(1, len(codes) // 2), len(codes)))
    tags = rng.integers(0, 3, len(codes)).astype(np.uint8)
    part = build_frozen(codes, refs, tags, max_radius, chunk_bits, packed=form != "int32")
    if form == "packed, int32 order":
        plain = build_frozen(codes, refs, tags, max_radius, chunk_bits, packed=False)
        part = replace(part, tables=replace(part.tables, order=plain.tables.order))
    return part


def _same(index: HammingIndex, queries: list[bytes], radius: int) -> dict[int, index_module.Hit]:
    got = index.search(queries, radius)
    want = before.search(index, queries, radius)
    assert list(got.items()) == list(want.items())  # the same hits, inserted in the same order
    return got


@st.composite
def indexes(draw: st.DrawFn) -> tuple[HammingIndex, list[bytes], int, dict[int, list[bytes]]]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    max_radius = draw(st.sampled_from([31, 31, 15, 47]))
    chunk_bits = draw(st.sampled_from([None, None, 12, 17]))
    bases = rng.integers(0, 256, (draw(st.integers(1, 4)), 32), dtype=np.uint8)
    near, spread = draw(st.floats(0, 1)), draw(st.sampled_from([0, 3, 20, 40]))
    index = HammingIndex(max_radius=max_radius, background=False, chunk_bits=chunk_bits)
    live: dict[int, list[bytes]] = {}
    ref = 0
    for _ in range(draw(st.integers(0, 3))):
        n = draw(st.integers(1, 700))
        codes = _codes(rng, n, bases, near, spread)
        part = _frozen(rng, codes, ref, draw(st.sampled_from(
            ["packed", "int32", "packed, int32 order"])), max_radius, chunk_bits)
        index.attach(part)
        for r, c in zip(part.refs.tolist(), part.codes, strict=True):
            live.setdefault(r, []).append(c.tobytes())
        ref = int(part.refs.max()) + 1
    tail_limit = draw(st.sampled_from([8, 64, 100_000]))
    with mock.patch.object(index_module, "TAIL_LIMIT", tail_limit):
        if draw(st.booleans()):  # bulk-loaded rows (the in-memory tables at once)
            n = draw(st.integers(1, 400))
            codes = _codes(rng, n, bases, near, spread)
            refs = np.arange(ref, ref + n)
            index.add_many(refs, codes)
            live.update({r: [c.tobytes()] for r, c in zip(refs.tolist(), codes, strict=True)})
            ref += n
        for _ in range(draw(st.integers(0, 200))):
            k = int(rng.integers(1, 3))
            codes = _codes(rng, k, bases, near, spread)
            index.add(ref, [c.tobytes() for c in codes], list(range(k)))
            live[ref] = [c.tobytes() for c in codes]
            ref += 1
            if rng.random() < 0.1:  # a reservation given up: dead in the tables or the tail
                victim = int(rng.choice(list(live)))
                if victim >= (int(max(p.refs.max() for p in index._frozen)) + 1
                              if index._frozen else 0):
                    index.discard(victim)
                    del live[victim]
    queries = [(_near(rng, bases[rng.integers(0, len(bases))], int(rng.integers(0, 30)))
                if rng.random() < 0.7 else rng.integers(0, 256, 32, dtype=np.uint8)).tobytes()
               for _ in range(draw(st.integers(1, 8)))]
    if draw(st.booleans()):
        queries.append(queries[0])  # a repeated query code: ties broken by query index
    radius = draw(st.integers(0, max_radius))
    return index, queries, radius, live


@settings(max_examples=150, deadline=None)
@given(case=indexes())
def test_compiled_probe_answers_as_numpy(
        case: tuple[HammingIndex, list[bytes], int, dict[int, list[bytes]]]) -> None:
    index, queries, radius, live = case
    got = _same(index, queries, radius)
    # and both are right: every code within the radius, none beyond (tags aside)
    assert {r: h.distance for r, h in got.items()} == {
        r: h.distance for r, h in brute_force(live, queries, radius).items()}


def test_clustered_codes_fill_wide_blocks_in_every_table_form() -> None:
    """600 near-copies of one code (blocks of run starts over 255 codes: kept wide) beside
    spread codes; every persisted form answers as the numpy search and as brute force."""
    rng = np.random.default_rng(21)
    base = rng.integers(0, 256, 32, dtype=np.uint8)
    codes = np.concatenate([np.stack([_near(rng, base, int(rng.integers(0, 3)))
                                      for _ in range(600)]),
                            rng.integers(0, 256, (2400, 32), dtype=np.uint8)])
    queries = [base.tobytes(), codes[1000].tobytes(), _near(rng, codes[2000], 29).tobytes()]
    for form in ("packed", "int32", "packed, int32 order"):
        part = _frozen(rng, codes, 0, form, 31, None)
        offsets = part.tables.offsets
        assert not isinstance(offsets, PackedOffsets) or len(offsets.wide_blocks) > 0
        index = HammingIndex(max_radius=31, background=False)
        index.attach(part)
        live: dict[int, list[bytes]] = {}
        for r, c in zip(part.refs.tolist(), part.codes, strict=True):
            live.setdefault(r, []).append(c.tobytes())
        for radius in (0, 2, 12, 31):
            got = _same(index, queries, radius)
            assert {r: h.distance for r, h in got.items()} == {
                r: h.distance for r, h in brute_force(live, queries, radius).items()}
        assert len(index.search(queries, 31)) > 200  # the near-copies, ≈ 2 codes a ref


def test_the_tail_and_the_tables_share_a_ref_and_its_best_hit() -> None:
    """A ref with one code in the in-memory tables and a closer one in the tail (added
    later), and a discarded ref in each: the closest live pair wins, as before."""
    rng = np.random.default_rng(4)
    base = rng.integers(0, 256, 32, dtype=np.uint8)
    with mock.patch.object(index_module, "TAIL_LIMIT", 4):
        index = HammingIndex(max_radius=31, background=False)
        index.add(1, [_near(rng, base, 9).tobytes()], [2])
        index.add(2, [_near(rng, base, 3).tobytes()])
        index.add(3, [_near(rng, base, 1).tobytes()])
        index.add(4, [_near(rng, base, 5).tobytes()])  # the tables rebuild here
        assert index._tables.size == 4
        index.add(1, [_near(rng, base, 4).tobytes()], [1])
        index.add(5, [base.tobytes()])
        index.discard(3)
        index.discard(5)
    got = _same(index, [base.tobytes()], 31)
    assert got == {1: (4, 0, 1), 2: (3, 0, 0), 4: (5, 0, 0)}


def test_kernel_constants_match_the_index() -> None:
    assert OFFSET_BLOCK_BITS == 6  # `kernels._run_start` reads blocks of 64 entries


def test_run_starts_are_read_in_place() -> None:
    """The int32 run starts of in-memory tables are one flat array the kernel reads without a
    copy; separate arrays are joined."""
    codes = np.random.default_rng(1).integers(0, 256, (500, 32), dtype=np.uint8)
    part = build_frozen(codes, np.arange(500), np.zeros(500, np.uint8), 31, packed=False)
    offsets = part.tables.offsets
    assert isinstance(offsets, list)
    flat = _back_to_back(offsets)
    assert np.shares_memory(flat, offsets[0]) and len(flat) == sum(len(o) for o in offsets)
    copies = [o.copy() for o in offsets]
    joined = _back_to_back(copies)
    assert not np.shares_memory(joined, copies[0]) and np.array_equal(joined, flat)
    view = part.tables.kernel_view
    assert np.shares_memory(view.plain, offsets[0]) and not view.plain.flags.writeable


def test_an_empty_query_list_and_an_empty_index() -> None:
    index = HammingIndex(max_radius=31, background=False)
    assert index.search([bytes(32)], 31) == {}
    index.add(7, [bytes(32)])
    assert index.search([], 31) == {}
    assert _same(index, [bytes(32)], 0) == {7: (0, 0, 0)}
    assert kernels.best_per_ref(np.zeros(0, np.int64), np.zeros(0, np.int64),
                                np.zeros(0, np.int64), np.zeros(0, np.uint8)).size == 0
