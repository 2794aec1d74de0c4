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


@pytest.mark.parametrize("frozen", [False, True])
def test_word_index_probes_read_their_own_postings_where_exact_words_fill_the_budget(
        frozen: bool) -> None:
    """At scale the exact words fill `max_postings` and left no probe word read: with
    `scale_probe_postings` the probe words read that many postings beyond the budget (rarest
    first), and only then; where the exact words fit, the probes' cap is as before."""
    word, rare, common = 0b1011, 0b1011 ^ (1 << 5), 0b1011 ^ (1 << 6)
    signature = np.array([7], np.uint32)
    index = WordIndex(background=False, segment_postings=1 if frozen else 1 << 18)
    index.add(1, np.array([word], np.uint32), np.zeros(1, np.uint8), signature)
    index.add(2, np.array([rare], np.uint32), np.zeros(1, np.uint8), signature)
    for ref in range(3, 6):  # a probe word held by three registrations
        index.add(ref, np.array([common], np.uint32), np.zeros(1, np.uint8), signature)

    def found(**kwargs: object) -> list[int]:
        got = index.search(np.array([word], np.uint32), np.zeros(1, np.uint8), signature,
                           limit=10, min_votes=1, max_df=1.0, probe=np.array([0]),
                           max_probe_postings=1, **kwargs)  # type: ignore[arg-type]
        return sorted(g.ref for g in got)

    # The exact word's one posting fills a budget of one: no probe word is read ...
    assert found(max_postings=1) == [1]
    # ... unless the probe words read their own: the rarest first, within that many.
    assert found(max_postings=1, scale_probe_postings=1) == [1, 2]
    assert found(max_postings=1, scale_probe_postings=3) == [1, 2]
    assert found(max_postings=1, scale_probe_postings=4) == [1, 2, 3, 4, 5]
    # Where the exact words leave room, `max_probe_postings` caps the probes as before.
    assert found(max_postings=10, scale_probe_postings=4) == [1, 2]
    assert found(scale_probe_postings=4) == [1, 2]


def _mapped(parts: list[index_module._Segment]) -> list[index_module._Segment]:
    """Word parts as `SegmentDir` maps them: packed postings, persisted."""
    return [index_module._Segment(p.refs, p.offsets,
                                  index_module.packed_view(index_module.pack_postings(p.postings)),
                                  p.signatures, index_module.FINAL_TIER, persisted=True,
                                  packed=True) for p in parts]


