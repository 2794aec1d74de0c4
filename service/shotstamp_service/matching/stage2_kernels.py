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
forkserver (`forkserver_init`), whose forks, the workers, inherit the compiled code (a first
start compiles them in a throwaway child of the forkserver, which then loads them from the cache).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .kernels import _compiled, _inlined

__all__ = ["cacheable", "consistency_counts", "stored_keypoints", "warm"]

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing's multiplier, 2**64 / golden ratio


@_inlined
def _bits_set(x: np.uint64) -> Any:
    # SWAR count of a uint64 (LLVM emits one popcnt for it), a copy of kernels._bits_set:
    # numba's cache does not notice a change to a function of another file it compiled in
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return np.int64((x * _H01) >> np.uint64(56))


@_inlined
def _counted(keys: np.ndarray) -> Any:
    """The distinct values of `keys` (non-negative) and how often each occurs, in an
    open-addressing table of twice their number or more: (slots, -1 where empty; counts)."""
    size = 2
    while size < 2 * len(keys):
        size *= 2
    slots = np.full(size, -1, np.int64)
    counts = np.zeros(size, np.int64)
    for key in keys:
        slot = _slot(slots, key)
        slots[slot] = key
        counts[slot] += 1
    return slots, counts


@_inlined
def _slot(slots: np.ndarray, key: int) -> Any:
    """Where `key` is in `slots` (`_counted`'s), or the empty slot where it would go."""
    mask = len(slots) - 1
    slot = np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(32)) & mask
    while slots[slot] != key and slots[slot] != -1:
        slot = (slot + 1) & mask
    return slot


@_compiled
def consistency_counts(count: int, word_byte: np.ndarray, word_shift: np.ndarray,
                       owner: np.ndarray, s_bytes: np.ndarray, s_desc: np.ndarray,
                       s_angle: np.ndarray, s_octave: np.ndarray, s_xy: np.ndarray,
                       words: np.ndarray, order: np.ndarray,
                       q_desc: np.ndarray, q_angle: np.ndarray, q_octave: np.ndarray,
                       target_x: np.ndarray, target_y: np.ndarray, flips: np.ndarray,
                       cos_table: np.ndarray, sin_table: np.ndarray, scale_table: np.ndarray,
                       max_repeats: int, max_distance: int, angle_steps: int, level_step: int,
                       translation_step: float, fit_distance: float) -> np.ndarray:
    """Per stored image (`count`), its keypoints that agree with the fitted transform.

    Stored side, m keypoints: `owner` (int64), descriptors as (m, 32) uint8 and the same as
    (m, 4) uint64, angle and octave (uint8), xy (m, 2) float32; their words are the bits
    `word_shift` of bytes `word_byte` (`features._WORD`'s, the first the top bit). Query
    side, n keypoints: sorted `words` (int64) and their keypoints `order`, descriptors
    (n, 4) uint64, angle and octave (int64), the targets (its xy less its centre, float64).
    `cos_table[t]` and `sin_table[t]` of a turn t in 0-255 and `scale_table[l + 255]` of a
    level difference l: the values numpy gives `ranking.consistency`'s expressions.
    """
    out = np.zeros(count, np.int64)
    m = len(owner)
    n = len(order)
    if m == 0 or n == 0:
        return out
    # (0) the stored keypoints' words (`features.word_ids`: integer, so any order of the bits)
    ids = np.empty(m, np.int64)
    for i in range(m):
        word = 0
        for b in range(len(word_byte)):
            word = (word << 1) | ((s_bytes[i, word_byte[b]] >> word_shift[b]) & 1)
        ids[i] = word
    # (1) the stored keypoints whose word is the query's or one bit away (a hash set of
    # those ~2,000 words instead of a 1 MB table of all words: no table to clear per task)
    hit = np.empty(m, np.int64)
    hits = 0
    near = np.empty(n * len(flips), np.int64)
    for j in range(n):
        for f in range(len(flips)):
            near[j * len(flips) + f] = words[j] ^ flips[f]
    near_slots, _ = _counted(near)
    for i in range(m):
        if near_slots[_slot(near_slots, ids[i])] == ids[i]:
            hit[hits] = i
            hits += 1
    if hits == 0:
        return out
    # (2) words repeated more than max_repeats times in one image are left out
    image_word = np.empty(hits, np.int64)
    for h in range(hits):
        image_word[h] = (owner[hit[h]] << 32) + ids[hit[h]]
    slots, repeats = _counted(image_word)
    if repeats.max() > max_repeats:
        kept = 0
        for h in range(hits):
            if repeats[_slot(slots, image_word[h])] <= max_repeats:
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
    starts = np.zeros(len(flips), np.int64)
    runs = np.zeros(len(flips), np.int64)
    # each query word's run in `words` (sorted)
    q_slots, q_runs = _counted(words)
    q_starts = np.zeros(len(q_slots), np.int64)
    for j in range(n - 1, -1, -1):
        q_starts[_slot(q_slots, words[j])] = j
    for h in range(hits):
        si = hit[h]
        word = ids[si]
        found = 0
        for f in range(len(flips)):
            slot = _slot(q_slots, word ^ flips[f])
            starts[f] = q_starts[slot]
            runs[f] = q_runs[slot]  # 0 for an empty slot: not a query word
            found += runs[f]
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
        turn = q_angle[qi] - np.int64(s_angle[si])
        if turn < 0:
            turn += 256
        levels = q_octave[qi] - np.int64(s_octave[si])
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
    # (6) each image's fullest bin, the lowest key on a tie: the keys counted in a hash
    # table (a sort of all 16 keys a pair cost twice as much), then every bin in it visited
    slots, votes = _counted(keys)
    best = np.full(count, -1, np.int64)
    best_votes = np.zeros(count, np.int64)
    for slot in range(len(slots)):
        key = slots[slot]
        if key == -1:
            continue
        image = key >> 31
        if votes[slot] > best_votes[image] or (votes[slot] == best_votes[image]
                                               and key < best[image]):
            best_votes[image] = votes[slot]
            best[image] = key
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
def _take(buf: np.ndarray, start: int, count: int, i: int, x: Any, y: Any, w: Any, h: Any,
          b: int, at: int, owner: np.ndarray, xy: np.ndarray, angle: np.ndarray,
          octave: np.ndarray, descriptors: np.ndarray) -> None:
    """Keypoint `i` of image `b` (its section at `buf[start]`, `count` keypoints) as row
    `at` of the outputs."""
    owner[at] = b
    xy[at, 0] = x - w / np.float32(2)
    xy[at, 1] = y - h / np.float32(2)
    angle[at] = buf[start + 4 * count + i]
    octave[at] = buf[start + 5 * count + i]
    row = start + 6 * count + 32 * i
    descriptors[at, :] = buf[row:row + 32]


