"""The compiled consistency (`stage2_kernels.consistency_counts` behind `ranking.consistency`)
against the numpy `consistency` it replaced (ranking_4ef1ebf.py, verbatim): the same count for
every stored image, over random shortlists (hypothesis) whose keypoints share words exactly,
one bit away or not at all, repeat words within an image or on the query's side, lie near or
far in descriptor bits, and sit where a turned, scaled and shifted copy of the query's would
(so that the Hough bins and the three refits decide) or anywhere."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shotstamp_service.matching import ranking
from shotstamp_service.matching.features import WORD_POSITIONS, LocalFeatures
from tests.unit.matching import ranking_4ef1ebf as before


def _features(rng: np.random.Generator, shape: tuple[int, int], xy: np.ndarray,
              angle: np.ndarray, octave: np.ndarray, descriptors: np.ndarray) -> LocalFeatures:
    return LocalFeatures(shape, xy.astype(np.float32), angle.astype(np.uint8),
                         octave.astype(np.uint8), descriptors, b"", (0, 0))


def _noisy(rng: np.random.Generator, prototypes: np.ndarray, pick: np.ndarray, rate: float,
           word_flips: float) -> np.ndarray:
    """Descriptors of the chosen prototypes with bits flipped at `rate`, and one word bit
    flipped in a share `word_flips` of them (a neighbouring word)."""
    bits = np.unpackbits(prototypes[pick], axis=1)
    bits ^= (rng.random(bits.shape) < rate).astype(np.uint8)
    flip = rng.random(len(pick)) < word_flips
    position = rng.choice(np.array(WORD_POSITIONS), len(pick))
    bits[np.flatnonzero(flip), position[flip]] ^= 1
    return np.packbits(bits, axis=1)


@st.composite
def shortlists(draw: st.DrawFn) -> tuple[LocalFeatures, list[LocalFeatures]]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    prototypes = rng.integers(0, 256, (draw(st.sampled_from([1, 3, 12, 60, 200])), 32), np.uint8)
    rate = draw(st.sampled_from([0.0, 0.03, 0.12, 0.3]))
    word_flips = draw(st.sampled_from([0.0, 0.2]))
    n = draw(st.integers(0, 80))
    shape = (int(rng.integers(64, 400)), int(rng.integers(64, 400)))
    q_xy = rng.random((n, 2)) * np.array(shape[::-1])
    # each prototype 1-6 times on the query's side: words of runs up to and past MAX_REPEATS
    runs = np.repeat(np.arange(len(prototypes)), rng.integers(1, 7, len(prototypes)))
    q_pick = rng.permutation(np.resize(runs, n)) if n else np.zeros(0, np.int64)
    query = _features(rng, shape, q_xy, rng.integers(0, 256, n), rng.integers(0, 8, n),
                      _noisy(rng, prototypes, q_pick, rate, word_flips))
    stored = []
    for _ in range(draw(st.integers(1, 8))):
        m = int(rng.integers(0, 70))
        s_shape = (int(rng.integers(64, 400)), int(rng.integers(64, 400)))
        share = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
        copied = rng.random(m) < share if n else np.zeros(m, bool)
        source = rng.integers(0, max(n, 1), m)
        # a copy's keypoints: the query's turned by `turn`, scaled and shifted, with noise
        turn = int(rng.integers(0, 256))
        levels = int(rng.integers(-2, 3))
        theta = turn * 2 * np.pi / 256
        scale = 1.12 ** -levels
        rotation = scale * np.array([[np.cos(theta), np.sin(theta)],
                                     [-np.sin(theta), np.cos(theta)]])
        centred = (q_xy[source] - np.array(shape[::-1]) / 2) if n else np.zeros((m, 2))
        moved = centred @ rotation.T + rng.normal(0, draw(st.sampled_from([0.3, 3.0, 40.0])),
                                                  (m, 2))
        xy = np.where(copied[:, None], moved + np.array(s_shape[::-1]) / 2 + rng.normal(0, 20),
                      rng.random((m, 2)) * np.array(s_shape[::-1]))
        angle = np.where(copied, (query.angle[source].astype(np.int64) if n else 0) - turn
                         + rng.integers(-6, 7, m), rng.integers(0, 256, m)) % 256
        q_octave = query.octave[source].astype(np.int64) if n else 0
        octave = np.where(copied, np.clip(q_octave - levels, 0, 7), rng.integers(0, 8, m))
        pick = np.where(copied, q_pick[source] if n else 0, rng.permutation(np.resize(runs, m)))
        stored.append(_features(rng, s_shape, xy, angle, octave,
                                _noisy(rng, prototypes, pick, rate, word_flips)))
    return query, stored


@settings(max_examples=300, deadline=None)
@given(shortlists(), st.booleans())
def test_the_compiled_consistency_counts_as_the_numpy_one(
        case: tuple[LocalFeatures, list[LocalFeatures]], subset: bool) -> None:
    query, stored = case
    keep = [np.arange(len(s))[::2] for s in stored] if subset else None
    want = before.consistency(before.QueryWords(query), before.StoredKeypoints.of(stored, keep))
    got = ranking.consistency(ranking.QueryWords(query), ranking.StoredKeypoints.of(stored, keep))
    assert got.dtype == want.dtype == np.int64
    assert got.tolist() == want.tolist()
    assert ranking.consistency(query, stored, keep).tolist() == want.tolist()


def test_the_random_shortlists_reach_every_step() -> None:
    """The cases above are not all empty: some pairs survive the refits."""
    rng = np.random.default_rng(7)
    prototypes = rng.integers(0, 256, (40, 32), np.uint8)
    q_xy = rng.random((60, 2)) * 200
    pick = rng.integers(0, 40, 60)
    query = _features(rng, (200, 200), q_xy, rng.integers(0, 256, 60), rng.integers(0, 8, 60),
                      prototypes[pick])
    copy = _features(rng, (200, 200), q_xy, query.angle, query.octave, prototypes[pick])
    other = _features(rng, (200, 200), rng.random((60, 2)) * 200, rng.integers(0, 256, 60),
                      rng.integers(0, 8, 60), prototypes[rng.integers(0, 40, 60)])
    got = ranking.consistency(query, [copy, other])
    assert got.tolist() == before.consistency(query, [copy, other]).tolist()
    assert got[0] > 20 and got[1] < got[0]


def test_the_tables_are_numpys_own_values() -> None:
    """The cosines, sines and scales the kernel reads are those numpy gives the numpy code's
    expressions over arrays of any length (its SIMD loops' tails included)."""
    for length in (1, 3, 7, 8, 9, 17, 255, 1000):
        turn = np.random.default_rng(length).integers(0, 256, length).astype(np.int64)
        theta = turn * (2 * np.pi / 256)
        assert np.array_equal(np.cos(theta), ranking._COS[turn])
        assert np.array_equal(np.sin(theta), ranking._SIN[turn])
        levels = np.random.default_rng(length).integers(-255, 256, length).astype(np.int64)
        assert np.array_equal(ranking.ORB_SCALE ** levels.astype(np.float64),
                              ranking._SCALE[levels + 255])


def _copy_with_repeats(stored_repeats: int, query_repeats: int) -> tuple[LocalFeatures,
                                                                           LocalFeatures]:
    """A query of 30 distinct words and its exact copy, the first word `query_repeats` times
    in the query and `stored_repeats` times in the copy (the extra ones where the first is)."""
    rng = np.random.default_rng(11)
    prototypes = rng.integers(0, 256, (30, 32), np.uint8)
    xy = rng.random((30, 2)) * 200
    angle, octave = rng.integers(0, 256, 30), rng.integers(0, 8, 30)

    def side(repeats: int) -> LocalFeatures:
        pick = np.r_[np.arange(30), np.zeros(repeats - 1, np.int64)]
        return _features(rng, (200, 200), xy[pick], angle[pick], octave[pick], prototypes[pick])

    return side(query_repeats), side(stored_repeats)


def test_a_word_repeated_past_max_repeats_pairs_with_nothing() -> None:
    for stored_repeats, query_repeats, want in ((4, 1, 30), (5, 1, 29), (1, 4, 30), (1, 5, 29)):
        query, copy = _copy_with_repeats(stored_repeats, query_repeats)
        got = ranking.consistency(query, [copy]).tolist()
        assert got == before.consistency(query, [copy]).tolist() == [want], (
            stored_repeats, query_repeats)


@st.composite
def blob_sets(draw: st.DrawFn) -> tuple[list[bytes], int, float]:
    """Stored blobs of 0-300 keypoints, positions anywhere on small and large canonical
    images, many of them on the 1/8 px grid points nearest the centre test's bound."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    centre = draw(st.sampled_from([0.35, 0.25, 0.5, 0.0]))
    blobs = []
    for _ in range(draw(st.integers(0, 6))):
        n = int(rng.choice([0, 1, 5, 60, 130, 300]))
        shape = (int(rng.integers(1, 600)), int(rng.integers(1, 600)))
        xy = rng.random((n, 2)) * np.array(shape[::-1])
        edge = rng.random(n) < 0.3  # at the bound: (x + 0.5) / width - 0.5 = ±centre
        sign = rng.choice([-1, 1], n)
        for axis, side in ((0, shape[1]), (1, shape[0])):
            at = ((0.5 + sign * centre) * side - 0.5)[edge]
            xy[edge, axis] = np.clip(np.round(at * 8) / 8 + rng.integers(-1, 2, edge.sum()) / 8,
                                     0, None)
        features = _features(rng, shape, xy, rng.integers(0, 256, n), rng.integers(0, 8, n),
                             rng.integers(0, 256, (n, 32), np.uint8))
        blobs.append(features.to_bytes())
    return blobs, draw(st.sampled_from([0, 1, 64, 128, 10_000])), centre


@settings(max_examples=200, deadline=None)
@given(blob_sets())
def test_the_compiled_blob_reader_reads_as_the_numpy_one(case: tuple[list[bytes], int, float],
                                                         ) -> None:
    blobs, limit, centre = case
    want = before.StoredKeypoints.from_blobs(blobs, limit, centre)
    got = ranking.StoredKeypoints.from_blobs(blobs, limit, centre)
    assert got.count == want.count
    for field in ("owner", "xy", "angle", "octave", "descriptors"):
        a, b = getattr(got, field), getattr(want, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        assert a.tobytes() == b.tobytes(), field
