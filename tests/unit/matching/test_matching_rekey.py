"""A committed reservation re-keyed to its seq (`rekey`) answers exactly as the reservation
discarded and the seq added, which is what the registry did until it indexed each upload
once: the indexes (random codes and words, hypothesis, with rebuilds, freezes and merges
lowered so that a reservation may sit in the tail, in the tables or in a segment) and the
`Matcher` (real fingerprints, reservations committed, failed and interleaved with other
processes' rows), answers compared item for item, scores to the bit, in order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from shotstamp_service.matching import index as index_module
from shotstamp_service.matching.engine import Matcher, Stage1
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.matching.index import ANGLE_BINS, HammingIndex, WordIndex
from tests.kit.matching_helpers import fixture_image, flip_bits, jpeg, png

RESERVED = 1 << 62

# One operation: (kind, which). Kinds: reserve a new upload, commit the oldest reservation,
# fail it, add another process's registration, look up.
_OPS = st.lists(st.tuples(st.sampled_from(["reserve", "reserve", "commit", "fail", "foreign",
                                           "search"]),
                          st.integers(0, 1 << 16)), min_size=1, max_size=60)


def _play(ops: list[tuple[str, int]], add: Callable[[object, int, int], None],
          discard: Callable[[object, int], None], rekey: Callable[[object, int, int, int], bool],
          search: Callable[[object, int], object], a: object, b: object) -> int:
    """Run `ops` on `a` (committing with `rekey`, falling back to discard and add as
    `Matcher.rekey` does) and on `b` (discard and add); assert every search equal. Returns
    how many commits were re-keyed in place."""
    pending: list[tuple[int, int]] = []  # (reservation ref, item)
    seq, reservation, in_place = 0, RESERVED, 0
    for kind, which in ops:
        if kind == "reserve":
            reservation += 1
            pending.append((reservation, which))
            add(a, reservation, which)
            add(b, reservation, which)
        elif kind in ("commit", "fail") and pending:
            ref, item = pending.pop(0)
            discard(b, ref)
            if kind == "fail":
                discard(a, ref)
                continue
            seq += 1
            add(b, seq, item)
            if rekey(a, ref, seq, item):
                in_place += 1
            else:
                discard(a, ref)
                add(a, seq, item)
        elif kind == "foreign":
            seq += 1
            add(a, seq, which)
            add(b, seq, which)
        elif kind == "search":
            assert search(a, which) == search(b, which)
    for which in range(0, 1 << 16, 1 << 12):
        assert search(a, which) == search(b, which)
    return in_place


@settings(max_examples=60, deadline=None)
@given(ops=_OPS, tail_limit=st.sampled_from([3, 20, 1 << 16]), background=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_hamming_rekey_answers_as_discard_then_add(ops: list[tuple[str, int]], tail_limit: int,
                                                   background: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bases = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(3)]

    def codes(item: int) -> list[bytes]:  # near copies of a few bases: clustered, with ties
        r = np.random.default_rng(item)
        return [flip_bits(bases[int(r.integers(0, 3))],
                          r.choice(256, int(r.integers(0, 30)), replace=False).tolist())
                for _ in range(int(r.integers(1, 4)))]

    def search(index: object, which: int) -> object:
        assert isinstance(index, HammingIndex)
        query = codes(which)[:2]
        return sorted(index.search(query, 31).items()), sorted(index.search(query, 8).items())

    old_limit, old_inline = index_module.TAIL_LIMIT, index_module.INLINE_REBUILD
    index_module.TAIL_LIMIT, index_module.INLINE_REBUILD = tail_limit, 10
    try:
        a, b = HammingIndex(31, background=background), HammingIndex(31, background=background)
        _play(ops, lambda i, ref, item: i.add(ref, codes(item), list(range(len(codes(item))))),
              lambda i, ref: i.discard(ref), lambda i, old, new, item: i.rekey(old, new),
              search, a, b)
        a.wait()
        b.wait()
        assert len(a) == len(b)
    finally:
        index_module.TAIL_LIMIT, index_module.INLINE_REBUILD = old_limit, old_inline


@settings(max_examples=60, deadline=None)
@given(ops=_OPS, segment_postings=st.sampled_from([40, 300, 1 << 30]),
       seed=st.integers(0, 2**32 - 1))
def test_word_rekey_answers_as_discard_then_add(ops: list[tuple[str, int]],
                                                segment_postings: int, seed: int) -> None:
    """Scores to the bit, in order, whether the reservation is still in the tail (re-keyed)
    or was frozen into a segment or merged meanwhile (discarded and added again)."""
    vocabulary = int(np.random.default_rng(seed).choice([50, 400]))

    def entry(item: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = np.random.default_rng(item)
        k = int(r.integers(1, 30))
        return (np.minimum(r.zipf(1.4, k), vocabulary).astype(np.uint32),
                r.integers(0, ANGLE_BINS, k).astype(np.uint8),
                r.integers(0, 1 << 32, k, dtype=np.uint64).astype(np.uint32))

    def search(index: object, which: int) -> object:
        assert isinstance(index, WordIndex)
        words, angles, signatures = entry(which)
        return [(s.ref, s.score, s.votes)
                for kw in ({}, {"max_postings": 40}, {"probe": np.arange(min(3, len(words)))})
                for s in index.search(words, (angles + 3) % ANGLE_BINS, signatures ^ np.uint32(5),
                                      limit=6, min_votes=1, max_distance=10, sigma=6.0,
                                      **kw)]  # type: ignore[arg-type]

    a = WordIndex(background=False, segment_postings=segment_postings)
    b = WordIndex(background=False, segment_postings=segment_postings)
    _play(ops, lambda i, ref, item: i.add(ref, *entry(item)), lambda i, ref: i.discard(ref),
          lambda i, old, new, item: i.rekey(old, new), search, a, b)
    assert len(a) == len(b)
    assert len(a._segments) == len(b._segments)  # frozen after the same calls


def test_word_rekey_in_the_tail_moves_nothing() -> None:
    """In the tail the postings stay where they are: only the ref they name changes."""
    index = WordIndex(background=False)
    words = np.arange(10, dtype=np.uint32)
    index.add(RESERVED + 1, words, np.zeros(10, np.uint8), np.zeros(10, np.uint32))
    packed = index._tail.packed
    assert index.rekey(RESERVED + 1, 7)
    assert index._tail.packed is packed
    assert [s.ref for s in index.search(words, np.zeros(10, np.uint8), np.zeros(10, np.uint32),
                                        limit=3, min_votes=1)] == [7]
    assert not index.rekey(RESERVED + 1, 8)  # gone: nothing to re-key


@pytest.fixture(scope="module")
def photos() -> list[Fingerprint]:
    """Distinct generated photos and copies of some of them (re-encoded, resized, cropped)."""
    base = fixture_image((640, 480))
    others = [base.rotate(180), base.transpose(Image.Transpose.TRANSPOSE).resize((640, 480)),
              Image.fromarray(255 - np.asarray(base)), base.rotate(90, expand=True)]
    fps = [fingerprint(png(im)) for im in [base, *others]]
    fps.append(fingerprint(jpeg(base.resize((320, 240)), quality=60)))
    fps.append(fingerprint(jpeg(base.crop((40, 30, 600, 450)), quality=80)))
    fps.append(fingerprint(jpeg(others[2].resize((480, 360)), quality=70)))
    return fps


def _answer(stage1: Stage1) -> object:
    found = [(m.ref, sorted(m.distances.items()), m.verdict, m.clause, m.pdq_pair)
             for m in stage1.found]
    cands = None if stage1.candidates is None else [
        (c.ref, c.pdq, c.pdq_pair, c.gated, c.words, c.votes) for c in stage1.candidates]
    return stage1.generation, found, cands


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("segment_postings", [120, 1 << 16])
def test_matcher_rekey_answers_as_discard_then_add(photos: list[Fingerprint], seed: int,
                                                   segment_postings: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's flow with real fingerprints: reservations committed (re-keyed, or
    discarded and added), failed, and other processes' rows between them; every look,
    and every `look_again` from an earlier look, equal, generation included."""
    monkeypatch.setattr(index_module, "TAIL_LIMIT", 7)
    moved: list[bool] = []  # the word index's answers: re-keyed in place or not
    real = WordIndex.rekey

    def counting(self: WordIndex, old: int, new: int) -> bool:
        moved.append(real(self, old, new))
        return moved[-1]

    monkeypatch.setattr(WordIndex, "rekey", counting)
    rng = np.random.default_rng(seed)
    ops = [(str(rng.choice(["reserve", "reserve", "commit", "fail", "foreign", "search"])),
            int(rng.integers(0, len(photos)))) for _ in range(40)]
    earlier: dict[str, dict[int, Stage1]] = {"a": {}, "b": {}}
    a, b = Matcher(background=False), Matcher(background=False)
    for m in (a, b):
        m._words = WordIndex(background=False, segment_postings=segment_postings)

    def search(m: object, which: int) -> object:
        assert isinstance(m, Matcher)
        name = "a" if m is a else "b"
        fp = photos[which % len(photos)]
        m._near = None
        out = [_answer(m.look(fp, stop_at_copy=stop)) for stop in (True, False)]
        before = earlier[name].get(which % len(photos))
        if before is not None:
            out.append(_answer(m.look_again(before, stop_at_copy=False)))
            out.append(_answer(m.look_again(before, stop_at_copy=False, below=RESERVED)))
        earlier[name][which % len(photos)] = m.look(fp, stop_at_copy=False)
        return out

    def rekey(m: object, old: int, new: int, item: int) -> bool:
        assert isinstance(m, Matcher)
        m.rekey(old, new, photos[item % len(photos)])
        return True

    def add(m: object, ref: int, item: int) -> None:
        assert isinstance(m, Matcher)
        m.add(ref, photos[item % len(photos)])

    def discard(m: object, ref: int) -> None:
        assert isinstance(m, Matcher)
        m.discard(ref)

    _play(ops, add, discard, rekey, search, a, b)
    assert len(a) == len(b) and a.generation == b.generation
    assert list(a._journal) == list(b._journal)
    if segment_postings > 1 << 10:  # nothing frozen: every commit re-keyed in place
        assert moved and all(moved)
