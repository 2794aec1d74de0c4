"""The compiled word-vote scoring (`matching/kernels.py` behind `WordIndex._score`) against the
numpy scoring it replaced (score_0707bd2.py, verbatim): the same refs, float scores, vote
counts and order, bit for bit, over random parts (hypothesis) shaped like `_votes`' output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shotstamp_service.matching import kernels
from shotstamp_service.matching.index import ANGLE_BINS, WordIndex, WordScore
from tests.unit.matching import score_0707bd2 as before

Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@st.composite
def vote_parts(draw: st.DrawFn) -> list[Part]:
    """Parts as `_votes` yields them: refs (int64 or the narrowed int32, -1 for discarded),
    local indexes, angle differences, weights (products of a few idf and distance weights,
    so that bins tie on votes and on scores)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    parts: list[Part] = []
    next_ref = 0
    for _ in range(draw(st.integers(0, 5))):
        size = draw(st.integers(1, 300))
        refs = np.arange(next_ref, next_ref + size, dtype=draw(st.sampled_from([np.int64,
                                                                               np.int32])))
        next_ref += size + int(rng.integers(0, 5))
        refs[rng.random(size) < draw(st.sampled_from([0.0, 0.2]))] = -1
        n = draw(st.integers(0, 2000))
        # a few registrations get most votes, as a copy and its look-alikes do
        hot = rng.integers(0, size, max(1, size // 10))
        local = np.where(rng.random(n) < draw(st.floats(0, 1)), rng.choice(hot, n),
                         rng.integers(0, size, n)).astype(np.int64)
        narrow = draw(st.booleans())
        dangle = (rng.integers(0, 3, n) if narrow else rng.integers(0, ANGLE_BINS, n))
        idf = rng.choice(np.array([0.5, 1.0, 1.7, 2.3, 3.1]), n)
        by_distance = rng.choice(np.array([1.0, 0.9, 0.61, 0.25]), n)
        weight = idf * by_distance
        if draw(st.booleans()):
            weight = weight.astype(np.float32)
        parts.append((refs, local, dangle.astype(np.int64), weight))
    return parts


def _as_tuples(scores: list[WordScore]) -> list[tuple[int, float, int]]:
    return [(s.ref, s.score, s.votes) for s in scores]


@settings(max_examples=300, deadline=None)
@given(parts=vote_parts(), min_votes=st.integers(0, 12), keep=st.integers(1, 400))
def test_compiled_scoring_is_bit_identical_to_numpy(parts: list[Part], min_votes: int,
                                                    keep: int) -> None:
    got = _as_tuples(WordIndex._score(parts, min_votes, keep))
    want = _as_tuples(before.score(parts, min_votes, keep))
    assert got == want  # float == float: the same sums in the same order


def test_scores_of_a_copy_at_a_bin_boundary() -> None:
    """A copy turned onto a bin boundary keeps all its votes in one bin pair; the ties of
    a look-alike are broken by ref; discarded registrations (-1) are left out."""
    refs = np.array([10, 11, -1, 13], np.int64)
    local = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 3], np.int64)
    dangle = np.array([4, 5, 4, 5, 9, 9, 1, 1, 1, 9, 9], np.int64)
    weight = np.array([1.0, 1.0, 0.5, 2.0, 1.0, 1.0, 3.0, 3.0, 3.0, 1.0, 1.0])
    got = _as_tuples(WordIndex._score([(refs, local, dangle, weight)], 2, 10))
    # ref 10: bin 5 holds the bin-4 votes and its own (4 votes, 4.5); 11 and 13 tie on score
    assert got == [(10, 4.5, 4), (11, 2.0, 2), (13, 2.0, 2)]
    assert _as_tuples(WordIndex._score([(refs, local, dangle, weight)], 5, 10)) == []


def test_scratch_is_left_clean_between_calls() -> None:
    """The kernel resets only what it touched: a second, different call sees no trace of
    the first (the same answers as on fresh scratch)."""
    rng = np.random.default_rng(3)
    refs = np.arange(1000, dtype=np.int64)
    local = rng.integers(0, 50, 5000).astype(np.int64)
    first = (refs, local, rng.integers(0, ANGLE_BINS, 5000).astype(np.int64), rng.random(5000))
    second = (refs, local[::-1].copy(), rng.integers(0, ANGLE_BINS, 5000).astype(np.int64),
              rng.random(5000))
    WordIndex._score([first], 3, 100)
    assert not kernels._scratch.state.any()
    assert not kernels._scratch.seen.any()
    assert _as_tuples(WordIndex._score([second], 3, 100)) == _as_tuples(
        before.score([second], 3, 100))


def test_kernel_angle_bins_match_the_index() -> None:
    assert kernels.ANGLE_BINS == ANGLE_BINS


_WARM = ("from shotstamp_service.matching import kernels; kernels.warm(); "
         "s = kernels._best_bins.stats; print(sum(s.cache_hits.values()), s.cache_path)")


@pytest.mark.integration
def test_the_kernel_compiles_once_per_machine(tmp_path: Path) -> None:
    """The first start compiles and writes numba's cache (here NUMBA_CACHE_DIR, as a
    read-only install would need); the next start loads it instead of compiling."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", _WARM], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert runs[0][0] == "0" and runs[1][0] == "1"
    assert Path(runs[1][1]).is_relative_to(tmp_path) and list(tmp_path.rglob("*.nbi"))


@pytest.mark.parametrize("min_votes", [0, 1, 2, 3])
def test_sparse_votes_over_a_large_part(min_votes: int) -> None:
    """As at 1 M: most registrations voted for get one vote, a few get several, spread over a
    part far larger than the votes (the bitsets are cleared vote by vote, not whole); the
    kernel keeps exactly the registrations the reference keeps, and leaves no trace."""
    rng = np.random.default_rng(min_votes)
    size = 200_000
    refs = np.arange(size, dtype=np.int64)
    parts = []
    for n in (3_000, 40, 2):
        hot = rng.integers(0, size, 5)
        local = np.where(rng.random(n) < 0.1, rng.choice(hot, n), rng.integers(0, size, n))
        local[: min(n, 4)] = [63, 64, 127, 128][: min(n, 4)]  # either side of a word's edge
        local[-1] = local[0]
        parts.append((refs, local.astype(np.int64), rng.integers(0, ANGLE_BINS, n).astype(
            np.int64), rng.choice(np.array([0.5, 1.0, 2.5]), n)))
    for part in parts:
        got = _as_tuples(WordIndex._score([part], min_votes, 50))
        assert got == _as_tuples(before.score([part], min_votes, 50))
        assert got or len(part[1]) < 3_000, "the hot registrations reach min_votes"
        assert not kernels._scratch.state.any() and not kernels._scratch.seen.any()
