"""Compiled (numba) kernels of the word vote (docs/index.md, "The vote's compiled kernel").

`best_bins` is `WordIndex._score`'s counting: one pass over the votes with scratch arrays
sized to a part's registrations and reset only where touched, instead of sorting twice
the votes' keys and counting into arrays the size of the index. Its sums add the weights
in the order `np.bincount` adds them, so its answers are bit-identical to the numpy
reference (`tests/unit/matching/test_matching_kernels.py`).

numba compiles on the first call (seconds) and caches the machine code beside this file
(`__pycache__`) or, where that is read-only, under `NUMBA_CACHE_DIR`; `warm()` makes that
first call at service start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

__all__ = ["best_bins", "warm"]

log = logging.getLogger(__name__)

ANGLE_BINS = 16  # as index.ANGLE_BINS (a test checks they agree)


def _compiled(fn: Callable[..., Any]) -> Any:
    """`njit(cache=True)`; where numba finds no writable cache directory (a read-only install,
    no writable home, no NUMBA_CACHE_DIR) it compiles at each start instead of failing."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        log.warning("%s: compiling at every start (set NUMBA_CACHE_DIR to a writable directory)",
                    exc)
        return njit(nogil=True)(fn)


@_compiled
def _best_bins(local: np.ndarray, dangle: np.ndarray, weight: np.ndarray,
               vote_starts: np.ndarray, min_votes: int, count: np.ndarray,
               slot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_parts = len(vote_starts) - 1
    n = len(local)
    out_part = np.empty(n, np.int64)
    out_local = np.empty(n, np.int64)
    out_score = np.empty(n, np.float64)
    out_votes = np.empty(n, np.int64)
    found = 0
    hopeful = np.empty(n, np.int64)
    for p in range(n_parts):
        lo, hi = vote_starts[p], vote_starts[p + 1]
        # raw votes per registration: fewer than `min_votes` in all bins cannot reach it
        for i in range(lo, hi):
            count[local[i]] += 1
        h = 0
        for i in range(lo, hi):
            r = local[i]
            if count[r] >= min_votes and slot[r] < 0:
                slot[r] = h
                hopeful[h] = r
                h += 1
        votes = np.zeros(h * ANGLE_BINS, np.int64)
        score = np.zeros(h * ANGLE_BINS, np.float64)
        # each vote in its bin, then (a second pass: `np.bincount`'s order of addition over
        # the concatenated keys) in the next bin
        for i in range(lo, hi):
            s = slot[local[i]]
            if s >= 0:
                k = s * ANGLE_BINS + dangle[i]
                votes[k] += 1
                score[k] += weight[i]
        for i in range(lo, hi):
            s = slot[local[i]]
            if s >= 0:
                k = s * ANGLE_BINS + (dangle[i] + 1) % ANGLE_BINS
                votes[k] += 1
                score[k] += weight[i]
        for s in range(h):
            # most votes, then the highest score, then the lowest bin
            best = s * ANGLE_BINS
            for k in range(s * ANGLE_BINS + 1, (s + 1) * ANGLE_BINS):
                if votes[k] > votes[best] or (votes[k] == votes[best] and score[k] > score[best]):
                    best = k
            if votes[best] >= min_votes:
                out_part[found] = p
                out_local[found] = hopeful[s]
                out_score[found] = score[best]
                out_votes[found] = votes[best]
                found += 1
        for i in range(lo, hi):
            count[local[i]] = 0
            slot[local[i]] = -1
    return out_part[:found], out_local[:found], out_score[:found], out_votes[:found]


class _Scratch(threading.local):
    """Per thread: the counts (zero) and slots (-1) between calls, grown to the largest part."""

    def __init__(self) -> None:
        self.count = np.zeros(0, np.int32)
        self.slot = np.full(0, -1, np.int32)


_scratch = _Scratch()


def best_bins(local: np.ndarray, dangle: np.ndarray, weight: np.ndarray,
              vote_starts: np.ndarray, largest: int, min_votes: int,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per registration with at least `min_votes` votes in its best angle bin pair:
    (part, local index, score, votes) of that pair, parts in order, unordered within.

    Part p's votes are `[vote_starts[p], vote_starts[p + 1])` of `local` (int64 indexes
    below `largest`), `dangle` (int64 angle bins, 0 ≤ bin < ANGLE_BINS) and `weight`."""
    if len(_scratch.count) < largest:
        _scratch.count = np.zeros(largest, np.int32)
        _scratch.slot = np.full(largest, -1, np.int32)
    found: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] = _best_bins(
        local, dangle, weight.astype(np.float64, copy=False), vote_starts, min_votes,
        _scratch.count, _scratch.slot)
    return found


def warm() -> None:
    """Compile, or load from numba's cache, the kernels: a service calls it before it says
    it is healthy, so no upload waits for the compiler."""
    one = np.zeros(1, np.int64)
    best_bins(one, one, np.ones(1), np.array([0, 1], np.int64), 1, 1)
