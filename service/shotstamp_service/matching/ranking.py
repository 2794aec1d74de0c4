"""Between stage 1 and stage 2: which word candidates are worth the full verification.

The word index ranks registrations by votes of agreeing visual words turned by one angle. At
millions of registrations a crop's original is outscored there by photos of the same thing (the
same product shot by another seller, the next frame of a scene): their words agree too, and
turned by about the same angle. What tells them apart is where the keypoints sit. So stage 1
proposes more word candidates (`engine.SHORTLIST`), and this module scores each by the
geometric consistency of its word-matched keypoints, on the positions, orientations and
scales stored in its feature blob: every pair of keypoints whose words agree (within one bit,
the index's probes) and whose signatures agree (the index's Hamming embedding) votes for the
similarity transform it implies — rotation from the orientations, scale from the pyramid
levels, translation from the positions — in a coarse 4-D Hough table (Lowe 2004, section 7.3;
weak geometric consistency, Jégou, Douze & Schmid 2008, bins only the first two). A copy's pairs
fall into one bin; a look-alike's agree on angle and scale but not on where. The score is the
most query keypoints in one bin (and its neighbours' overlaps: each vote also counts in the
next bin of every dimension).

All candidates at once, from their blobs' keypoint fields alone (`StoredKeypoints.from_blobs`,
`consistency`): the words and tables in numpy, the pairs, bins and refits in one compiled loop
(`stage2_kernels.consistency_counts`, bit-identical to the numpy steps it replaced; docs/
cpu-budget.md); run in the pool, beside the verification it selects for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shotstamp_service.matching.features import (
    _WORD,
    ORB_SCALE,
    WORD_BITS,
    LocalFeatures,
    keypoint_layouts,
    word_ids,
)
from shotstamp_service.matching.stage2_kernels import consistency_counts, stored_keypoints

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

# A word and the words one bit away: XOR with each of these
_FLIPS = np.concatenate([[0], np.int64(1) << np.arange(WORD_BITS, dtype=np.int64)])
# `word_ids`' sampler (its descriptor bytes and bit shifts, the first the word's top bit)
_WORD_BYTE = _WORD.byte.astype(np.int64)
_WORD_SHIFT = _WORD.shift.astype(np.int64)
# A pair's rotation and scale, computed by numpy as the numpy steps did (`turn * (2π / 256)`
# of an int64 turn, `ORB_SCALE ** levels` of float64 levels), for every turn and level
# difference: the compiled consistency reads them, so its products are the same bits.
_TURNS = np.arange(256, dtype=np.int64) * (2 * np.pi / 256)
_COS, _SIN = np.cos(_TURNS), np.sin(_TURNS)
_SCALE = ORB_SCALE ** np.arange(-255, 256, dtype=np.int64).astype(np.float64)


class QueryWords:
    """The upload's side, once per pool task: its keypoints' words, sorted, and the arrays the
    compiled consistency reads."""

    def __init__(self, query: LocalFeatures) -> None:
        self.features = query
        self.descriptors = query.descriptors.view(np.uint64).reshape(-1, 4) if len(query) \
            else np.zeros((0, 4), np.uint64)
        ids = word_ids(query.descriptors)
        self.order = np.argsort(ids, kind="stable")  # keypoints by word
        self.words = ids[self.order]
        # The compiled consistency's arguments (`_ready` types), once per task
        self.kernel_words = self.words.astype(np.int64)
        self.kernel_descriptors = _ready(self.descriptors, np.uint64)
        self.angle = query.angle.astype(np.int64)
        self.octave = query.octave.astype(np.int64)
        # As `consistency` computed them: float32 positions less a float64 centre
        centre = np.array(query.shape[::-1], np.float64) / 2
        self.target_x = _ready(query.xy[:, 0] - centre[0], np.float64)
        self.target_y = _ready(query.xy[:, 1] - centre[1], np.float64)


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
    def from_blobs(cls, blobs: Sequence[bytes | memoryview], limit: int,
                   centre: float) -> StoredKeypoints:
        """From stored feature blobs, reading only their keypoint fields, all blobs at once:
        each image's `limit` keypoints central ones first (within `centre` of the side from
        the middle; `engine.index_keypoints`: the ones the word index holds)."""
        layouts = keypoint_layouts(blobs)
        if not layouts.keypoints.sum():
            return cls._empty(len(blobs))
        # Which keypoints, and their fields, in one compiled pass (stage2_kernels) over the
        # blobs joined as they came (their keypoint sections: [xy][angle][octave][desc]).
        owner, xy, angle, octave, descriptors = stored_keypoints(
            layouts.buffer, layouts.offset, layouts.keypoints, layouts.height, layouts.width,
            limit, centre)
        return cls(len(blobs), owner, xy, angle, octave, descriptors)

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
    if not len(s.owner) or not len(q.words):
        return np.zeros(s.count, np.int64)
    # The rest in compiled loops, bit-identical to the numpy steps they replaced
    # (stage2_kernels; docs/cpu-budget.md, "Stage 2's consistency compiled").
    descriptors = _ready(s.descriptors, np.uint8)
    counts: np.ndarray = consistency_counts(
        s.count, _WORD_BYTE, _WORD_SHIFT, _ready(s.owner, np.int64), descriptors,
        descriptors.view(np.uint64).reshape(-1, 4), _ready(s.angle, np.uint8),
        _ready(s.octave, np.uint8), _ready(s.xy, np.float32),
        q.kernel_words, q.order, q.kernel_descriptors, q.angle, q.octave,
        q.target_x, q.target_y, _FLIPS, _COS, _SIN, _SCALE, MAX_REPEATS,
        DESCRIPTOR_DISTANCE, ANGLE_STEPS, LEVEL_STEP, TRANSLATION_STEP, FIT_DISTANCE)
    return counts


def _ready(a: np.ndarray, dtype: type) -> np.ndarray:
    """`a` as the kernel's argument types expect it: C-contiguous and writable (numba compiles
    one version per layout and per read-only flag; `stage2_kernels.warm` compiles this one)."""
    return np.require(a, dtype, ["C_CONTIGUOUS", "WRITEABLE"])
