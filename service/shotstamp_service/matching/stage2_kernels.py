"""Compiled (numba) kernels of stage 2 in the fingerprint workers (docs/cpu-budget.md,
"Stage 2's consistency compiled").

`consistency_counts` is `ranking.consistency` after the stored keypoints' words are known:
the pairs (word runs within one bit, repeated words left out, descriptors within
DESCRIPTOR_DISTANCE), one-to-one closest first, the Hough vote into 16 neighbouring bins, each
image's fullest bin and the three least-squares refits, as loops over the pairs instead of
~60 numpy calls over arrays of a few hundred. It keeps the numpy code's pair order and every
floating-point operation in its order (`np.bincount` adds in array order: so do the loops; no
fast-math, so no reassociation or fused multiply-add), and takes the cosines, sines and scales
numpy computed (`ranking`'s tables), so its counts are bit-identical to the numpy it replaced
(`tests/unit/matching/ranking_4ef1ebf.py`, `test_matching_stage2_kernels.py`,
`bench/stage2.py --check`).

numba compiles on the first call and caches the machine code beside this file (as
`kernels.py`); `warm()` makes that first call where stage 2 runs: the fingerprint pool's
forkserver (`forkserver_init`), whose forks, the workers, inherit the compiled code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

__all__ = ["consistency_counts", "warm"]

log = logging.getLogger(__name__)

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


def _compiled(fn: Callable[..., Any]) -> Any:
    """`njit(cache=True)`, or without a cache where numba finds no writable directory (as
    `kernels._compiled`)."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        log.warning("%s: compiling at every start (set NUMBA_CACHE_DIR to a writable directory)",
                    exc)
        return njit(nogil=True)(fn)


def _inlined(fn: Callable[..., Any]) -> Any:
    """A small helper compiled into each caller."""
    return njit(inline="always", nogil=True)(fn)


@_inlined
def _bits_set(x: np.uint64) -> Any:
    # SWAR count of a uint64 (LLVM emits one popcnt for it, as in kernels._bits_set)
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return np.int64((x * _H01) >> np.uint64(56))


