"""`ranking.py` as it was at main 4ef1ebf (`consistency` in ~60 numpy calls), kept verbatim
below this docstring as the reference the compiled `stage2_kernels.consistency_counts` must
reproduce bit for bit (test_matching_stage2_kernels.py). Not used by the service."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shotstamp_service.matching.features import (
    ORB_SCALE,
    WORD_BITS,
    LocalFeatures,
    keypoint_layout,
    word_ids,
)

__all__ = ["QueryWords", "StoredKeypoints", "consistency"]

# Hough bins: 16 turns of 22.5°, two pyramid levels (1.25× apart), and translations in steps of
# a quarter of the canonical side's 256 px (orientation noise of a few degrees moves a keypoint
# 128 px from the centre by ~10 px). Each vote also counts in the next bin along every axis.
# Keypoints of one image sharing a word beyond this many are left out of the pairs.
MAX_REPEATS = 4
# A pair's whole descriptors (256 bits) must be this close: word collisions of unrelated
# corners differ in ~100 bits, a copy's keypoints in well under 60.
DESCRIPTOR_DISTANCE = 64
ANGLE_STEPS = 16
LEVEL_STEP = 2
TRANSLATION_STEP = 32.0
# A pair agrees with the transform fitted to the fullest bin when it lands this close to its
# partner (canonical pixels; copies fit to ~0.8 px, verification.RANSAC_THRESHOLD is 3).
FIT_DISTANCE = 4.0

_FLIPS = np.concatenate([[0], np.uint32(1) << np.arange(WORD_BITS, dtype=np.uint32)]
                        ).astype(np.uint32)
_NEAR, _EXACT = 1, 2  # `QueryWords.table`'s flags
# The level, x and y steps of a Hough key's 8 neighbours along them (`consistency`)
_NEXT_BINS = np.array([(b >> 2 & 1) << 20 | (b >> 1 & 1) << 10 | (b & 1) for b in range(8)],
                      np.int64)


class QueryWords:
    """The upload's side, once per pool task: its keypoints' words, sorted, and which words lie
    within one bit of any of them."""

    def __init__(self, query: LocalFeatures) -> None:
        self.features = query
        self.descriptors = query.descriptors.view(np.uint64).reshape(-1, 4) if len(query) \
            else np.zeros((0, 4), np.uint64)
        ids = word_ids(query.descriptors)
        self.order = np.argsort(ids, kind="stable")  # keypoints by word
        self.words = ids[self.order]
        # A byte per word (1 MB): NEAR for every word within one bit of the upload's, NEAR |
        # EXACT for its own; most stored words are neither, and a look-up here is cheaper than
        # the binary searches it spares them.
        self.table = np.zeros(1 << WORD_BITS, np.uint8)
        self.table[(ids[:, None] ^ _FLIPS[None, :]).ravel()] = _NEAR
        self.table[ids] = _NEAR | _EXACT


@dataclass(frozen=True, eq=False)
class StoredKeypoints:
    """The candidates' side: the keypoints to pair of every stored image, concatenated in
    the candidates' order (`owner`), each image's in the order given."""

    count: int  # stored images
    owner: np.ndarray  # (m,) int64
    xy: np.ndarray  # (m, 2) float32, canonical pixels from the image's centre
    angle: np.ndarray  # (m,) uint8
    octave: np.ndarray  # (m,) uint8
    descriptors: np.ndarray  # (m, 32) uint8

    @classmethod
    def of(cls, stored: Sequence[LocalFeatures],
           keep: Sequence[np.ndarray] | None = None) -> StoredKeypoints:
        """From parsed features: each image's keypoints `keep` (indices; all if None)."""
        picks = [np.arange(len(s)) for s in stored] if keep is None else list(keep)
        owner = np.repeat(np.arange(len(stored)), [len(k) for k in picks])
        if not len(owner):
            return cls._empty(len(stored))
        return cls(len(stored), owner.astype(np.int64),
                   np.concatenate([s.xy[k] - np.array(s.shape[::-1], np.float32) / 2
                                   for s, k in zip(stored, picks, strict=True)]),
                   np.concatenate([s.angle[k] for s, k in zip(stored, picks, strict=True)]),
                   np.concatenate([s.octave[k] for s, k in zip(stored, picks, strict=True)]),
                   np.concatenate([s.descriptors[k] for s, k in zip(stored, picks, strict=True)]))

    @classmethod
    def from_blobs(cls, blobs: Sequence[bytes], limit: int, centre: float) -> StoredKeypoints:
        """From stored feature blobs, reading only their keypoint fields, all blobs at once:
        each image's `limit` keypoints central ones first (within `centre` of the side from
        the middle; `engine.index_keypoints`: the ones the word index holds)."""
        layouts = [keypoint_layout(b) for b in blobs]
        n = np.array([k.keypoints for k in layouts], np.int64)
        if not n.sum():
            return cls._empty(len(blobs))
        # The keypoint sections only (38 bytes a keypoint), one copy: [xy][angle][octave][desc]
        buf = np.concatenate([np.frombuffer(b, np.uint8, 38 * k.keypoints, k.offset)
                              for b, k in zip(blobs, layouts, strict=True)])
        base = np.cumsum(38 * n) - 38 * n
        first = np.cumsum(n) - n
        owner = np.repeat(np.arange(len(blobs)), n)
        index = np.arange(len(owner)) - np.repeat(first, n)  # within its image
        words16 = buf.view("<u2")  # sections are 38n bytes: xy stays 2-byte aligned
        at = np.repeat(base >> 1, n) + 2 * index
        x = words16[at].astype(np.float32) / 8  # as `LocalFeatures.from_bytes` reads them
        y = words16[at + 1].astype(np.float32) / 8
        size = np.array([k.shape for k in layouts], np.float32)  # (height, width)
        width, height = np.repeat(size[:, 1], n), np.repeat(size[:, 0], n)
        outside = np.maximum(np.abs((x + 0.5) / width - 0.5),
                             np.abs((y + 0.5) / height - 0.5)) > centre
        # `index_keypoints` in one pass: central ones first, each group in stored order.
        central = np.concatenate(([0], np.cumsum(~outside)))  # central ones before each
        central_before = central[:-1] - np.repeat(central[first], n)
        rank = np.where(outside,
                        np.repeat(central[first + n] - central[first], n) + index - central_before,
                        central_before)
        chosen = rank < limit
        kept = np.minimum(n, limit)
        slot = np.repeat(np.cumsum(kept) - kept, n)[chosen] + rank[chosen]
        pick = np.empty(int(kept.sum()), np.int64)
        pick[slot] = np.flatnonzero(chosen)
        owner, index = owner[pick], index[pick]
        rows = np.ndarray((len(buf) - 31,), "V32", buf, strides=(1,))  # 32 bytes from each byte
        return cls(len(blobs), owner,
                   np.stack([x[pick] - width[pick] / 2, y[pick] - height[pick] / 2], axis=1),
                   buf[(base + 4 * n)[owner] + index],
                   buf[(base + 5 * n)[owner] + index],
                   rows[(base + 6 * n)[owner] + 32 * index].view(np.uint8).reshape(-1, 32))

    @classmethod
    def _empty(cls, count: int) -> StoredKeypoints:
        return cls(count, np.zeros(0, np.int64), np.zeros((0, 2), np.float32),
                   np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros((0, 32), np.uint8))


