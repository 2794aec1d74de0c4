"""Index correctness: every stored item within the threshold is found, none beyond it.

Both indexes are checked against brute force over random operation sequences (hypothesis),
with their rebuild and merge thresholds lowered so that the tables, the tail, segment freezing,
merging and the background thread are all exercised.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shotstamp_service.matching import index as index_module
from shotstamp_service.matching.index import (
    ANGLE_BINS,
    SIGNATURE_BITS,
    STORED_SIGNATURE_BITS,
    WORD_BITS,
    HammingIndex,
    WordIndex,
)
from tests.kit.matching_helpers import brute_force, flip_bits


@st.composite
def hamming_scenarios(
    draw: st.DrawFn,
) -> tuple[list[tuple[str, int, list[bytes]]], list[bytes], int]:
    """Adds (with codes near a few bases, so that many fall near the radius) and discards."""
    bases = [draw(st.binary(min_size=32, max_size=32)) for _ in range(draw(st.integers(1, 4)))]

    def near() -> bytes:
        base = bases[draw(st.integers(0, len(bases) - 1))]
        return flip_bits(base, draw(st.lists(st.integers(0, 255), max_size=45)))

    ops: list[tuple[str, int, list[bytes]]] = []
    refs: list[int] = []
    for _ in range(draw(st.integers(1, 25))):
        if refs and draw(st.integers(0, 4)) == 0:
            ops.append(("discard", refs.pop(draw(st.integers(0, len(refs) - 1))), []))
        else:
            ref = draw(st.integers(0, 1 << 62))
            if ref in refs:
                continue
            refs.append(ref)
            ops.append(("add", ref, [near() for _ in range(draw(st.integers(1, 3)))]))
    queries = [near() for _ in range(draw(st.integers(1, 3)))]
    return ops, queries, draw(st.integers(0, 31))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(scenario=hamming_scenarios(), tail_limit=st.sampled_from([1, 3, 8, 1000]))
def test_hamming_index_equals_brute_force(
    scenario: tuple[list[tuple[str, int, list[bytes]]], list[bytes], int], tail_limit: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ops, queries, radius = scenario
    monkeypatch.setattr(index_module, "TAIL_LIMIT", tail_limit)
    index = HammingIndex(max_radius=31, background=False)
    live: dict[int, list[bytes]] = {}
    tags: dict[int, list[int]] = {}
    for op, ref, codes in ops:
        if op == "add":
            tags[ref] = [(ref + i) % 3 for i in range(len(codes))]
            index.add(ref, codes, tags[ref])
            live[ref] = codes
        else:
            index.discard(ref)
            del live[ref]
        assert index.search(queries, radius) == brute_force(live, queries, radius, tags)
    assert len(index) == sum(len(c) for c in live.values())


@pytest.mark.parametrize("chunk_bits", [None, 12, 21, 22])
def test_hamming_index_bulk_load_equals_adds(chunk_bits: int | None) -> None:
    """Also for every chunk layout: narrow, and the wide ones large indexes use, whose chunks
    straddle 64-bit words."""
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    codes[1000:1100] = codes[0] ^ np.packbits(rng.random((100, 256)) < 0.08, axis=1)
    refs = np.arange(3000, dtype=np.int64) * 3
    bulk = HammingIndex(background=False, chunk_bits=chunk_bits)
    bulk.add_many(refs, codes)
    one = HammingIndex(background=False, chunk_bits=chunk_bits)
    for r, c in zip(refs.tolist(), codes, strict=True):
        one.add(r, [c.tobytes()])
    everything = {int(r): [c.tobytes()] for r, c in zip(refs, codes, strict=True)}
    for q in (codes[0], codes[1050], codes[2999]):
        for radius in (0, 15, 31):
            got = bulk.search([q.tobytes()], radius)
            assert got == one.search([q.tobytes()], radius)
            assert got == brute_force(everything, [q.tobytes()], radius)


# -- the word index ----------------------------------------------------------------------------


Posting = tuple[int, int, int]  # (word, angle bin, signature)


def _reference_votes(regs: dict[int, list[Posting]], query: list[Posting], min_votes: int,
                     max_df: float, total: int, max_distance: int,
                     sigma: float | None) -> dict[int, tuple[int, float]]:
    """ref → (votes, score) by the documented rule, in plain Python."""
    first: dict[int, dict[int, tuple[int, int]]] = {}
    for ref, postings in regs.items():
        d: dict[int, tuple[int, int]] = {}
        for w, a, g in postings:
            d.setdefault(w, (a, g))  # the strongest keypoint of each word
        first[ref] = d
    q: dict[int, tuple[int, int]] = {}
    for w, a, g in query:
        q.setdefault(w, (a, g))
    df = {w: sum(w in d for d in first.values()) for w in q}
    out = {}
    for ref, d in first.items():
        bins_score = [0.0] * ANGLE_BINS
        bins_votes = [0] * ANGLE_BINS
        for w, (qa, qg) in q.items():
            if w not in d or df[w] == 0 or (df[w] > 64 and df[w] > max_df * total):
                continue
            a, g = d[w]
            # over the STORED_SIGNATURE_BITS the index keeps, each counted for the dropped ones
            distance = (SIGNATURE_BITS // STORED_SIGNATURE_BITS) * (
                (qg ^ g) & ((1 << STORED_SIGNATURE_BITS) - 1)).bit_count()
            if distance > max_distance:
                continue  # Hamming embedding: a chance collision of the word
            weight = math.log((total + 1) / df[w])
            if sigma is not None:
                weight *= math.exp(-((distance / sigma) ** 2))
            delta = (qa - a) % ANGLE_BINS
            for b in (delta, (delta + 1) % ANGLE_BINS):
                bins_score[b] += weight
                bins_votes[b] += 1
        best = max(range(ANGLE_BINS), key=lambda b: (bins_votes[b], bins_score[b]))
        if bins_votes[best] >= min_votes:
            out[ref] = (bins_votes[best], bins_score[best])
    return out


def _arrays(postings: list[Posting]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([p[0] for p in postings], np.uint32),
            np.array([p[1] for p in postings], np.uint8),
            np.array([p[2] for p in postings], np.uint32))


@st.composite
def word_scenarios(draw: st.DrawFn) -> tuple[list[tuple[int, list[Posting]]], list[Posting],
                                              int, int, float | None]:
    """Few words and signatures near a few bases, so that votes and distances near the
    threshold are common."""
    vocabulary = draw(st.lists(st.integers(0, (1 << 20) - 1), min_size=3, max_size=12,
                               unique=True))
    bases = draw(st.lists(st.integers(0, (1 << 32) - 1), min_size=1, max_size=3))

    def posting() -> Posting:
        flips = draw(st.lists(st.integers(0, 31), max_size=12))
        signature = draw(st.sampled_from(bases))
        for bit in flips:
            signature ^= 1 << bit
        return (draw(st.sampled_from(vocabulary)), draw(st.integers(0, ANGLE_BINS - 1)),
                signature)

    regs = [(ref * 7 + 1, [posting() for _ in range(draw(st.integers(1, 10)))])
            for ref in range(draw(st.integers(1, 40)))]
    query = [posting() for _ in range(draw(st.integers(1, 15)))]
    return (regs, query, draw(st.integers(1, 4)), draw(st.sampled_from([0, 3, 6, 32])),
            draw(st.sampled_from([None, 4.0])))


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(scenario=word_scenarios(), segment=st.sampled_from([4, 16, 1 << 18]))
def test_word_index_votes_equal_reference(
    scenario: tuple[list[tuple[int, list[Posting]]], list[Posting], int, int, float | None],
    segment: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    regs, query, min_votes, max_distance, sigma = scenario
    monkeypatch.setattr(index_module, "FANOUT", 2)
    index = WordIndex(background=False, segment_postings=segment)
    for ref, postings in regs:
        index.add(ref, *_arrays(postings))
    want = _reference_votes(dict(regs), query, min_votes, 0.02, len(regs), max_distance, sigma)
    got = index.search(*_arrays(query), limit=1000, min_votes=min_votes,
                       max_distance=max_distance, sigma=sigma)
    assert {g.ref: g.votes for g in got} == {r: v for r, (v, _) in want.items()}
    for g in got:
        assert g.score == pytest.approx(want[g.ref][1])
    # ranked by score, then ref
    assert [(-g.score, g.ref) for g in got] == sorted((-g.score, g.ref) for g in got)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(scenario=word_scenarios(), segment=st.sampled_from([4, 16, 1 << 18]),
       data=st.data())
def test_word_index_never_returns_discarded(
    scenario: tuple[list[tuple[int, list[Posting]]], list[Posting], int, int, float | None],
    segment: int, data: st.DataObject, monkeypatch: pytest.MonkeyPatch,
) -> None:
    regs, query, min_votes, max_distance, _ = scenario
    monkeypatch.setattr(index_module, "FANOUT", 2)
    index = WordIndex(background=False, segment_postings=segment)
    live = {}
    for ref, postings in regs:
        index.add(ref, *_arrays(postings))
        live[ref] = postings
        if data.draw(st.booleans()):
            gone = data.draw(st.sampled_from(sorted(live)))
            index.discard(gone)
            del live[gone]
    assert len(index) == len(live)
    got = index.search(*_arrays(query), limit=1000, min_votes=min_votes,
                       max_distance=max_distance)
    assert {g.ref for g in got} <= set(live)
    # Votes do not depend on idf (the best bin is the one with most votes), so they match a
    # reference over the live registrations even while discarded postings still count in df.
    want = _reference_votes(live, query, min_votes, 1.0, len(live), max_distance, None)
    for g in got:
        assert g.votes == want[g.ref][0]


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(scenario=word_scenarios(), segment=st.sampled_from([4, 16, 1 << 18]), data=st.data())
def test_word_index_probes_equal_reference(
    scenario: tuple[list[tuple[int, list[Posting]]], list[Posting], int, int, float | None],
    segment: int, data: st.DataObject, monkeypatch: pytest.MonkeyPatch,
) -> None:
    regs, query, min_votes, max_distance, sigma = scenario
    # Some query words one bit off the stored ones, as a copy's descriptors drift.
    moved = [(w ^ (1 << data.draw(st.integers(0, WORD_BITS - 1))) if data.draw(st.booleans())
              else w, a, g) for w, a, g in query]
    probe = sorted(data.draw(st.sets(st.integers(0, len(moved) - 1))))
    monkeypatch.setattr(index_module, "FANOUT", 2)
    index = WordIndex(background=False, segment_postings=segment)
    for ref, postings in regs:
        index.add(ref, *_arrays(postings))
    # The documented rule: every exact word first, then each probed word's neighbours in
    # order; a word already looked up keeps its first query keypoint.
    expanded = moved + [(moved[i][0] ^ (1 << b), moved[i][1], moved[i][2])
                        for i in probe for b in range(WORD_BITS)]
    want = _reference_votes(dict(regs), expanded, min_votes, 0.02, len(regs), max_distance,
                            sigma)
    got = index.search(*_arrays(moved), limit=1000, min_votes=min_votes,
                       max_distance=max_distance, sigma=sigma,
                       probe=np.array(probe, np.intp))
    assert {g.ref: g.votes for g in got} == {r: v for r, (v, _) in want.items()}
    for g in got:
        assert g.score == pytest.approx(want[g.ref][1])