@_inlined
def _first_at_least(values: np.ndarray, key: int) -> Any:
    """`np.searchsorted(values, key, "left")` of a sorted array."""
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_compiled
def consistency_counts(count: int, ids: np.ndarray, owner: np.ndarray, s_desc: np.ndarray,
                       s_angle: np.ndarray, s_octave: np.ndarray, s_xy: np.ndarray,
                       table: np.ndarray, words: np.ndarray, order: np.ndarray,
                       q_desc: np.ndarray, q_angle: np.ndarray, q_octave: np.ndarray,
                       target_x: np.ndarray, target_y: np.ndarray, flips: np.ndarray,
                       cos_table: np.ndarray, sin_table: np.ndarray, scale_table: np.ndarray,
                       max_repeats: int, max_distance: int, angle_steps: int, level_step: int,
                       translation_step: float, fit_distance: float) -> np.ndarray:
    """Per stored image (`count`), its keypoints that agree with the fitted transform.

    Stored side, m keypoints: words `ids` (int64), `owner` (int64), descriptors (m, 4) uint64,
    angle and octave (int64), xy (m, 2) float32. Query side: `table` (uint8 flags, 1 = near,
    2 = exact), sorted `words` (int64) and their keypoints `order`, descriptors (n, 4) uint64,
    angle and octave (int64), the targets (its xy minus its centre, float64). `cos_table[t]`
    and `sin_table[t]` of a turn t in 0-255 and `scale_table[l + 255]` of a level difference l:
    the values numpy gives `ranking.consistency`'s expressions.
    """
    out = np.zeros(count, np.int64)
    m = len(ids)
    n = len(order)
    if m == 0 or n == 0:
        return out
    # (1) the stored keypoints whose word is the query's or one bit away
    hit = np.empty(m, np.int64)
    hits = 0
    for i in range(m):
        if table[ids[i]] != 0:
            hit[hits] = i
            hits += 1
    if hits == 0:
        return out
    # (2) words repeated more than max_repeats times in one image are left out
    image_word = np.empty(hits, np.int64)
    for h in range(hits):
        image_word[h] = (owner[hit[h]] << 32) + ids[hit[h]]
    ordered = np.sort(image_word)
    repeated = False
    for h in range(hits - max_repeats):
        if ordered[h + max_repeats] == ordered[h]:
            repeated = True
            break
    if repeated:
        kept = 0
        for h in range(hits):
            lo = _first_at_least(ordered, image_word[h])
            if lo + max_repeats >= hits or ordered[lo + max_repeats] != image_word[h]:
                hit[kept] = hit[h]
                kept += 1
        hits = kept
    # (3) the pairs, in the numpy code's order: by stored keypoint, flip, query keypoint;
    # a stored word whose runs hold more than max_repeats query keypoints pairs with none
    cap = 64
    pair_q = np.empty(cap, np.int64)
    pair_s = np.empty(cap, np.int64)
    pair_d = np.empty(cap, np.int64)
    pairs = 0
    starts = np.empty(len(flips), np.int64)
    runs = np.empty(len(flips), np.int64)
    for h in range(hits):
        si = hit[h]
        word = ids[si]
        found = 0
        for f in range(len(flips)):
            probe = word ^ flips[f]
            runs[f] = 0
            if table[probe] & 2:
                lo = _first_at_least(words, probe)
                hi = _first_at_least(words, probe + 1)
                starts[f] = lo
                runs[f] = hi - lo
                found += hi - lo
        if found > max_repeats:
            continue
        for f in range(len(flips)):
            for j in range(starts[f], starts[f] + runs[f]):
                qi = order[j]
                distance = (_bits_set(q_desc[qi, 0] ^ s_desc[si, 0])
                            + _bits_set(q_desc[qi, 1] ^ s_desc[si, 1])
                            + _bits_set(q_desc[qi, 2] ^ s_desc[si, 2])
                            + _bits_set(q_desc[qi, 3] ^ s_desc[si, 3]))
                if distance > max_distance:
                    continue
                if pairs == cap:
                    cap *= 2
                    pair_q = _grown(pair_q, cap)
                    pair_s = _grown(pair_s, cap)
                    pair_d = _grown(pair_d, cap)
                pair_q[pairs] = qi
                pair_s[pairs] = si
                pair_d[pairs] = distance
                pairs += 1
    if pairs == 0:
        return out
    # (4) one-to-one, closest first: the pairs sorted by (distance, query, stored keypoint),
    # each kept if it is the first of its (image, query keypoint) and of its stored keypoint
    q_bits = 0
    while (max(n, 1) >> q_bits) > 0:
        q_bits += 1
    s_bits = 0
    while (m >> s_bits) > 0:
        s_bits += 1
    packed = np.empty(pairs, np.int64)
    for p in range(pairs):
        packed[p] = (pair_d[p] << (q_bits + s_bits)) + (pair_q[p] << s_bits) + pair_s[p]
    packed = np.sort(packed)
    seen_q = np.zeros(count * n, np.bool_)
    seen_s = np.zeros(m, np.bool_)
    qi_of = np.empty(pairs, np.int64)
    si_of = np.empty(pairs, np.int64)
    kept = 0
    q_mask = (np.int64(1) << q_bits) - 1
    s_mask = (np.int64(1) << s_bits) - 1
    for p in range(pairs):
        si = packed[p] & s_mask
        qi = (packed[p] >> s_bits) & q_mask
        at = owner[si] * n + qi
        if not seen_q[at] and not seen_s[si]:
            qi_of[kept] = qi
            si_of[kept] = si
            kept += 1
        seen_q[at] = True
        seen_s[si] = True
    # (5) each pair's similarity transform, binned: 16 keys [image][angle 4][level 7][x 10]
    # [y 10], its bin and the next along every axis (the angle wraps, the rest is clipped)
    k = kept
    which = np.empty(k, np.int64)
    source_x = np.empty(k, np.float64)
    source_y = np.empty(k, np.float64)
    u = np.empty(k, np.float64)
    v = np.empty(k, np.float64)
    keys = np.empty(16 * k, np.int64)
    angle_width = 256 // angle_steps
    for p in range(k):
        qi, si = qi_of[p], si_of[p]
        turn = q_angle[qi] - s_angle[si]
        if turn < 0:
            turn += 256
        levels = q_octave[qi] - s_octave[si]
        scale = scale_table[levels + 255]
        cos = scale * cos_table[turn]
        sin = scale * sin_table[turn]
        x = np.float64(s_xy[si, 0])
        y = np.float64(s_xy[si, 1])
        moved_x = cos * x - sin * y
        moved_y = sin * x + cos * y
        tx = (target_x[qi] - moved_x) / translation_step
        ty = (target_y[qi] - moved_y) / translation_step
        ba = turn // angle_width
        bs = min(max(levels // level_step, -60), 60) + 64
        bx = min(max(int(np.floor(tx)), -500), 500) + 512
        by = min(max(int(np.floor(ty)), -500), 500) + 512
        which[p] = owner[si]
        source_x[p], source_y[p] = x, y
        u[p], v[p] = target_x[qi], target_y[qi]
        rest = (owner[si] << 31) + (bs << 20) + (bx << 10) + by
        for a in range(2):
            base = rest + (((ba + a) % angle_steps) << 27)
            for b in range(8):
                keys[16 * p + 8 * a + b] = base + (((b >> 2) & 1) << 20 | ((b >> 1) & 1) << 10
                                                   | (b & 1))
    # (6) each image's fullest bin, the lowest key on a tie
    ranked = np.sort(keys)
    best = np.full(count, -1, np.int64)
    best_votes = np.zeros(count, np.int64)
    start = 0
    for i in range(1, len(ranked) + 1):
        if i == len(ranked) or ranked[i] != ranked[start]:
            image = ranked[start] >> 31
            if i - start > best_votes[image]:
                best_votes[image] = i - start
                best[image] = ranked[start]
            start = i
    inside = np.zeros(k, np.bool_)
    for p in range(k):
        target = best[which[p]]
        for j in range(16 * p, 16 * p + 16):
            if keys[j] == target:
                inside[p] = True
                break
    # (7) three refits of each image's similarity to its pairs inside (Umeyama in 2-D),
    # every sum in pair order as np.bincount adds them
    n_in = np.zeros(count, np.float64)
    mx = np.zeros(count, np.float64)
    my = np.zeros(count, np.float64)
    mu = np.zeros(count, np.float64)
    mv = np.zeros(count, np.float64)
    norm = np.zeros(count, np.float64)
    fa = np.zeros(count, np.float64)
    fb = np.zeros(count, np.float64)
    for limit in (4 * fit_distance, 2 * fit_distance, fit_distance):
        n_in[:] = 0.0
        mx[:] = 0.0
        my[:] = 0.0
        mu[:] = 0.0
        mv[:] = 0.0
        norm[:] = 0.0
        fa[:] = 0.0
        fb[:] = 0.0
        for p in range(k):
            if inside[p]:
                w = which[p]
                n_in[w] += 1.0
                mx[w] += source_x[p]
                my[w] += source_y[p]
                mu[w] += u[p]
                mv[w] += v[p]
        for w in range(count):
            c = max(n_in[w], 1e-9)
            mx[w] /= c
            my[w] /= c
            mu[w] /= c
            mv[w] /= c
        for p in range(k):
            if inside[p]:
                w = which[p]
                x = source_x[p] - mx[w]
                y = source_y[p] - my[w]
                du = u[p] - mu[w]
                dv = v[p] - mv[w]
                norm[w] += x * x + y * y  # numpy's x ** 2 is its square, x * x
                fa[w] += x * du + y * dv
                fb[w] += x * dv - y * du
        for w in range(count):
            scale = max(norm[w], 1e-9)
            fa[w] /= scale
            fb[w] /= scale
            # the offsets, kept in mu and mv
            mu[w] = mu[w] - (fa[w] * mx[w] - fb[w] * my[w])
            mv[w] = mv[w] - (fb[w] * mx[w] + fa[w] * my[w])
        bound = limit * limit
        for p in range(k):
            w = which[p]
            dx = fa[w] * source_x[p] - fb[w] * source_y[p] + mu[w] - u[p]
            dy = fb[w] * source_x[p] + fa[w] * source_y[p] + mv[w] - v[p]
            inside[p] = dx * dx + dy * dy <= bound
    for p in range(k):
        if inside[p]:
            out[which[p]] += 1
    return out


@_inlined
def _grown(a: np.ndarray, cap: int) -> Any:
    out = np.empty(cap, a.dtype)
    out[: len(a)] = a
    return out


def warm() -> None:
    """Compile, or load from numba's cache, the kernel with the argument types
    `ranking.consistency` passes (C-contiguous, writable), before any upload needs it."""
    words = np.zeros(1, np.int64)
    desc = np.zeros((1, 4), np.uint64)
    xy = np.zeros((1, 2), np.float32)
    real = np.zeros(1, np.float64)
    flags = np.full(1, 3, np.uint8)
    consistency_counts(1, words, words, desc, words, words, xy, flags, words, words, desc,
                       words, words, real, real, words, np.ones(256), np.zeros(256),
                       np.ones(511), 4, 64, 16, 2, 32.0, 4.0)
