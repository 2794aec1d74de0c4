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

from shotstamp_service import index as index_module
from shotstamp_service.index import ANGLE_BINS, HammingIndex, Hit, WordIndex


def _flip(code: bytes, bits: list[int]) -> bytes:
    value = bytearray(code)
    for b in bits:
        value[b // 8] ^= 1 << (b % 8)
    return bytes(value)


def _distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


@st.composite
def hamming_scenarios(
    draw: st.DrawFn,
) -> tuple[list[tuple[str, int, list[bytes]]], list[bytes], int]:
    """Adds (with codes near a few bases, so that many fall near the radius) and discards."""
    bases = [draw(st.binary(min_size=32, max_size=32)) for _ in range(draw(st.integers(1, 4)))]

    def near() -> bytes:
        base = bases[draw(st.integers(0, len(bases) - 1))]
        return _flip(base, draw(st.lists(st.integers(0, 255), max_size=45)))

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


def _brute_force(live: dict[int, list[bytes]], queries: list[bytes], radius: int,
                 tags: dict[int, list[int]] | None = None) -> dict[int, Hit]:
    """ref → closest (distance, query index, stored tag), ties broken as the index does."""
    out = {}
    for ref, codes in live.items():
        ref_tags = tags[ref] if tags else [0] * len(codes)
        best = min(Hit(_distance(q, c), qi, t) for qi, q in enumerate(queries)
                   for c, t in zip(codes, ref_tags, strict=True))
        if best.distance <= radius:
            out[ref] = best
    return out


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
        assert index.search(queries, radius) == _brute_force(live, queries, radius, tags)
    assert len(index) == sum(len(c) for c in live.values())


def test_hamming_index_background_rebuild_keeps_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild in a thread, with adds and discards arriving while it runs."""
    monkeypatch.setattr(index_module, "TAIL_LIMIT", 50)
    monkeypatch.setattr(index_module, "INLINE_REBUILD", 10)
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    index = HammingIndex(max_radius=31, background=True)
    live: dict[int, list[bytes]] = {}
    for ref in range(400):
        code = _flip(base, rng.choice(256, int(rng.integers(0, 40)), replace=False).tolist())
        index.add(ref, [code])
        live[ref] = [code]
        if ref % 7 == 3:
            index.discard(ref - 2)
            del live[ref - 2]
        if ref % 50 == 0:
            assert index.search([base], 31) == _brute_force(live, [base], 31)
    index.wait()
    assert index.search([base], 31) == _brute_force(live, [base], 31)
    assert index.search([base], 12) == _brute_force(live, [base], 12)
    assert len(index) == len(live)


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
            assert got == _brute_force(everything, [q.tobytes()], radius)


# -- the word index ----------------------------------------------------------------------------


def _reference_votes(regs: dict[int, tuple[list[int], list[int]]], words: list[int],
                     angles: list[int], min_votes: int, max_df: float,
                     total: int) -> dict[int, tuple[int, float]]:
    """ref → (votes, score) by the documented rule, in plain Python."""
    first_angle = {}
    for ref, (ws, angs) in regs.items():
        d: dict[int, int] = {}
        for w, a in zip(ws, angs, strict=True):
            d.setdefault(w, a)
        first_angle[ref] = d
    query: dict[int, int] = {}
    for w, a in zip(words, angles, strict=True):
        query.setdefault(w, a)
    df = {w: sum(w in d for d in first_angle.values()) for w in query}
    out = {}
    for ref, d in first_angle.items():
        bins_score = [0.0] * ANGLE_BINS
        bins_votes = [0] * ANGLE_BINS
        for w, qa in query.items():
            if w not in d or df[w] == 0 or (df[w] > 64 and df[w] > max_df * total):
                continue
            idf = math.log((total + 1) / df[w])
            delta = (qa - d[w]) % ANGLE_BINS
            for b in (delta, (delta + 1) % ANGLE_BINS):
                bins_score[b] += idf
                bins_votes[b] += 1
        best = max(range(ANGLE_BINS), key=lambda b: (bins_votes[b], bins_score[b]))
        if bins_votes[best] >= min_votes:
            out[ref] = (bins_votes[best], bins_score[best])
    return out


@st.composite
def word_scenarios(draw: st.DrawFn) -> tuple[list[tuple[int, list[int], list[int]]], list[int],
                                              list[int], int]:
    vocabulary = draw(st.lists(st.integers(0, (1 << 20) - 1), min_size=3, max_size=12,
                               unique=True))
    regs = []
    for ref in range(draw(st.integers(1, 40))):
        n = draw(st.integers(1, 10))
        regs.append((ref * 7 + 1,
                     [draw(st.sampled_from(vocabulary)) for _ in range(n)],
                     [draw(st.integers(0, ANGLE_BINS - 1)) for _ in range(n)]))
    nq = draw(st.integers(1, 15))
    qw = [draw(st.sampled_from(vocabulary)) for _ in range(nq)]
    qa = [draw(st.integers(0, ANGLE_BINS - 1)) for _ in range(nq)]
    return regs, qw, qa, draw(st.integers(1, 4))


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(scenario=word_scenarios(), segment=st.sampled_from([4, 16, 1 << 18]))
def test_word_index_votes_equal_reference(
    scenario: tuple[list[tuple[int, list[int], list[int]]], list[int], list[int], int],
    segment: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    regs, qw, qa, min_votes = scenario
    monkeypatch.setattr(index_module, "FANOUT", 2)
    index = WordIndex(background=False, segment_postings=segment)
    for ref, ws, angs in regs:
        index.add(ref, np.array(ws), np.array(angs))
    want = _reference_votes({r: (w, a) for r, w, a in regs}, qw, qa, min_votes, 0.02, len(regs))
    got = index.search(np.array(qw), np.array(qa), limit=1000, min_votes=min_votes)
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
    scenario: tuple[list[tuple[int, list[int], list[int]]], list[int], list[int], int],
    segment: int, data: st.DataObject, monkeypatch: pytest.MonkeyPatch,
) -> None:
    regs, qw, qa, min_votes = scenario
    monkeypatch.setattr(index_module, "FANOUT", 2)
    index = WordIndex(background=False, segment_postings=segment)
    live = {}
    for ref, ws, angs in regs:
        index.add(ref, np.array(ws), np.array(angs))
        live[ref] = (ws, angs)
        if data.draw(st.booleans()):
            gone = data.draw(st.sampled_from(sorted(live)))
            index.discard(gone)
            del live[gone]
    assert len(index) == len(live)
    got = index.search(np.array(qw), np.array(qa), limit=1000, min_votes=min_votes)
    assert {g.ref for g in got} <= set(live)
    # Votes do not depend on idf (the best bin is the one with most votes), so they match a
    # reference over the live registrations even while discarded postings still count in df.
    want = _reference_votes(live, qw, qa, min_votes, 1.0, len(live))
    for g in got:
        assert g.votes == want[g.ref][0]


def test_word_index_bulk_load_equals_adds() -> None:
    rng = np.random.default_rng(3)
    n, k = 500, 20
    words = rng.integers(0, 2000, n * k).astype(np.uint32)
    angles = rng.integers(0, ANGLE_BINS, n * k).astype(np.uint8)
    refs = np.arange(n, dtype=np.int64) + 100
    bulk = WordIndex(background=False)
    bulk.add_many(refs, np.full(n, k), words, angles)
    one = WordIndex(background=False, segment_postings=256)
    for i in range(n):
        one.add(int(refs[i]), words[i * k : (i + 1) * k], angles[i * k : (i + 1) * k])
    q, qa = words[40:80], (angles[40:80] + 2) % ANGLE_BINS
    a = bulk.search(q, qa, limit=10, min_votes=2)
    b = one.search(q, qa, limit=10, min_votes=2)
    assert [(x.ref, x.votes) for x in a] == [(x.ref, x.votes) for x in b]
    assert a[0].ref == refs[2]  # the registration the query words came from
