"""The compiled postings read and signature filter (`kernels.near_votes` behind
`WordIndex._votes`) against the numpy `_votes` it replaced (near_2bd7b28.py, verbatim): the
same votes (local indexes, angle differences, weights to the bit, in the same order) and the
same answers from `search_query`, over random indexes (hypothesis) holding plain and packed
segments, uint16 and older uint32 signatures, and a tail with discarded registrations."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shotstamp_service.matching import index as index_module
from shotstamp_service.matching import kernels
from shotstamp_service.matching.index import ANGLE_BINS, SIGNATURE_BITS, WordIndex, WordQuery
from shotstamp_service.matching.index import _by_distance as by_distance
from tests.unit.matching import near_2bd7b28 as before


def _as_mapped(seg: index_module._Segment, packed: bool, wide: np.ndarray | None,
               ) -> index_module._Segment:
    """`seg` as `SegmentDir` maps older and newer files: postings packed (formats /2 on) or
    plain uint32 (/1), signatures uint16 (/3 on) or the uint32 of /1-/2 (`wide`: their high
    16 bits, which the filter ignores), read-only as a memory map is."""
    postings = (index_module.packed_view(index_module.pack_postings(seg.postings)) if packed
                else seg.postings.copy())
    signatures = seg.signatures if wide is None else (
        seg.signatures.astype(np.uint32) | (wide[: len(seg.signatures)] << np.uint32(16)))
    for a in (postings, signatures):
        a.flags.writeable = False
    return index_module._Segment(seg.refs, seg.offsets, postings, signatures,
                                 index_module.FINAL_TIER, persisted=True, packed=packed)


@st.composite
def indexes(draw: st.DrawFn) -> tuple[WordIndex, np.random.Generator, np.ndarray,
                                      np.ndarray, np.ndarray]:
    """A `WordIndex` of mapped parts (each packed or plain, uint16 or uint32 signatures),
    in-memory segments and a tail (some registrations discarded), over skewed words and
    signatures drawn near a few centres (as real descriptor bits are biased), so that many
    postings pass the filter at some distances and few at others."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 120))
    k = draw(st.integers(1, 40))
    vocabulary = draw(st.sampled_from([20, 300, 1 << 20]))
    words = (np.minimum(rng.zipf(1.3, n * k), vocabulary) - 1).astype(np.uint32)
    angles = rng.integers(0, ANGLE_BINS, n * k).astype(np.uint8)
    centres = rng.integers(0, 1 << 16, 4)
    noise = rng.random((n * k, 16)) < draw(st.sampled_from([0.05, 0.2, 0.5]))
    flips = (noise * (1 << np.arange(16))).sum(axis=1)
    signatures = (rng.choice(centres, n * k) ^ flips).astype(np.uint32)
    refs = np.arange(1, n + 1, dtype=np.int64) * 3
    mapped = draw(st.integers(0, n))
    index = WordIndex(background=False, segment_postings=draw(st.sampled_from([64, 1 << 30])))
    parts = list(index_module.word_segments(refs[:mapped], np.full(mapped, k),
                                            words[: mapped * k], angles[: mapped * k],
                                            signatures[: mapped * k]))
    wide = rng.integers(0, 1 << 16, n * k).astype(np.uint32)
    for part in parts:
        index.attach(_as_mapped(part, draw(st.booleans()),
                                wide if draw(st.booleans()) else None))
    for i in range(mapped, n):
        index.add(int(refs[i]), *(a[i * k:(i + 1) * k] for a in (words, angles, signatures)))
        if draw(st.integers(0, 9)) == 0:
            index.discard(int(refs[int(rng.integers(mapped, i + 1))]))
    return index, rng, words, angles, signatures


def _query(rng: np.random.Generator, words: np.ndarray, angles: np.ndarray,
           signatures: np.ndarray, probe: bool) -> WordQuery:
    """Words of a registration (angles turned, signatures a few bits off) and random ones."""
    own = rng.choice(len(words), min(len(words), 30), replace=False)
    q = np.concatenate([words[own], rng.integers(0, 300, 10).astype(np.uint32)])
    qa = np.concatenate([angles[own].astype(np.int64) + 3, rng.integers(0, 16, 10)]) % ANGLE_BINS
    qs = np.concatenate([signatures[own] ^ rng.integers(0, 1 << 16, len(own)).astype(np.uint32)
                         & np.uint32(0x0421),
                         rng.integers(0, 1 << 32, 10, dtype=np.uint64).astype(np.uint32)])
    return WordQuery.of(q, qa.astype(np.uint8), qs, np.arange(5) if probe else None)


