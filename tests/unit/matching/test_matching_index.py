"""Index correctness: every stored item within the threshold is found, none beyond it.

Both indexes are checked against brute force over random operation sequences (hypothesis),
with their rebuild and merge thresholds lowered so that the tables, the tail, segment freezing,
merging and the background thread are all exercised.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from shotstamp_service.matching import index as index_module
from shotstamp_service.matching.index import (
    ANGLE_BINS,
    SIGNATURE_BITS,
    STORED_SIGNATURE_BITS,
    HammingIndex,
    PackedOffsets,
    WordIndex,
    build_frozen,
)
from tests.kit.matching_helpers import brute_force, flip_bits


def test_hamming_index_background_rebuild_keeps_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild in a thread, with adds and discards arriving while it runs."""
    monkeypatch.setattr(index_module, "TAIL_LIMIT", 50)
    monkeypatch.setattr(index_module, "INLINE_REBUILD", 10)
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    index = HammingIndex(max_radius=31, background=True)
    live: dict[int, list[bytes]] = {}
    for ref in range(400):
        code = flip_bits(base, rng.choice(256, int(rng.integers(0, 40)), replace=False).tolist())
        index.add(ref, [code])
        live[ref] = [code]
        if ref % 7 == 3:
            index.discard(ref - 2)
            del live[ref - 2]
        if ref % 50 == 0:
            assert index.search([base], 31) == brute_force(live, [base], 31)
    index.wait()
    assert index.search([base], 31) == brute_force(live, [base], 31)
    assert index.search([base], 12) == brute_force(live, [base], 12)
    assert len(index) == len(live)


def test_packed_run_starts_answer_as_int32_ones_with_clustered_codes() -> None:
    """Persisted tables keep their order in 3 bytes a position and their run starts as uint8
    steps per block; a block over more than 255 codes (here: 600 near-copies of one code
    beside spread ones) keeps them wide."""
    rng = np.random.default_rng(21)
    base = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    live: dict[int, list[bytes]] = {}
    for ref in range(600):
        live[ref] = [flip_bits(base, rng.choice(256, int(rng.integers(0, 3)), replace=False)
                               .tolist())]
    for ref in range(600, 3000):
        live[ref] = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes()]
    refs = np.array(sorted(live), np.int64)
    codes = np.frombuffer(b"".join(live[r][0] for r in refs), np.uint8).reshape(-1, 32)
    tags = np.zeros(len(refs), np.uint8)
    packed = build_frozen(codes, refs, tags, 31)
    plain = build_frozen(codes, refs, tags, 31, packed=False)
    offsets = packed.tables.offsets
    assert isinstance(offsets, PackedOffsets) and isinstance(plain.tables.offsets, list)
    assert len(offsets.wide_blocks) > 0  # the clustered codes' blocks
    assert packed.tables.order.nbytes == plain.tables.order.nbytes * 3 // 4 + 1
    assert offsets.nbytes < sum(o.nbytes for o in plain.tables.offsets) / 2
    for c, flat in enumerate(plain.tables.offsets):  # every run start of every chunk
        probes = np.arange(len(flat), dtype=np.int64)
        assert np.array_equal(offsets.at(c, probes), flat + c * len(refs))
    queries = [base, live[1000][0], flip_bits(live[2000][0], list(range(0, 200, 7)))]
    for radius in (0, 12, 31):
        want = brute_force(live, queries, radius)
        for part in (packed, plain):
            index = HammingIndex(max_radius=31, background=False)
            index.attach(part)
            assert index.search(queries, radius) == want


def test_hamming_index_rejects_bad_arguments() -> None:
    index = HammingIndex(max_radius=15)
    with pytest.raises(ValueError, match="exceeds this index's max_radius 15"):
        index.search([bytes(32)], 16)
    with pytest.raises(ValueError, match="codes are 32 bytes, got 8"):
        index.add(1, [bytes(8)])
    with pytest.raises(ValueError, match="max_radius must be in"):
        HammingIndex(max_radius=256)
    with pytest.raises(ValueError, match="2 codes but 1 tags"):
        index.add(1, [bytes(32), bytes(32)], [0])


# -- the word index ----------------------------------------------------------------------------


# The index keeps the low STORED_SIGNATURE_BITS of a signature and counts each differing one
# as this many of SIGNATURE_BITS.
SCALE = SIGNATURE_BITS // STORED_SIGNATURE_BITS


