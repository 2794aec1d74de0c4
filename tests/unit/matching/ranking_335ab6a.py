"""`ranking.consistency` as it was at commit 335ab6a (per-candidate parsing and selection, dense
2**20 word tables, byte-table word ids), kept verbatim as the reference the vectorised
shortlist must reproduce exactly (test_matching_ranking.py). Not used by the service."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shotstamp_service.matching.engine import index_keypoints
from shotstamp_service.matching.features import ORB_SCALE, WORD_BITS, WORD_POSITIONS, LocalFeatures
from shotstamp_service.matching.ranking import (
    DESCRIPTOR_DISTANCE, ANGLE_STEPS, LEVEL_STEP, TRANSLATION_STEP, FIT_DISTANCE, MAX_REPEATS,
)

def _word_tables() -> tuple[np.ndarray, np.ndarray]:
    """(descriptor bytes the word reads, per byte a 256-entry table of its word bits): the
    word as `features.words` samples it, by one table look-up per byte instead of per bit."""
    used = sorted({p // 8 for p in WORD_POSITIONS})
    values = np.arange(256)
    tables = np.zeros((len(used), 256), np.uint32)
    for k, b in enumerate(used):
        for i, p in enumerate(WORD_POSITIONS):
            if p // 8 == b:
                bit = (values >> (7 - p % 8)) & 1  # numpy.unpackbits order, as features samples
                tables[k] |= (bit << (WORD_BITS - 1 - i)).astype(np.uint32)
    return np.array(used), tables


_WORD_BYTES, _WORD_TABLES = _word_tables()


def word_ids(descriptors: np.ndarray) -> np.ndarray:
    """`features.words(...).ids` of these (n, 32) descriptors."""
    out = np.zeros(len(descriptors), np.uint32)
    for k, b in enumerate(_WORD_BYTES.tolist()):
        out |= _WORD_TABLES[k][descriptors[:, b]]
    return out


_FLIPS = np.concatenate([[0], np.uint32(1) << np.arange(WORD_BITS, dtype=np.uint32)]
                        ).astype(np.uint32)


class QueryWords:
    """The upload's side, computed once per upload: every keypoint's words one bit away."""

    def __init__(self, query: LocalFeatures) -> None:
        self.features = query
        ids = word_ids(query.descriptors)
        self.descriptors = query.descriptors.view(np.uint64).reshape(-1, 4) if len(query) \
            else np.zeros((0, 4), np.uint64)
        probes = (ids[:, None] ^ _FLIPS[None, :]).ravel()
        order = np.argsort(probes, kind="stable")
        probes, owner = probes[order], order // len(_FLIPS)
        # A word many keypoints share (a repeated pattern: a chessboard's corners) pairs
        # everything with everything and says nothing about where: left out.
        _, inverse, counts = np.unique(probes, return_inverse=True, return_counts=True)
        common = counts[inverse] > MAX_REPEATS
        probes, self.owner = probes[~common], owner[~common].astype(np.int64)
        # Dense tables over all 2**WORD_BITS words (3 MB, built once per upload): a stored
        # word's run of probes is two look-ups, where a binary search missed the cache 14 times.
        values, first, runs = np.unique(probes, return_index=True, return_counts=True)
        # `start` is read only where `runs` is non-zero: left unset elsewhere (no 2 MB to clear)
        self.start = np.empty((1 << WORD_BITS) + 1, np.uint16)
        self.runs = np.zeros((1 << WORD_BITS) + 1, np.uint8)
        self.start[values] = first
        self.runs[values] = runs


def _pairs(query: QueryWords, stored_words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query keypoint, stored position) of every probe word equal to a stored word."""
    lo = query.start[stored_words].astype(np.int64)
    counts = query.runs[stored_words].astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    stored = np.repeat(np.arange(len(stored_words)), counts)
    at = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(total)
    return query.owner[at], stored


