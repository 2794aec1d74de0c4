"""Compiled (numba) kernels of the word vote and of the PDQ probe (docs/index.md, "The word
vote's compiled kernel", "The PDQ probe's compiled kernel").

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

`pdq_hits` is `HammingIndex.search`'s probe of one part's multi-index tables (and its tail's
brute force), `best_per_ref` its fold into each ref's closest pair: the same dict of ref → Hit
as the numpy search they replaced, in the same order
(`tests/unit/matching/test_matching_pdq_kernel.py`).

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

__all__ = ["EMPTY_TABLE", "NearPart", "ProbeTable", "best_bins", "best_per_ref", "near_votes",
           "pdq_hits", "read_only", "warm"]

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
               vote_starts: np.ndarray, min_votes: int, state: np.ndarray, seen: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(local)
    kept = np.empty(n, np.int64)  # a part's votes whose registration may reach `min_votes`
    out_part = np.empty(n, np.int64)
    out_local = np.empty(n, np.int64)
    out_score = np.empty(n, np.float64)
    out_votes = np.empty(n, np.int64)
    found = 0
    # per hopeful registration (a slot): its run of votes' bins and weights, in vote order,
    # copied there as the votes are read in order (then each slot reads its run in order,
    # not its votes scattered over the part: at 1 M ≈ 6,000 slots, a cache miss a read)
    run_bin = np.empty(n, np.int64)
    run_weight = np.empty(n, np.float64)
    start = np.empty(n + 1, np.int64)
    fill = np.empty(n, np.int64)
    reg = np.empty(n, np.int64)
    votes = np.zeros(ANGLE_BINS, np.int64)
    score = np.zeros(ANGLE_BINS, np.float64)
    for p in range(len(vote_starts) - 1):
        lo, hi = vote_starts[p], vote_starts[p + 1]
        m = 0
        if min_votes >= 2:
            # At 1 M most registrations voted for get one vote (≈ 94 %): two bitsets (seen
            # once, seen twice; one cache line holds both words) small enough for L2 find the
            # others, so that `state`, 4 bytes a registration, is touched only for them.
            for i in range(lo, hi):
                r = local[i]
                w = 2 * (r >> 6)
                bit = np.int64(1) << (r & 63)
                seen[w + 1] |= seen[w] & bit
                seen[w] |= bit
            for i in range(lo, hi):
                r = local[i]
                kept[m] = i
                m += (seen[2 * (r >> 6) + 1] >> (r & 63)) & 1
            if 4 * (hi - lo) > len(seen):
                seen[:] = 0  # a large part's votes touch most cache lines: clear them all
            else:
                for i in range(lo, hi):
                    w = 2 * (local[i] >> 6)
                    seen[w] = 0
                    seen[w + 1] = 0
        else:
            for i in range(lo, hi):
                kept[m] = i
                m += 1
        # `state` of a registration: its raw vote count (fewer than `min_votes` in all bins
        # cannot reach it in one bin pair), then -(slot + 1) once given a slot
        for k in range(m):
            state[local[kept[k]]] += 1
        h = 0
        free = 0
        for k in range(m):
            i = kept[k]
            r = local[i]
            st = state[r]
            if st < 0:
                s = -st - 1
                run_bin[fill[s]] = dangle[i]
                run_weight[fill[s]] = weight[i]
                fill[s] += 1
            elif st >= min_votes:
                reg[h] = r
                start[h] = free
                run_bin[free] = dangle[i]
                run_weight[free] = weight[i]
                fill[h] = free + 1
                free += st
                state[r] = -(h + 1)
                h += 1
        start[h] = free
        for s in range(h):
            a, z = start[s], start[s + 1]
            # each vote in its bin, then in the next: per bin, the sum in the order
            # `np.bincount` adds the concatenated keys of the numpy scoring
            for j in range(a, z):
                b = run_bin[j]
                votes[b] += 1
                score[b] += run_weight[j]
            for j in range(a, z):
                b = (run_bin[j] + 1) % ANGLE_BINS
                votes[b] += 1
                score[b] += run_weight[j]
            # most votes, then the highest score, then the lowest bin: among the bins the
            # votes touched (an untouched one, no votes, never wins), which are then reset
            best = run_bin[a]
            for j in range(a, z):
                for b in (run_bin[j], (run_bin[j] + 1) % ANGLE_BINS):
                    if votes[b] > votes[best] or (votes[b] == votes[best] and (
                            score[b] > score[best] or (score[b] == score[best] and b < best))):
                        best = b
            if votes[best] >= min_votes:
                out_part[found] = p
                out_local[found] = reg[s]
                out_score[found] = score[best]
                out_votes[found] = votes[best]
                found += 1
            for j in range(a, z):
                b = run_bin[j]
                votes[b] = 0
                score[b] = 0.0
                b = (b + 1) % ANGLE_BINS
                votes[b] = 0
                score[b] = 0.0
        for k in range(m):
            state[local[kept[k]]] = 0
    return out_part[:found], out_local[:found], out_score[:found], out_votes[:found]


class _Scratch(threading.local):
    """Per thread: the registrations' states and their seen-once and seen-twice bits (all zero
    between calls), as long as the largest part seen."""

    def __init__(self) -> None:
        self.state = np.zeros(0, np.int32)
        self.seen = np.zeros(0, np.int64)  # two bits a registration, pairs of words


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
        _scratch.seen = np.zeros(2 * ((largest + 63) >> 6), np.int64)
    found: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] = _best_bins(
        local, dangle, weight.astype(np.float64, copy=False), vote_starts, min_votes,
        _scratch.state, _scratch.seen)
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
    from shotstamp_service.matching.index import build_frozen

    code = np.zeros((2, 32), np.uint8)
    part = build_frozen(code, np.arange(2), np.zeros(2, np.uint8), 31, 16)
    pdq_hits(part.tables.kernel_view, code, 0, code.view(np.uint64).reshape(-1, 4),
             np.ones(2, bool), (0, 2))
    best_per_ref(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(2, np.int64),
                 np.zeros(2, np.uint8))


# -- the PDQ probe (docs/index.md, "The PDQ probe's compiled kernel") ---------------------------

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


def _inlined(fn: Callable[..., Any]) -> Any:
    """A small helper of the kernels, compiled into each caller (numba IR inlining)."""
    return njit(inline="always", nogil=True)(fn)


@_inlined
def _bits_set(x: np.uint64) -> Any:
    # the classic SWAR count of a uint64: LLVM emits one popcnt for it here (checked in the
    # asm); `_popcount` through int64 measured no faster on this probe (2026-12-07 merge)
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return np.int64((x * _H01) >> np.uint64(56))


@_inlined
def _distance(a: np.ndarray, i: int, b: np.ndarray, j: int) -> Any:
    return (_bits_set(a[i, 0] ^ b[j, 0]) + _bits_set(a[i, 1] ^ b[j, 1])
            + _bits_set(a[i, 2] ^ b[j, 2]) + _bits_set(a[i, 3] ^ b[j, 3]))


@_compiled
def _run_start(e: int, base: np.ndarray, step: np.ndarray, wide_bits: np.ndarray,
               wide_blocks: np.ndarray, wide: np.ndarray) -> Any:
    """`PackedOffsets.flat` of one entry: a block's base plus the entry's uint8 step, or its
    int32 step in `wide` for a wide block (`wide_bits` marks them)."""
    b = e >> 6  # OFFSET_BLOCK_BITS (a test checks they agree)
    if (wide_bits[b >> 3] >> (b & 7)) & 1:
        return base[b] + wide[np.searchsorted(wide_blocks, b), e & 63]
    return base[b] + step[e]


@_compiled
def _pdq_hits(query: np.ndarray, qwords: np.ndarray, radius: int, chunk_bit: np.ndarray,
              chunk_width: np.ndarray, masks: np.ndarray, mask_starts: np.ndarray,
              entry_starts: np.ndarray, size: int, packed_offsets: bool, base: np.ndarray,
              step: np.ndarray, wide_bits: np.ndarray, wide_blocks: np.ndarray, wide: np.ndarray,
              plain: np.ndarray, packed_order: bool, order3: np.ndarray, order4: np.ndarray,
              codes: np.ndarray, live: np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cap = 64
    pos_out = np.empty(cap, np.int64)
    q_out = np.empty(cap, np.int64)
    d_out = np.empty(cap, np.int64)
    found = 0
    check_live = len(live) > 0
    most = 1
    for c in range(len(chunk_width)):
        most = max(most, mask_starts[c + 1] - mask_starts[c])
    lo = np.empty(most, np.int64)
    hi = np.empty(most, np.int64)
    candidates = np.empty(256, np.int64)
    # The walk's order is the numpy probe's: chunk, query code, probe mask, run position. Each
    # (chunk, query code) in three passes, every load of a pass independent of the others, so
    # that their cache misses overlap (a single pass waits for each run's bounds in turn, and
    # was slower than numpy's gathers at 1 M): the runs' bounds, the candidates' positions,
    # their distances.
    for c in range(len(chunk_width)):
        shift = 0 if packed_offsets else c * size  # packed run starts include c * size
        first, nm = mask_starts[c], mask_starts[c + 1] - mask_starts[c]
        for qi in range(query.shape[0]):
            v = np.int64(0)  # the chunk's value: bits [chunk_bit, + width) of the code, MSB first
            for b in range(chunk_bit[c], chunk_bit[c] + chunk_width[c]):
                v = (v << 1) | ((np.int64(query[qi, b >> 3]) >> (7 - (b & 7))) & 1)
            total = 0
            for j in range(nm):
                e = entry_starts[c] + (v ^ np.int64(masks[first + j]))
                if packed_offsets:
                    # `PackedOffsets.flat` spelled out: through a helper, 5 times slower
                    # (docs/index.md); the rare wide blocks fixed after
                    b0, b1 = e >> 6, (e + 1) >> 6  # OFFSET_BLOCK_BITS (a test checks it)
                    lo[j] = base[b0] + step[e]
                    hi[j] = base[b1] + step[e + 1]
                    if len(wide_blocks) and ((wide_bits[b0 >> 3] >> (b0 & 7)) & 1
                                             or (wide_bits[b1 >> 3] >> (b1 & 7)) & 1):
                        lo[j] = _run_start(e, base, step, wide_bits, wide_blocks, wide)
                        hi[j] = _run_start(e + 1, base, step, wide_bits, wide_blocks, wide)
                else:
                    lo[j] = np.int64(plain[e]) + shift
                    hi[j] = np.int64(plain[e + 1]) + shift
                total += hi[j] - lo[j]
            if total > len(candidates):
                candidates = np.empty(2 * total, np.int64)
            n = 0
            for j in range(nm):
                for i in range(lo[j], hi[j]):
                    if packed_order:
                        candidates[n] = (np.int64(order3[3 * i])
                                         | (np.int64(order3[3 * i + 1]) << 8)
                                         | (np.int64(order3[3 * i + 2]) << 16))
                    else:
                        candidates[n] = order4[i]
                    n += 1
            for k in range(n):
                p = candidates[k]
                d = _distance(codes, p, qwords, qi)
                if d <= radius and (not check_live or live[p]):
                    if found == cap:
                        cap *= 2
                        pos_out, q_out, d_out = _grown(pos_out, q_out, d_out, cap)
                    pos_out[found] = p
                    q_out[found] = qi
                    d_out[found] = d
                    found += 1
    return pos_out[:found], q_out[:found], d_out[:found]


@_compiled
def _tail_hits(qwords: np.ndarray, radius: int, codes: np.ndarray, live: np.ndarray,
               tail_from: int, tail_to: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows [tail_from, tail_to) of `codes` by brute force, a query code at a time (the
    numpy search's order). A kernel of its own: inside `_pdq_hits` the same loop ran 13
    times slower (3 codes × 65,535 rows: 2.9 ms, here 0.25)."""
    check_live = len(live) > 0
    count = 0
    for qi in range(qwords.shape[0]):
        for r in range(tail_from, tail_to):
            count += _distance(codes, r, qwords, qi) <= radius
    pos_out = np.empty(count, np.int64)
    q_out = np.empty(count, np.int64)
    d_out = np.empty(count, np.int64)
    found = 0
    if count:
        for qi in range(qwords.shape[0]):
            for r in range(tail_from, tail_to):
                d = _distance(codes, r, qwords, qi)
                if d <= radius and (not check_live or live[r]):
                    pos_out[found] = r
                    q_out[found] = qi
                    d_out[found] = d
                    found += 1
    return pos_out[:found], q_out[:found], d_out[:found]


