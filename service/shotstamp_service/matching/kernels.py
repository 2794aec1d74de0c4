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
               vote_starts: np.ndarray, min_votes: int, state: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(local)
    out_part = np.empty(n, np.int64)
    out_local = np.empty(n, np.int64)
    out_score = np.empty(n, np.float64)
    out_votes = np.empty(n, np.int64)
    found = 0
    # per hopeful registration (a slot): its run of votes in `order`, in vote order
    order = np.empty(n, np.int64)
    start = np.empty(n + 1, np.int64)
    fill = np.empty(n, np.int64)
    reg = np.empty(n, np.int64)
    votes = np.zeros(ANGLE_BINS, np.int64)
    score = np.zeros(ANGLE_BINS, np.float64)
    for p in range(len(vote_starts) - 1):
        lo, hi = vote_starts[p], vote_starts[p + 1]
        # `state` of a registration: its raw vote count (fewer than `min_votes` in all bins
        # cannot reach it in one bin pair), then -(slot + 1) once given a slot
        for i in range(lo, hi):
            state[local[i]] += 1
        h = 0
        free = 0
        for i in range(lo, hi):
            r = local[i]
            st = state[r]
            if st < 0:
                s = -st - 1
                order[fill[s]] = i
                fill[s] += 1
            elif st >= min_votes:
                reg[h] = r
                start[h] = free
                order[free] = i
                fill[h] = free + 1
                free += st
                state[r] = -(h + 1)
                h += 1
        start[h] = free
        for s in range(h):
            votes[:] = 0
            score[:] = 0.0
            # each vote in its bin, then in the next: per bin, the sum in the order
            # `np.bincount` adds the concatenated keys of the numpy scoring
            for j in range(start[s], start[s + 1]):
                b = dangle[order[j]]
                votes[b] += 1
                score[b] += weight[order[j]]
            for j in range(start[s], start[s + 1]):
                b = (dangle[order[j]] + 1) % ANGLE_BINS
                votes[b] += 1
                score[b] += weight[order[j]]
            # most votes, then the highest score, then the lowest bin
            best = 0
            for b in range(1, ANGLE_BINS):
                if votes[b] > votes[best] or (votes[b] == votes[best] and score[b] > score[best]):
                    best = b
            if votes[best] >= min_votes:
                out_part[found] = p
                out_local[found] = reg[s]
                out_score[found] = score[best]
                out_votes[found] = votes[best]
                found += 1
        for i in range(lo, hi):
            state[local[i]] = 0
    return out_part[:found], out_local[:found], out_score[:found], out_votes[:found]


class _Scratch(threading.local):
    """Per thread: the registrations' states (all zero between calls), as long as the largest
    part seen."""

    def __init__(self) -> None:
        self.state = np.zeros(0, np.int32)


_scratch = _Scratch()


def best_bins(local: np.ndarray, dangle: np.ndarray, weight: np.ndarray,
              vote_starts: np.ndarray, largest: int, min_votes: int,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per registration with at least `min_votes` votes in its best angle bin pair:
    (part, local index, score, votes) of that pair, parts in order, unordered within.

    Part p's votes are `[vote_starts[p], vote_starts[p + 1])` of `local` (int64 indexes
    below `largest`), `dangle` (int64 angle bins, 0 ≤ bin < ANGLE_BINS) and `weight`."""
    if len(_scratch.state) < largest:
        _scratch.state = np.zeros(largest, np.int32)
    found: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] = _best_bins(
        local, dangle, weight.astype(np.float64, copy=False), vote_starts, min_votes,
        _scratch.state)
    return found


def warm() -> None:
    """Compile, or load from numba's cache, the kernels: a service calls it before it says
    it is healthy, so no upload waits for the compiler."""
    one = np.zeros(1, np.int64)
    best_bins(one, one, np.ones(1), np.array([0, 1], np.int64), 1, 1)