def consistency(query: LocalFeatures | QueryWords,
                stored: Sequence[LocalFeatures] | StoredKeypoints,
                keep: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """For each stored image, the most of the query's keypoints that agree on one similarity
    transform (see the module's docstring); int64, one per stored image. `keep`: per stored
    image, the indices of its keypoints to pair (all if None; not with StoredKeypoints)."""
    q = query if isinstance(query, QueryWords) else QueryWords(query)
    s = stored if isinstance(stored, StoredKeypoints) else StoredKeypoints.of(stored, keep)
    out = np.zeros(s.count, np.int64)
    if not len(s.owner) or not len(q.words):
        return out
    # Pairs: each stored keypoint with the query keypoints of its word's run (±1 bit).
    ids = word_ids(s.descriptors)
    hit = np.flatnonzero(q.table[ids])
    if not len(hit):
        return out
    # Repeated words within one stored image are left out as on the query's side; every
    # keypoint of a repeated word hits (same word), so counting among the hits is enough.
    image_word = (s.owner[hit] << 32) + ids[hit]
    ordered = np.sort(image_word)
    if (ordered[MAX_REPEATS:] == ordered[:-MAX_REPEATS]).any():  # some word repeats too often
        repeats = np.searchsorted(ordered, image_word, "right") \
            - np.searchsorted(ordered, image_word, "left")
        hit = hit[repeats <= MAX_REPEATS]
    # Each stored word's partners: the query keypoints whose word is it or one bit away.
    probes = ids[hit][:, None] ^ _FLIPS[None, :]
    row, flip = np.nonzero(q.table[probes] & _EXACT)
    probes = probes[row, flip]
    lo = np.searchsorted(q.words, probes, "left")
    runs = np.searchsorted(q.words, probes, "right") - lo
    found = np.bincount(row, runs, len(hit))
    # A word many query keypoints lie near (a repeated pattern: a chessboard's corners) pairs
    # everything with everything and says nothing about where: left out.
    kept = (found <= MAX_REPEATS)[row]
    row, lo, runs = row[kept], lo[kept], runs[kept]
    total = int(runs.sum())
    if total == 0:
        return out
    si = np.repeat(hit[row], runs)
    qi = q.order[np.repeat(lo - np.cumsum(runs) + runs, runs) + np.arange(total)]
    xor = q.descriptors[qi] ^ s.descriptors.view(np.uint64).reshape(-1, 4)[si]
    distance = np.bitwise_count(xor).sum(axis=1, dtype=np.int64)
    close = distance <= DESCRIPTOR_DISTANCE
    qi, si, distance = qi[close], si[close], distance[close]
    # One-to-one, closest first: each keypoint of either side in at most one pair. The pairs
    # are distinct, so one sort of (distance, query keypoint, stored keypoint) packed into an
    # int64 orders them as a lexsort would; each side's first pair is its closest.
    q_bits, s_bits = max(len(q.order), 1).bit_length(), len(s.owner).bit_length()
    order = np.argsort((distance << (q_bits + s_bits)) + (qi << s_bits) + si)
    qi, si = qi[order], si[order]
    position = np.arange(len(qi))
    first_q = np.full(s.count << q_bits, len(qi))
    np.minimum.at(first_q, (s.owner[si] << q_bits) + qi, position)
    first_s = np.full(len(s.owner), len(qi))
    np.minimum.at(first_s, si, position)
    single = (first_q[(s.owner[si] << q_bits) + qi] == position) & (first_s[si] == position)
    qi, si = qi[single], si[single]
    if not len(qi):
        return out
    xy = s.xy[si]
    qf = q.features
    turn = (qf.angle[qi].astype(np.int64) - s.angle[si]) % 256
    levels = qf.octave[qi].astype(np.int64) - s.octave[si]
    theta = turn * (2 * np.pi / 256)
    scale = ORB_SCALE ** levels.astype(np.float64)
    cos, sin = scale * np.cos(theta), scale * np.sin(theta)
    # ORB's angle is clockwise in image coordinates (y down): the same rotation matrix form.
    moved_x = cos * xy[:, 0] - sin * xy[:, 1]
    moved_y = sin * xy[:, 0] + cos * xy[:, 1]
    centre = np.array(qf.shape[::-1], np.float64) / 2
    tx = (qf.xy[qi, 0] - centre[0] - moved_x) / TRANSLATION_STEP
    ty = (qf.xy[qi, 1] - centre[1] - moved_y) / TRANSLATION_STEP
    # Each vote in its bin and the next along every axis (the next by rounding): 16 bins,
    # each a 31-bit key [angle 4][level 7][x 10][y 10] under the image's number. The angle
    # wraps; the other fields are clipped one short of their width, so +1 never carries.
    ba = turn // (256 // ANGLE_STEPS)
    bs = np.clip(levels // LEVEL_STEP, -60, 60) + 64
    bx = np.clip(np.floor(tx).astype(np.int64), -500, 500) + 512
    by = np.clip(np.floor(ty).astype(np.int64), -500, 500) + 512
    which = s.owner[si]
    rest = (which << 31) + (bs << 20) + (bx << 10) + by
    base = (rest + (ba << 27), rest + ((ba + 1) % ANGLE_STEPS << 27))
    keys = np.stack([b[None, :] + _NEXT_BINS[:, None] for b in base]).reshape(16, -1)
    # All keys in order: as 16 rows each sorted, merged by the stable sort (timsort joins
    # runs), ~2.5x faster than sorting the keys as they come (bench/stage2.py).
    ranked = np.stack([np.sort(b)[None, :] + _NEXT_BINS[:, None] for b in base])
    ranked = np.sort(ranked, axis=None, kind="stable")
    starts = np.flatnonzero(_new_run(ranked))
    bins, votes = ranked[starts], np.diff(starts, append=len(ranked))
    # Each image's fullest bin, the lowest key on a tie (pairs are one-to-one, so a bin's
    # count is of distinct pairs): the bins are in key order, so each image's are together.
    image = bins >> 31
    new_image = _new_run(image)
    group = np.cumsum(new_image) - 1
    fullest = np.flatnonzero(votes == np.maximum.reduceat(votes, np.flatnonzero(new_image))[group])
    fullest = fullest[_new_run(group[fullest])]
    best = np.full(s.count, -1, np.int64)
    best[image[fullest]] = bins[fullest]
    inside = (keys == best[which]).any(axis=0)
    # Refine: the similarity transform that fits the fullest bin's pairs best (least squares),
    # then the pairs it puts within FIT_DISTANCE of their partners, twice. Coarse bins let a
    # look-alike's near misses in; the fitted transform does not.
    # Each fit reads only the pairs it uses: bincount adds in array order, so the sums are
    # those of weighting all pairs by 0 or 1, bit for bit (an added ±0.0 changes no sum).
    target = (qf.xy[qi, 0] - centre[0], qf.xy[qi, 1] - centre[1])
    source = (xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64))
    for limit in (4 * FIT_DISTANCE, 2 * FIT_DISTANCE, FIT_DISTANCE):
        fitted = _fit(which[inside], *(c[inside] for c in (*source, *target)), n=s.count)
        ca, cb, ox, oy = (f[which] for f in fitted)
        dx = ca * source[0] - cb * source[1] + ox - target[0]
        dy = cb * source[0] + ca * source[1] + oy - target[1]
        inside = dx ** 2 + dy ** 2 <= limit ** 2
    return np.bincount(which[inside], minlength=s.count).astype(np.int64)


def _new_run(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts (a mask); np.r_ costs 3 µs more a call."""
    out = np.empty(len(values), bool)
    out[:1] = True
    np.not_equal(values[1:], values[:-1], out=out[1:])
    return out


def _fit(which: np.ndarray, x: np.ndarray, y: np.ndarray, u: np.ndarray, v: np.ndarray, *,
         n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per image, (a, b, tx, ty) of the similarity (u, v) = [[a, -b], [b, a]] (x, y) + t that
    fits the pairs given in the least-squares sense (Umeyama's closed form in 2-D)."""
    count = np.maximum(np.bincount(which, None, n).astype(np.float64), 1e-9)
    mx, my, mu, mv = (np.bincount(which, c, n) / count for c in (x, y, u, v))
    x, y, u, v = x - mx[which], y - my[which], u - mu[which], v - mv[which]
    norm = np.maximum(np.bincount(which, x ** 2 + y ** 2, n), 1e-9)
    a = np.bincount(which, x * u + y * v, n) / norm
    b = np.bincount(which, x * v - y * u, n) / norm
    return a, b, mu - (a * mx - b * my), mv - (b * mx + a * my)