@settings(max_examples=200, deadline=None)
@given(built=indexes(), max_distance=st.sampled_from([0, 2, 6, 10, 16, SIGNATURE_BITS]),
       sigma=st.sampled_from([None, 6.0, 11.3]), probe=st.booleans())
def test_compiled_votes_are_bit_identical_to_numpy(
        built: tuple[WordIndex, np.random.Generator, np.ndarray, np.ndarray, np.ndarray],
        max_distance: int, sigma: float | None, probe: bool) -> None:
    index, rng, words, angles, signatures = built
    query = _query(rng, words, angles, signatures, probe)
    df, ranges = index._frequencies(query.words)
    read = np.flatnonzero(df > 0)
    ranges = [r if r is None else (r[0][read], r[1][read]) for r in ranges]
    idf = np.log((len(index) + 1) / df[read])
    args = (query.words[read], query.angles[read], query.signatures[read], idf, max_distance,
            by_distance(sigma), ranges)
    want = [p for p in before.votes(index, *args) if len(p[1])]
    refs_of, local, dangle, weight, vote_starts = index._votes(*args)
    voted = np.flatnonzero(np.diff(vote_starts))
    assert [refs_of[k] is p[0] for k, p in zip(voted.tolist(), want, strict=True)] == (
        [True] * len(want))
    for k, (_, want_local, want_dangle, want_weight) in zip(voted.tolist(), want, strict=True):
        at = slice(vote_starts[k], vote_starts[k + 1])
        assert local[at].tolist() == want_local.tolist()
        assert dangle[at].tolist() == want_dangle.tolist()
        assert weight[at].tolist() == want_weight.tolist()  # float == float: the same multiply
    assert len(local) == sum(len(p[1]) for p in want)
    for kw in ({}, {"max_postings": 150}, {"max_df": 0.3}, {"max_probe_postings": 40}):
        got = index.search_query(query, limit=20, min_votes=2, max_distance=max_distance,
                                 sigma=sigma, **kw)  # type: ignore[arg-type]
        old = before.search_query(index, query, limit=20, min_votes=2,
                                  max_distance=max_distance, sigma=sigma, **kw)
        assert [(g.ref, g.score, g.votes) for g in got] == [
            (g.ref, g.score, g.votes) for g in old]


def test_a_tail_posting_above_2_63_keeps_its_fields() -> None:
    """A tail posting of a word ≥ 2**19 has its top bit set (word << 44): its tail index,
    angle and signature still read right through the kernel's int64."""
    index = WordIndex(background=False)
    word = np.array([(1 << 20) - 1], np.uint32)
    index.add(7, word, np.array([9], np.uint8), np.array([0xFFFF], np.uint32))
    index.add(8, word, np.array([2], np.uint8), np.array([0x00F0], np.uint32))
    assert int(index._tail.packed[0]) >= 1 << 63
    refs_of, local, dangle, weight, _ = index._votes(
        word, np.array([1]), np.array([0xFFFE], np.uint16), np.ones(1), 2, by_distance(None),
        [index._tail.ranges(word)])
    # ref 7: one bit off (distance 2, kept), angle (1 - 9) % 16; ref 8: 12 bits off (dropped)
    assert refs_of[-1][local].tolist() == [7]
    assert dangle.tolist() == [8] and weight.tolist() == [1.0]


def test_warm_compiles_every_part_type_a_search_meets() -> None:
    """After `warm()`, searching plain, packed, uint32-signature and tail parts adds no
    compiled version of the kernel (none compiles during an upload)."""
    kernels.warm()
    known = len(kernels._near_votes.signatures)
    rng = np.random.default_rng(5)
    words = rng.integers(0, 50, 400).astype(np.uint32)
    angles = rng.integers(0, ANGLE_BINS, 400).astype(np.uint8)
    signatures = rng.integers(0, 1 << 16, 400).astype(np.uint32)
    index = WordIndex(background=False, segment_postings=100)
    seg = next(index_module.word_segments(np.arange(10), np.full(10, 20), words[:200],
                                          angles[:200], signatures[:200]))
    for packed in (False, True):
        for wide in (None, np.zeros(200, np.uint32)):
            index.attach(_as_mapped(seg, packed, wide))
    for i in range(10, 20):
        index.add(i, *(a[i * 20:(i + 1) * 20] for a in (words, angles, signatures)))
    assert index._segments and len(index._tail)
    assert index.search(words[:20], angles[:20], signatures[:20], limit=5, min_votes=1,
                        max_df=1.0)
    assert len(kernels._near_votes.signatures) == known