@_compiled
def stored_keypoints(buf: np.ndarray, base: np.ndarray, n: np.ndarray, height: np.ndarray,
                     width: np.ndarray, limit: int, centre: float,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`ranking.StoredKeypoints.from_blobs`' reading: of each image (its keypoint section
    from `buf[base[b]]`: [xy: 4n][angle: n][octave: n][descriptors: 32n]), its first `limit`
    keypoints, central ones first (within `centre` of the side from the middle), each group
    in stored order: (owner, xy from the centre, angle, octave, descriptors). Positions in
    float32 as numpy computes them there (1/8 px, the centre test in float32)."""
    images = len(base)
    kept = 0
    for b in range(images):
        kept += min(n[b], limit)
    owner = np.empty(kept, np.int64)
    xy = np.empty((kept, 2), np.float32)
    angle = np.empty(kept, np.uint8)
    octave = np.empty(kept, np.uint8)
    descriptors = np.empty((kept, 32), np.uint8)
    bound = np.float32(centre)
    half = np.float32(0.5)
    eighth = np.float32(8)
    later = np.empty(max(limit, 0), np.int64)  # an image's outer keypoints, while they fit
    at = 0
    for b in range(images):
        start, count = base[b], n[b]
        w, h = np.float32(width[b]), np.float32(height[b])
        taken = 0
        outer = 0
        # the central keypoints in stored order, then (the `later` ones) the others
        for i in range(count):
            if taken == limit:
                break
            # 1/8 px in little-endian uint16s, as `LocalFeatures.from_bytes` reads them
            x = np.float32(np.int64(buf[start + 4 * i])
                           | np.int64(buf[start + 4 * i + 1]) << 8) / eighth
            y = np.float32(np.int64(buf[start + 4 * i + 2])
                           | np.int64(buf[start + 4 * i + 3]) << 8) / eighth
            if max(abs((x + half) / w - half), abs((y + half) / h - half)) > bound:
                if outer < limit:
                    later[outer] = i
                    outer += 1
                continue
            _take(buf, start, count, i, x, y, w, h, b, at, owner, xy, angle, octave, descriptors)
            at += 1
            taken += 1
        for j in range(min(outer, limit - taken)):
            i = later[j]
            x = np.float32(np.int64(buf[start + 4 * i])
                           | np.int64(buf[start + 4 * i + 1]) << 8) / eighth
            y = np.float32(np.int64(buf[start + 4 * i + 2])
                           | np.int64(buf[start + 4 * i + 3]) << 8) / eighth
            _take(buf, start, count, i, x, y, w, h, b, at, owner, xy, angle, octave, descriptors)
            at += 1
    return owner, xy, angle, octave, descriptors


@_inlined
def _grown(a: np.ndarray, cap: int) -> Any:
    out = np.empty(cap, a.dtype)
    out[: len(a)] = a
    return out


def cacheable() -> bool:
    """Whether numba caches these kernels (it found a writable cache directory): a compile in
    one process then serves another (`forkserver_init` compiles them in a throwaway child)."""
    return all(kernel.stats.cache_path is not None
               for kernel in (consistency_counts, stored_keypoints))


def warm() -> None:
    """Compile, or load from numba's cache, the kernels with the argument types `ranking`
    passes (C-contiguous, writable), before any upload needs them."""
    one = np.ones(1, np.int64)
    blob = np.zeros(38, np.uint8)
    owner, xy, angle, octave, descriptors = stored_keypoints(blob, one * 0, one, one * 8,
                                                             one * 8, 128, 0.35)
    words = np.zeros(1, np.int64)
    real = np.zeros(1, np.float64)
    packed = descriptors.view(np.uint64).reshape(-1, 4)
    consistency_counts(1, np.zeros(20, np.int64), np.zeros(20, np.int64), owner, descriptors,
                       packed, angle, octave, xy, words, words, packed, words, words, real,
                       real, words, np.ones(256), np.zeros(256), np.ones(511), 4, 64, 16, 2,
                       32.0, 4.0)
