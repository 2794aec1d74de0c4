"""Compiled (numba) kernels of the word vote (docs/index.md, "The vote's compiled kernel").

`best_bins` is `WordIndex._best`'s counting: one pass over the votes with scratch arrays
sized to a part's registrations and reset only where touched, instead of sorting twice
the votes' keys and counting into arrays the size of the index. Its sums add the weights
in the order `np.bincount` adds them, so its answers are bit-identical to the numpy
reference (`tests/unit/matching/test_matching_kernels.py`).

`near_votes` is `WordIndex._votes`' reading: per part, it walks the query words' postings
ranges, keeps the postings whose stored signature is near the query word's and writes their
votes (local index, angle difference, weight) into one set of arrays for `best_bins`, instead
of numpy gathering every posting index, signature and repeated query signature first. It
keeps the order and the float multiply of the numpy code it replaced, so its votes are
bit-identical (`tests/unit/matching/near_2bd7b28.py`, `test_matching_near.py`).

numba compiles on the first call (seconds) and caches the machine code beside this file
(`__pycache__`) or, where that is read-only, under `NUMBA_CACHE_DIR`; `warm()` makes that
first call at service start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["NearPart", "best_bins", "near_votes", "warm"]

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


def _ctpop(typingctx: Any, x: Any) -> Any:
    """Bits set in an int64: LLVM's ctpop, one popcnt instruction (numba has no popcount of
    its own, and LLVM did not recognise the bit-twiddling one)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return types.int64(types.int64), codegen


_popcount: Any = intrinsic(_ctpop)


@_compiled
def _near_votes(postings: np.ndarray, stored: np.ndarray, starts: np.ndarray,
                ends: np.ndarray, local_shift: int, local_mask: int, angle_shift: int,
                angles: np.ndarray, signatures: np.ndarray, idf: np.ndarray,
                by_distance: np.ndarray, max_bits: int, scale: int,
                out_local: np.ndarray, out_dangle: np.ndarray, out_weight: np.ndarray,
                at: int) -> int:
    for j in range(len(starts)):
        query = np.int64(signatures[j])
        angle = angles[j]
        w = idf[j]
        # first the near postings' positions and distances, written in place of their votes
        # and kept by moving on (no branch to mispredict: about half the postings of real,
        # biased descriptor bits pass), then their votes: only the near postings are read
        # (a tenth of them at 10 M synthetic, whose pages may not be in memory)
        first = at
        for i in range(starts[j], ends[j]):
            # the low 16 bits (uint32 signatures of older files, the tail's uint64 postings)
            bits = _popcount((np.int64(stored[i]) ^ query) & 0xFFFF)
            out_local[at] = i
            out_dangle[at] = bits
            at += bits <= max_bits
        for k in range(first, at):
            p = np.int64(postings[out_local[k]])  # a tail posting ≥ 2**63 wraps; fields stay
            out_weight[k] = w * by_distance[scale * out_dangle[k]]
            out_local[k] = (p >> local_shift) & local_mask
            out_dangle[k] = (angle - ((p >> angle_shift) & (ANGLE_BINS - 1))) % ANGLE_BINS
    return at


class NearPart(NamedTuple):
    """One part's postings for `near_votes`: posting i of the query word j is in
    `[starts[j], ends[j])`; its local index is `(posting >> local_shift) & local_mask`, its
    angle bin `(posting >> angle_shift) & (ANGLE_BINS - 1)`."""

    refs: np.ndarray  # local index → ref
    postings: np.ndarray  # uint32 (plain or a 3-byte-stride view) or uint64 (the tail)
    stored: np.ndarray  # the postings' signatures in their low 16 bits: uint16, uint32, uint64
    starts: np.ndarray
    ends: np.ndarray
    local_shift: int
    local_mask: int
    angle_shift: int


def near_votes(parts: list[NearPart], angles: np.ndarray, signatures: np.ndarray,
               idf: np.ndarray, by_distance: np.ndarray, max_bits: int, scale: int,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The votes of every part's postings whose stored signature differs from query word j's
    (`signatures[j]`, uint16) in at most `max_bits` bits: (local index, angle difference
    `(angles[j] - angle) % ANGLE_BINS`, weight `idf[j] * by_distance[scale * bits]`) as int64,
    int64 and float64 arrays, part after part, each part's words in order and each word's
    postings in order; and `vote_starts` (part p's votes are `[vote_starts[p],
    vote_starts[p + 1])`), as `best_bins` takes them."""
    starts = [np.asarray(p.starts, np.int64) for p in parts]
    ends = [np.asarray(p.ends, np.int64) for p in parts]
    total = sum(int((e - s).sum()) for s, e in zip(starts, ends, strict=True))
    local = np.empty(total, np.int64)
    dangle = np.empty(total, np.int64)
    weight = np.empty(total, np.float64)
    vote_starts = np.zeros(len(parts) + 1, np.int64)
    angles = np.asarray(angles, np.int64)
    signatures = np.asarray(signatures, np.uint16)
    idf = np.asarray(idf, np.float64)
    by_distance = _readonly(np.asarray(by_distance, np.float64))
    at = 0
    for k, part in enumerate(parts):
        if len(starts[k]):
            at = _near_votes(_readonly(part.postings), _readonly(part.stored), starts[k],
                             ends[k], part.local_shift, part.local_mask, part.angle_shift,
                             angles, signatures, idf, by_distance, max_bits, scale,
                             local, dangle, weight, at)
        vote_starts[k + 1] = at
    return local[:at], dangle[:at], weight[:at], vote_starts


def _readonly(a: np.ndarray) -> np.ndarray:
    """`a` as a read-only view: in-memory parts then share the mapped parts' compiled code
    (numba compiles one version per array type, and read-only is part of the type)."""
    if not a.flags.writeable:
        return a
    v = a.view()
    v.flags.writeable = False
    return v


# The array types parts come in (postings, signatures): plain uint32 postings (in memory,
# format /1) or a 3-byte-stride view (formats /2 on), with uint16 signatures or the uint32 of
# formats /1-/2; the tail's uint64 postings, which hold their signatures too.
def _warm_parts() -> list[tuple[np.ndarray, np.ndarray]]:
    plain = np.zeros(2, np.uint32)
    packed = np.ndarray((2,), "<u4", buffer=np.zeros(7, np.uint8), strides=(3,))
    tail = np.zeros(2, "<u8")
    return [(plain, np.zeros(2, np.uint16)), (plain, np.zeros(2, np.uint32)),
            (packed, np.zeros(2, np.uint16)), (packed, np.zeros(2, np.uint32)), (tail, tail)]


def warm() -> None:
    """Compile, or load from numba's cache, the kernels: a service calls it before it says
    it is healthy, so no upload waits for the compiler."""
    one = np.zeros(1, np.int64)
    best_bins(one, one, np.ones(1), np.array([0, 1], np.int64), 1, 1)
    for postings, stored in _warm_parts():
        near_votes([NearPart(one, postings, stored, np.zeros(1, np.int64), np.ones(1, np.int64),
                             0, 1, 1)], one, np.zeros(1, np.uint16), np.ones(1), np.ones(33), 0, 2)