def test_word_index_over_many_mapped_parts_answers_as_in_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Mapped parts' document frequencies come from one summed table and every part's votes
    are scored in one pass: the same registrations, scores (to the bit) and votes as one
    in-memory index, with budgets and probes cutting, and after a new set of parts."""
    rng = np.random.default_rng(11)
    n, k, tail = 700, 40, 60
    # Skewed words (a few in many registrations) so that max_df and the budgets cut.
    words = np.minimum(rng.zipf(1.3, n * k), 4000).astype(np.uint32)
    angles = rng.integers(0, ANGLE_BINS, n * k).astype(np.uint8)
    signatures = rng.integers(0, 1 << 32, n * k, dtype=np.uint64).astype(np.uint32)
    refs = np.arange(1, n + 1, dtype=np.int64)

    def reference(count: int) -> WordIndex:
        index = WordIndex(background=False)
        index.add_many(refs[:count], np.full(count, k), words[: count * k], angles[: count * k],
                       signatures[: count * k])
        for i in range(n - tail, n):
            index.add(int(refs[i]), *(a[i * k:(i + 1) * k] for a in (words, angles, signatures)))
        return index

    monkeypatch.setattr(index_module, "MAX_SEGMENT_POSTINGS", 2_000)  # many small parts
    m = n - tail
    parts = _mapped(list(index_module.word_segments(refs[:m], np.full(m, k), words[: m * k],
                                                    angles[: m * k], signatures[: m * k])))
    assert len(parts) > 10
    mapped = WordIndex(background=False, segment_postings=512)  # in-memory segments too
    for part in parts:
        mapped.attach(part)
    for i in range(m, n):
        mapped.add(int(refs[i]), *(a[i * k:(i + 1) * k] for a in (words, angles, signatures)))
    assert any(not s.persisted for s in mapped._segments)

    def queries() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for i in rng.choice(n, 12, replace=False).tolist():
            own = slice(i * k, i * k + 30)
            q = np.concatenate([words[own], rng.integers(1, 4000, 20).astype(np.uint32)])
            qa = (np.concatenate([angles[own], rng.integers(0, 16, 20).astype(np.uint8)]) + 3
                  ) % ANGLE_BINS
            qs = np.concatenate([signatures[own] ^ np.uint32(0b101),
                                 rng.integers(0, 1 << 32, 20, dtype=np.uint64).astype(np.uint32)])
            out.append((q, qa.astype(np.uint8), qs))
        return out

    def answers(index: WordIndex, query: tuple[np.ndarray, ...], **kw: object) -> list[object]:
        got = index.search(*query, limit=8, min_votes=2, max_distance=10, sigma=6.0,
                           **kw)  # type: ignore[arg-type]
        return [(g.ref, g.score, g.votes) for g in got]

    settings: list[dict[str, object]] = [
        {}, {"max_postings": 3_000}, {"max_df": 0.5},
        {"probe": np.arange(10), "max_postings": 6_000, "max_probe_postings": 500},
        {"probe": np.arange(10), "max_postings": 3_000, "max_probe_postings": 100,
         "scale_probe_postings": 800}]
    whole = reference(n - tail)
    cut = 0
    for query in queries():
        for kw in settings:
            want = answers(whole, query, **kw)
            assert answers(mapped, query, **kw) == want
            cut += bool(want)
    assert cut > len(settings)  # the queries find their registrations

    # Another manifest lists only the first parts (as a process that dropped a damaged
    # segment would): the summed frequencies follow, and the in-memory rows stay.
    keep = len(parts) // 2
    through = int(parts[keep - 1].refs[-1])
    mapped.replace_persisted(parts[:keep], through)
    fewer = WordIndex(background=False)
    fewer.add_many(refs[:through], np.full(through, k), words[: through * k],
                   angles[: through * k], signatures[: through * k])
    for i in range(m, n):
        fewer.add(int(refs[i]), *(a[i * k:(i + 1) * k] for a in (words, angles, signatures)))
    for query in queries():
        for kw in settings:
            assert answers(mapped, query, **kw) == answers(fewer, query, **kw)


def test_word_index_tail_answers_as_frozen_segments_through_adds_and_discards() -> None:
    """The in-memory tail (sorted numpy postings) gives the same registrations, scores to the
    bit and votes as the same registrations bulk-loaded into segments, while registrations
    are added and discarded (its postings go at once) and with budgets and probes cutting."""
    rng = np.random.default_rng(21)
    n, k = 300, 40
    words = np.minimum(rng.zipf(1.3, n * k), 3000).astype(np.uint32)
    angles = rng.integers(0, ANGLE_BINS, n * k).astype(np.uint8)
    signatures = rng.integers(0, 1 << 32, n * k, dtype=np.uint64).astype(np.uint32)
    refs = np.arange(1, n + 1, dtype=np.int64)
    tail = WordIndex(background=False, segment_postings=1 << 30)  # never frozen
    gone: set[int] = set()
    settings: list[dict[str, object]] = [
        {}, {"max_postings": 2_000}, {"max_df": 0.5},
        {"probe": np.arange(10), "max_postings": 5_000, "max_probe_postings": 400},
        {"probe": np.arange(10), "max_postings": 2_000, "max_probe_postings": 100,
         "scale_probe_postings": 600}]
    checked = 0
    for i in range(n):
        tail.add(int(refs[i]), *(a[i * k:(i + 1) * k] for a in (words, angles, signatures)))
        if i % 7 == 3:  # discard an earlier registration now and then
            victim = int(rng.integers(0, i + 1))
            tail.discard(int(refs[victim]))
            gone.add(victim)
        if i % 60 != 59:
            continue
        live = np.array([j for j in range(i + 1) if j not in gone])
        frozen = WordIndex(background=False)
        take = np.concatenate([np.arange(j * k, (j + 1) * k) for j in live])
        frozen.add_many(refs[live], np.full(len(live), k), words[take], angles[take],
                        signatures[take])
        assert not tail._segments and len(tail) == len(frozen) == len(live)
        for j in rng.choice(live, 4, replace=False).tolist():
            own = slice(j * k, j * k + 30)
            query = (words[own], (angles[own] + 5) % ANGLE_BINS, signatures[own] ^ np.uint32(6))
            for kw in settings:
                got, want = (
                    [(g.ref, g.score, g.votes)
                     for g in index.search(*query, limit=8, min_votes=2, max_distance=10,
                                           sigma=6.0, **kw)]  # type: ignore[arg-type]
                    for index in (tail, frozen))
                assert got == want
                checked += bool(want)
    assert checked > 20  # the queries find registrations
    assert len(tail._tail) == sum(len(np.unique(words[j * k:(j + 1) * k]))
                                        for j in range(n) if j not in gone)


def _score_reference(parts: list[tuple[np.ndarray, ...]], min_votes: int,
                     keep: int) -> list[tuple[int, float, int]]:
    """`WordIndex._score` spelled out: each vote counts in its angle bin and the next; a
    registration's best bin has the most votes, then the highest score (weights summed in
    vote order), then the lowest bin; the `keep` best by score, then ref."""
    out = []
    for refs, local, dangle, weight in parts:
        bins: dict[tuple[int, int], list[float]] = {}
        for half in (0, 1):
            for r, d, w in zip(local.tolist(), dangle.tolist(), weight.tolist(), strict=True):
                bins.setdefault((r, (d + half) % ANGLE_BINS), []).append(w)
        best: dict[int, tuple[int, float, int]] = {}
        for (r, b), ws in sorted(bins.items()):
            total = 0.0
            for w in ws:
                total += w
            got = (len(ws), total, -b)
            if r not in best or got[:2] > best[r][:2]:
                best[r] = got
        out += [(int(refs[r]), s, v) for r, (v, s, _) in best.items()
                if v >= min_votes and refs[r] != -1]
    out.sort(key=lambda x: (-x[1], x[0]))
    return out[:keep]


@pytest.mark.parametrize("dense", [True, False])
def test_word_scores_pick_each_registrations_best_bin_as_the_reference_does(
        dense: bool) -> None:
    """Votes with many ties (weights from a few values, counts equal across bins), into
    small parts or large ones (the kernel's scratch sized to the largest)."""
    rng = np.random.default_rng(8)
    parts = []
    # 40 registrations of each part get the votes; the parts hold 68, or 70,000 of them
    # (2**20 keys: too many to count every one).
    for size in ((40, 3, 25) if dense else (40_000, 3, 30_000)):
        n = 400
        refs = np.arange(size, dtype=np.int64) + 100_000 * len(parts)
        refs[::7] = -1  # discarded tail rows
        voters = rng.choice(size, min(size, 40), replace=False)
        parts.append((refs, rng.choice(voters, n).astype(np.int64),
                      rng.integers(0, ANGLE_BINS, n).astype(np.int64),
                      rng.choice([0.5, 1.25, 2.0], n)))
    for min_votes, keep in ((2, 10), (3, 100), (30, 100)):
        got = [(g.ref, g.score, g.votes) for g in WordIndex._score(parts, min_votes, keep)]
        assert got == _score_reference(parts, min_votes, keep)
    assert len(WordIndex._score(parts, 2, 100)) > 30


def test_hamming_tail_counts_distances_exactly_at_the_radius_and_at_256() -> None:
    """The brute-force tail sums a row's four popcounts mod 256: the complement (distance 256)
    must not come back as distance 0; codes at the radius and one past it, their differing
    bits spread or all in one half."""
    rng = np.random.default_rng(4)
    q = rng.integers(0, 256, 32, dtype=np.uint8)
    index = HammingIndex(max_radius=31, background=False)
    index.add(1, [(~q).tobytes()])
    index.add(2, [flip_bits(q.tobytes(), rng.choice(256, 31, replace=False).tolist())])
    index.add(3, [flip_bits(q.tobytes(), rng.choice(256, 32, replace=False).tolist())])
    index.add(4, [q.tobytes()])
    for ref, first_half in ((5, True), (6, False)):
        bits = rng.choice(128, 32, replace=False) + (0 if first_half else 128)
        index.add(ref, [flip_bits(q.tobytes(), bits[:31].tolist())])
        index.add(ref + 2, [flip_bits(q.tobytes(), bits.tolist())])
    got = index.search([q.tobytes()], 31)
    assert {ref: hit.distance for ref, hit in got.items()} == {2: 31, 4: 0, 5: 31, 6: 31}
