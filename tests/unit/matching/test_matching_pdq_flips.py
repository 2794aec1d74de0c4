"""The PDQ tables' probes per chunk (`_Layout.chunk_flips`): Σ (flips + 1) = radius + 1 instead
of every chunk ⌊radius/m⌋ bits out. Still exact: the worst-placed codes (each chunk one bit
beyond its flips but one, which is exactly at its flips) are found at the radius, and random
and clustered indexes answer as brute force and as the uniform probes did, through in-memory
and persisted (packed) tables."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shotstamp_service.matching import index as index_module
from shotstamp_service.matching.index import (
    CODE_BITS,
    HammingIndex,
    _flip_masks,
    _layout,
    build_frozen,
)
from tests.kit.matching_helpers import brute_force, flip_bits


@pytest.mark.parametrize("bits", range(4, 25))
@pytest.mark.parametrize("radius", [0, 1, 5, 11, 12, 15, 16, 31, 32, 47, 63])
def test_chunk_flips_spend_exactly_the_radius_plus_one(bits: int, radius: int) -> None:
    layout = _layout(bits, radius)
    m = len(layout.widths)
    assert sum(f + 1 for f in layout.chunk_flips) == radius + 1
    assert max(layout.chunk_flips) - min(layout.chunk_flips) <= 1
    assert min(layout.chunk_flips) >= -1
    # the extra flip goes to the narrowest chunks
    if len(set(layout.chunk_flips)) == 2:
        low = [w for w, f in zip(layout.widths, layout.chunk_flips, strict=True)
               if f == min(layout.chunk_flips)]
        high = [w for w, f in zip(layout.widths, layout.chunk_flips, strict=True)
                if f == max(layout.chunk_flips)]
        assert min(low) >= max(high)
    # never more probes than the uniform ⌊radius/m⌋ bits in every chunk
    assert sum(len(x) for x in layout.masks) <= sum(
        len(_flip_masks(w, radius // m)) for w in layout.widths)


def _worst_placed(layout: index_module._Layout, base: bytes, lucky: int,
                  rng: np.random.Generator) -> bytes:
    """A code `Σ (flips + 1) − 1` = radius bits from `base`: chunk `lucky` at exactly its flips,
    every other chunk one bit beyond its own (so only `lucky`'s probes can find it)."""
    bits: list[int] = []
    for c, (start, width, flips) in enumerate(zip(layout.starts, layout.widths,
                                                  layout.chunk_flips, strict=True)):
        k = flips if c == lucky else flips + 1
        if k > 0:
            # bit i of the code, MSB first, is bit 7 - i % 8 of byte i // 8 (flip_bits' LSB order)
            for i in rng.choice(width, k, replace=False).tolist():
                b = start + i
                bits.append(8 * (b // 8) + 7 - b % 8)
    return flip_bits(base, bits)


@pytest.mark.parametrize("chunk_bits", [16, 21, 22, 23, 24])
@pytest.mark.parametrize("radius", [31, 20, 8])
def test_the_worst_placed_codes_at_the_radius_are_found(chunk_bits: int, radius: int) -> None:
    rng = np.random.default_rng(chunk_bits * 100 + radius)
    layout = _layout(chunk_bits, radius)
    base = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    live: dict[int, list[bytes]] = {}
    for ref in range(4 * len(layout.widths)):
        lucky = ref % len(layout.widths)
        if layout.chunk_flips[lucky] < 0:
            continue  # a chunk never probed: no code can rely on it
        code = _worst_placed(layout, base, lucky, rng)
        assert bin(int.from_bytes(code, "big") ^ int.from_bytes(base, "big")).count("1") == radius
        live[ref] = [code]
    index = HammingIndex(max_radius=radius, background=False, chunk_bits=chunk_bits)
    for ref, codes in live.items():
        index.add(ref, codes)
    index._start_rebuild()  # into the tables: no brute-force tail
    assert index._tables.size == len(live) and index._tables.layout == layout
    assert index.search([base], radius) == brute_force(live, [base], radius)
    assert len(index.search([base], radius)) == len(live)
    frozen = build_frozen(np.frombuffer(b"".join(c[0] for c in live.values()), np.uint8),
                          np.array(list(live)), np.zeros(len(live), np.uint8), radius,
                          chunk_bits)
    mapped = HammingIndex(max_radius=radius, background=False)
    mapped.attach(frozen)
    assert mapped.search([base], radius) == brute_force(live, [base], radius)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400),
       chunk_bits=st.sampled_from([16, 18, 21, 22, 24]), spread=st.sampled_from([3, 12, 40, 128]),
       radius=st.sampled_from([31, 24, 10]), packed=st.booleans())
def test_probes_answer_as_brute_force_and_as_uniform_probes(seed: int, n: int, chunk_bits: int,
                                                            spread: int, radius: int,
                                                            packed: bool) -> None:
    """Clustered codes (near copies of a few bases, ties included) through persisted tables
    probed per chunk and probed uniformly: the same refs, closest pairs and tags."""
    rng = np.random.default_rng(seed)
    bases = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(3)]
    live: dict[int, list[bytes]] = {}
    tags: dict[int, list[int]] = {}
    for ref in range(n):
        k = int(rng.integers(1, 3))
        live[ref] = [flip_bits(bases[int(rng.integers(0, 3))],
                               rng.choice(CODE_BITS, int(rng.integers(0, spread)),
                                          replace=False).tolist()) for _ in range(k)]
        tags[ref] = rng.integers(0, 3, k).tolist()
    flat = [(ref, c, t) for ref in live for c, t in zip(live[ref], tags[ref], strict=True)]
    frozen = build_frozen(np.frombuffer(b"".join(c for _, c, _ in flat), np.uint8),
                          np.array([r for r, _, _ in flat]), np.array([t for *_, t in flat]),
                          31, chunk_bits, packed=packed)
    layout = frozen.tables.layout
    uniform = replace(frozen, tables=replace(
        frozen.tables, masks=[_flip_masks(w, layout.flips) for w in layout.widths]))
    per_chunk, old = HammingIndex(31, background=False), HammingIndex(31, background=False)
    per_chunk.attach(frozen)
    old.attach(uniform)
    queries = [flip_bits(bases[int(rng.integers(0, 3))],
                         rng.choice(CODE_BITS, int(rng.integers(0, spread)),
                                    replace=False).tolist()) for _ in range(3)]
    got = per_chunk.search(queries, radius)
    assert got == brute_force(live, queries, radius, tags)
    assert sorted(got.items()) == sorted(old.search(queries, radius).items())