def consistency(query: LocalFeatures | QueryWords, stored: Sequence[LocalFeatures],
                keep: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """For each stored image, the most of the query's keypoints that agree on one similarity
    transform (see the module's docstring); int64, one per stored image. `keep`: per stored
    image, the indices of its keypoints to pair (all if None)."""
    q = query if isinstance(query, QueryWords) else QueryWords(query)
    out = np.zeros(len(stored), np.int64)
    picks = [np.arange(len(s)) for s in stored] if keep is None else list(keep)
    live = [(i, s, k) for i, (s, k) in enumerate(zip(stored, picks, strict=True)) if len(k)]
    if not live or not len(q.features):
        return out
    owner = np.repeat(np.array([i for i, _, _ in live]), [len(k) for _, _, k in live])
    descriptors = np.concatenate([s.descriptors[k] for _, s, k in live])
    ids = word_ids(descriptors)
    # Repeated words within one stored image are left out as on the query's side.
    _, inverse, counts = np.unique((owner.astype(np.int64) << 32) + ids, return_inverse=True,
                                   return_counts=True)
    ids[counts[inverse] > MAX_REPEATS] = np.uint32(1 << WORD_BITS)  # matches no probe
    qi, si = _pairs(q, ids)
    if not len(qi):
        return out
    xor = q.descriptors[qi] ^ descriptors.view(np.uint64).reshape(-1, 4)[si]
    bits = np.bitwise_count(xor)
    distance = bits[:, 0].astype(np.int64) + bits[:, 1] + bits[:, 2] + bits[:, 3]
    close = distance <= DESCRIPTOR_DISTANCE
    qi, si, distance = qi[close], si[close], distance[close]
    # One-to-one, closest first: each keypoint of either side in at most one pair.
    order = np.lexsort((si, qi, distance))
    qi, si = qi[order], si[order]
    pair_owner = owner[si]
    _, first_q = np.unique((pair_owner.astype(np.int64) << 16) + qi, return_index=True)
    single_q = np.zeros(len(qi), bool)
    single_q[first_q] = True
    _, first_s = np.unique(si, return_index=True)
    single_s = np.zeros(len(qi), bool)
    single_s[first_s] = True
    qi, si = qi[single_q & single_s], si[single_q & single_s]
    if not len(qi):
        return out
    xy = np.concatenate([s.xy[k] - np.array(s.shape[::-1], np.float32) / 2
                         for _, s, k in live])[si]
    angle_s = np.concatenate([s.angle[k] for _, s, k in live]).astype(np.int64)[si]
    level_s = np.concatenate([s.octave[k] for _, s, k in live]).astype(np.int64)[si]
    qf = q.features
    turn = (qf.angle.astype(np.int64)[qi] - angle_s) % 256
    levels = qf.octave.astype(np.int64)[qi] - level_s
    theta = turn * (2 * np.pi / 256)
    scale = ORB_SCALE ** levels.astype(np.float64)
    cos, sin = scale * np.cos(theta), scale * np.sin(theta)
    # ORB's angle is clockwise in image coordinates (y down): the same rotation matrix form.
    moved_x = cos * xy[:, 0] - sin * xy[:, 1]
    moved_y = sin * xy[:, 0] + cos * xy[:, 1]
    centre = np.array(qf.shape[::-1], np.float64) / 2
    tx = (qf.xy[qi, 0] - centre[0] - moved_x) / TRANSLATION_STEP
    ty = (qf.xy[qi, 1] - centre[1] - moved_y) / TRANSLATION_STEP
    a = turn / (256 / ANGLE_STEPS)
    s = levels / LEVEL_STEP
    # Each vote in its bin and the next along every axis (the next by rounding): 16 bins.
    ba, bs, bx, by = (np.floor(v).astype(np.int64) for v in (a, s, tx, ty))
    bs = np.clip(bs, -60, 60) + 64
    bx, by = np.clip(bx, -500, 500) + 512, np.clip(by, -500, 500) + 512
    which = owner[si]
    keys = np.stack([(which << 31) + ((((ba + (bits & 1)) % ANGLE_STEPS * 128 + bs
                                        + (bits >> 1 & 1)) * 1024 + bx + (bits >> 2 & 1))
                                      * 1024 + by + (bits >> 3 & 1))  # 31 bits a bin
                     for bits in range(16)])
    bins, votes = np.unique(keys, return_counts=True)
    # Each image's fullest bin (pairs are one-to-one, so a bin's count is of distinct pairs)
    order = np.lexsort((-votes, bins >> 31))
    bins, votes = bins[order], votes[order]
    first = np.flatnonzero(np.r_[True, (bins[1:] >> 31) != (bins[:-1] >> 31)])
    best = np.full(len(stored), -1, np.int64)
    best[bins[first] >> 31] = bins[first]
    inside = (keys == best[which]).any(axis=0)
    # Refine: the similarity transform that fits the fullest bin's pairs best (least squares),
    # then the pairs it puts within FIT_DISTANCE of their partners, twice. Coarse bins let a
    # look-alike's near misses in; the fitted transform does not.
    target = np.stack([qf.xy[qi, 0] - centre[0], qf.xy[qi, 1] - centre[1]], axis=1)
    source = xy.astype(np.float64)
    for distance in (4 * FIT_DISTANCE, 2 * FIT_DISTANCE, FIT_DISTANCE):
        fitted = _fit(which, source, target, inside, len(stored))
        moved = _apply(fitted[which], source)
        inside = ((moved - target) ** 2).sum(axis=1) <= distance ** 2
    return np.bincount(which[inside], minlength=len(stored)).astype(np.int64)




def consistent_keypoints(query, stored):
    """engine.consistent_keypoints at 335ab6a."""
    return consistency(query, stored, [index_keypoints(features) for features in stored])


def _fit(which: np.ndarray, source: np.ndarray, target: np.ndarray, use: np.ndarray,
         n: int) -> np.ndarray:
    """Per image, (a, b, tx, ty) of the similarity x' = [[a, -b], [b, a]] x + t that fits the
    pairs `use` selects in the least-squares sense (Umeyama's closed form in 2-D)."""
    w = use.astype(np.float64)
    count = np.maximum(np.bincount(which, w, n), 1e-9)
    ms = np.stack([np.bincount(which, w * source[:, i], n) for i in (0, 1)], 1) / count[:, None]
    mt = np.stack([np.bincount(which, w * target[:, i], n) for i in (0, 1)], 1) / count[:, None]
    s = source - ms[which]
    t = target - mt[which]
    norm = np.maximum(np.bincount(which, w * (s ** 2).sum(axis=1), n), 1e-9)
    a = np.bincount(which, w * (s[:, 0] * t[:, 0] + s[:, 1] * t[:, 1]), n) / norm
    b = np.bincount(which, w * (s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]), n) / norm
    tx = mt[:, 0] - (a * ms[:, 0] - b * ms[:, 1])
    ty = mt[:, 1] - (b * ms[:, 0] + a * ms[:, 1])
    return np.stack([a, b, tx, ty], axis=1)


def _apply(fitted: np.ndarray, points: np.ndarray) -> np.ndarray:
    a, b, tx, ty = fitted.T
    return np.stack([a * points[:, 0] - b * points[:, 1] + tx,
                     b * points[:, 0] + a * points[:, 1] + ty], axis=1)