@_compiled
def _grown(a: np.ndarray, b: np.ndarray, c: np.ndarray, cap: int,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = (np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64))
    out[0][: len(a)] = a
    out[1][: len(b)] = b
    out[2][: len(c)] = c
    return out


@_compiled
def _best_per_ref(refs: np.ndarray, distance: np.ndarray, query: np.ndarray,
                  tags: np.ndarray) -> np.ndarray:
    """Indexes of each ref's best hit (distance, then query code, then tag), ordered by the
    ref's first hit."""
    by_ref = np.argsort(refs, kind="mergesort")  # stable: a ref's first hit leads its group
    best = np.empty(len(refs), np.int64)
    first = np.empty(len(refs), np.int64)
    groups = 0
    g = 0
    while g < len(by_ref):
        top = by_ref[g]
        k = g + 1
        while k < len(by_ref) and refs[by_ref[k]] == refs[top]:
            i = by_ref[k]
            if (distance[i], query[i], tags[i]) < (distance[top], query[top], tags[top]):
                top = i
            k += 1
        best[groups] = top
        first[groups] = by_ref[g]
        groups += 1
        g = k
    return best[:groups][np.argsort(first[:groups])]


class ProbeTable(NamedTuple):
    """A multi-index table as `pdq_hits` reads it (`index._Tables.kernel_view` makes it): per
    chunk its first bit, width, probe masks and first run-start entry; the run starts packed
    (`base`, `step`, `wide_blocks`, `wide`) or plain int32 (`plain`: every chunk's, back to
    back, without the c * size the packed form includes); the order in 3 bytes (`order3`) or
    int32 (`order4`), flat. Arrays of the form not used are empty."""

    chunk_bit: np.ndarray  # (m,) int64
    chunk_width: np.ndarray  # (m,) int64
    masks: np.ndarray  # uint32, every chunk's masks back to back
    mask_starts: np.ndarray  # (m + 1,) int64
    entry_starts: np.ndarray  # (m,) int64
    size: int
    packed_offsets: bool
    base: np.ndarray  # int64
    step: np.ndarray  # uint8
    wide_bits: np.ndarray  # uint8, one bit a block: set for the wide ones
    wide_blocks: np.ndarray  # int64
    wide: np.ndarray  # (w, 64) int32
    plain: np.ndarray  # int32
    packed_order: bool
    order3: np.ndarray  # uint8
    order4: np.ndarray  # int32


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of `a`: numba compiles one specialization a combination of argument
    types, read-only included, and mapped segments are read-only, so every argument is."""
    if not a.flags.writeable:
        return a
    view = a.view()
    view.flags.writeable = False
    return view


_EMPTY = {t: read_only(np.zeros(0, t)) for t in (np.int64, np.int32, np.uint8, np.uint32)}
_NO_WIDE = read_only(np.zeros((0, 64), np.int32))
_NO_LIVE = read_only(np.zeros(0, np.bool_))
_NO_HITS = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
EMPTY_TABLE = ProbeTable(_EMPTY[np.int64], _EMPTY[np.int64], _EMPTY[np.uint32],
                         read_only(np.zeros(1, np.int64)), _EMPTY[np.int64], 0, False,
                         _EMPTY[np.int64], _EMPTY[np.uint8], _EMPTY[np.uint8], _EMPTY[np.int64],
                         _NO_WIDE,
                         _EMPTY[np.int32], False, _EMPTY[np.uint8], _EMPTY[np.int32])


def pdq_hits(table: ProbeTable, query: np.ndarray, radius: int, codes: np.ndarray,
             live: np.ndarray | None = None, tail: tuple[int, int] = (0, 0),
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, query index, distance) of the stored `codes` ((n, 4) uint64) within
    `radius` of the `query` codes ((k, 32) uint8): `table`'s candidates (every position in the
    runs of every chunk's value within its flips of the query's), then the rows `tail` =
    [from, to) by brute force, where `live` (if given) is set. In the order the numpy search
    met them (chunk, query code, probe mask, run position; then the tail, a query code at a
    time), duplicates (a code found by several chunks) included."""
    query = read_only(np.ascontiguousarray(query, np.uint8))
    qwords = query.view(np.uint64).reshape(-1, 4)
    codes, live = read_only(codes), _NO_LIVE if live is None else read_only(live)
    found: tuple[np.ndarray, np.ndarray, np.ndarray] = (
        _pdq_hits(query, qwords, radius, *table, codes, live) if table.size else _NO_HITS)
    if tail[1] > tail[0]:
        more = _tail_hits(qwords, radius, codes, live, tail[0], tail[1])
        if len(more[0]):
            found = (np.concatenate([found[0], more[0]]), np.concatenate([found[1], more[1]]),
                     np.concatenate([found[2], more[2]]))
    return found


def best_per_ref(refs: np.ndarray, distance: np.ndarray, query: np.ndarray, tags: np.ndarray,
                 ) -> np.ndarray:
    """Indexes into the hits of each ref's closest (ties: lowest query index, then lowest
    tag), ordered by where the ref was first hit."""
    if len(refs) <= 1:
        return np.arange(len(refs), dtype=np.int64)
    chosen: np.ndarray = _best_per_ref(refs.astype(np.int64, copy=False), distance, query,
                                       tags.astype(np.int64, copy=False))
    return chosen