def _signatures_at(base: int, distance: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` signatures each exactly `distance` bits from `base`, all among the bits the index
    keeps (so the index counts `SCALE * distance`), the others random."""
    out = []
    for _ in range(n):
        bits = rng.choice(STORED_SIGNATURE_BITS, distance, replace=False)
        base ^= int(rng.integers(0, 1 << 16)) << STORED_SIGNATURE_BITS
        out.append(base ^ sum(1 << int(b) for b in bits))
    return np.array(out, np.uint32)


@pytest.mark.parametrize("frozen", [False, True])
def test_word_index_counts_a_vote_only_within_the_signature_distance(frozen: bool) -> None:
    rng = np.random.default_rng(5)
    words = np.arange(10, 20, dtype=np.uint32)
    angles = np.full(10, 3, np.uint8)
    query = rng.integers(0, 1 << 32, 10, dtype=np.uint64).astype(np.uint32)
    # Registration 1 holds the query's words with signatures 4 bits away (a copy's keypoints),
    # registration 2 the same words with signatures 12 bits away (chance collisions); the
    # bits the index drops differ at random, and count for nothing.
    near = np.array([_signatures_at(int(g), 4 // SCALE, 1, rng)[0] for g in query], np.uint32)
    far = np.array([_signatures_at(int(g), 12 // SCALE, 1, rng)[0] for g in query], np.uint32)
    index = WordIndex(background=False, segment_postings=1 if frozen else 1 << 18)
    index.add(1, words, angles, near)
    index.add(2, words, angles, far)
    assert (len(index._segments) == 2) is frozen  # frozen segments, or the tail

    got = index.search(words, angles, query, limit=10, min_votes=1, max_distance=6)
    assert [(g.ref, g.votes) for g in got] == [(1, 10)]
    # At 12 bits both vote; without the filter (every bit may differ) too.
    for distance in (12, 32):
        got = index.search(words, angles, query, limit=10, min_votes=1, max_distance=distance)
        assert sorted((g.ref, g.votes) for g in got) == [(1, 10), (2, 10)]
    # Weighted by distance, the near registration scores far higher than the far one.
    weighted = {g.ref: g.score for g in index.search(words, angles, query, limit=10,
                                                     min_votes=1, max_distance=12, sigma=6.0)}
    assert weighted[2] < weighted[1] * math.exp(-(12 / 6) ** 2 + (4 / 6) ** 2) * 1.0001


def test_word_index_bulk_load_equals_adds() -> None:
    rng = np.random.default_rng(3)
    n, k = 500, 20
    words = rng.integers(0, 2000, n * k).astype(np.uint32)
    angles = rng.integers(0, ANGLE_BINS, n * k).astype(np.uint8)
    signatures = rng.integers(0, 1 << 32, n * k, dtype=np.uint64).astype(np.uint32)
    refs = np.arange(n, dtype=np.int64) + 100
    bulk = WordIndex(background=False)
    bulk.add_many(refs, np.full(n, k), words, angles, signatures)
    one = WordIndex(background=False, segment_postings=256)
    for i in range(n):
        part = slice(i * k, (i + 1) * k)
        one.add(int(refs[i]), words[part], angles[part], signatures[part])
    # The query: registration 2's keypoints turned by two bins, their signatures 2 bits off;
    # and registration 3's words, turned alike, with random signatures (chance collisions).
    q, qa = words[40:80], (angles[40:80] + 2) % ANGLE_BINS
    qs = np.concatenate([
        np.array([_signatures_at(int(g), 4 // SCALE, 1, rng)[0] for g in signatures[40:60]],
                 np.uint32),
        rng.integers(0, 1 << 32, 20, dtype=np.uint64).astype(np.uint32)])
    for distance in (4, 32):
        a = bulk.search(q, qa, qs, limit=10, min_votes=2, max_distance=distance, sigma=8.0)
        b = one.search(q, qa, qs, limit=10, min_votes=2, max_distance=distance, sigma=8.0)
        assert [(x.ref, x.votes) for x in a] == [(x.ref, x.votes) for x in b]
        assert [x.score for x in a] == pytest.approx([x.score for x in b])
        assert a[0].ref == refs[2]  # the registration whose keypoints the query has
        assert (refs[3] in {x.ref for x in a}) is (distance == 32)
    # A discarded registration is gone from both.
    bulk.discard(int(refs[2]))
    one.discard(int(refs[2]))
    for index in (bulk, one):
        assert refs[2] not in {x.ref for x in index.search(q, qa, qs, limit=10, min_votes=2,
                                                             max_distance=32)}


@pytest.mark.parametrize("frozen", [False, True])
def test_word_index_reads_probes_only_within_the_budget_exact_words_leave(frozen: bool) -> None:
    word = 0b1011
    signature = np.array([7], np.uint32)
    index = WordIndex(background=False, segment_postings=1 if frozen else 1 << 18)
    index.add(1, np.array([word], np.uint32), np.zeros(1, np.uint8), signature)
    index.add(2, np.array([word ^ (1 << 5)], np.uint32), np.zeros(1, np.uint8), signature)
    index.add(3, np.array([word ^ 3], np.uint32), np.zeros(1, np.uint8), signature)  # 2 bits

    def found(**kwargs: object) -> list[int]:
        got = index.search(np.array([word], np.uint32), np.zeros(1, np.uint8), signature,
                           limit=10, min_votes=1, max_df=1.0, **kwargs)  # type: ignore[arg-type]
        return sorted(g.ref for g in got)

    assert found() == [1]
    assert found(probe=np.array([0])) == [1, 2]
    # One posting of budget: the exact word's, nothing left for its neighbours.
    assert found(probe=np.array([0]), max_postings=1) == [1]
    assert found(probe=np.array([0]), max_postings=2) == [1, 2]
    # The probes' own cap, whatever the main budget leaves.
    assert found(probe=np.array([0]), max_probe_postings=0) == [1]
    assert found(probe=np.array([0]), max_postings=10, max_probe_postings=1) == [1, 2]
