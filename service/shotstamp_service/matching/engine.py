"""Is this upload a copy of an earlier registration? The decision rule and its two stages.

Stage 1, fast, in the event loop (`Matcher.search`, `Matcher.candidates`): exact PDQ range
search over the whole-image and content-box hashes of every registration (`index.HammingIndex`),
queried with the upload's whole-image, content-box and mirrored hashes; and a vote of the
upload's ORB visual words in an inverted file (`index.WordIndex`). A PDQ distance within
`PDQ_COPY` between codes of enough quality is a copy at once (re-encodes, resizes, colour,
greyscale, mirror, padding: the bulk of real copies); nothing else is decided here.

Stage 2, in the process pool, only for the few candidates stage 1 returns (`verify`, pure):
the stored features of each candidate are fetched from the database by ref and compared with
the upload's (`verification.verify_pair`): RANSAC inliers of a similarity transform between
ORB keypoints, the share of thumbnail cells that agree once aligned, and for a PDQ candidate
the same under the alignment its code pair implies. `decide` turns that evidence into a
verdict.

The rule (every number is a named constant below, with the measurement that chose it):

    copy     PDQ ≤ PDQ_COPY between codes both of quality ≥ PDQ_MIN_QUALITY      (stage 1)
             or, once verified, PDQ ≤ PDQ_CANDIDATE (quality-gated) and, under the alignment
             that code pair implies (frames or content boxes onto each other, mirrored for
             pdq_mirror), ≥ GLOBAL_INLIERS_COPY keypoint matches where it puts them and
             ≥ GLOBAL_AGREEMENT_COPY of the thumbnail cells agreeing (or, with too few
             cells to compare, ≥ GLOBAL_INLIERS_ALONE such matches; or, for an upload no
             larger than the stored thumbnail, its pixels within GLOBAL_RESIDUAL_COPY),
             or a plausible similarity transform (scale within SCALE_RANGE,
             turn within MAX_ROTATION) with ORB inliers ≥ INLIERS_COPY and photometric
             agreement ≥ AGREEMENT_COPY, or inliers (or keypoints re-matched under the
             transform) ≥ INLIERS_COPY_FEW and agreement ≥ AGREEMENT_COPY_FEW or the cells
             that agree or differ only by a semi-transparent overlay ≥ OVERLAY_COPY,
             or inliers (or re-matched) ≥ INLIERS_ALONE where near-white pixels leave
             too few cells to compare, or ≥ INLIERS_CLEAN inliers that are nearly all the
             matches (INLIER_SHARE_CLEAN) with agreement ≥ AGREEMENT_CLEAN or no cells
             to compare                                                       (stage 2)
    similar  verified with inliers ≥ INLIERS_SIMILAR and agreement ≥ AGREEMENT_SIMILAR:
             the same scene or a partial copy; shown to the seller and staff, never blocks

Low-information images (PDQ quality < PDQ_MIN_QUALITY: blank, flat, low contrast) are still
indexed and searched, in an index of their own, but a PDQ distance between them only makes
a candidate for stage 2, where local features (few, on a near-blank image) must confirm it.

Service protocol (race-safe, see `registry`): fingerprint in the pool → `search` (no await) →
a `copy` decides at once; otherwise `candidates` and `add` of the reservation (no await) →
fetch features of the candidates → `verify` in the pool → `decide`; a `copy` of another
seller's registration discards the reservation and answers 409.

Registrations stored before the engine carry only the foundation's 64-bit `phash` (no PDQ, no
features): they stay in a plain pHash array (`_PhashIndex`, the foundation's matcher) and are
matched by the foundation's rule, pHash Hamming ≤ PHASH_COPY_DISTANCE, so upgrading does not
unprotect them. Every new fingerprint carries a `phash` computed the foundation's way.

Memory at 10 million registrations: see bench/index.py (PDQ tables for ~1.5 codes per
registration; 128 words per registration, each posting 4 bytes and its signature 4 more);
features stay in the database (~15 KB
per registration) and are read only for candidates.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from shotstamp_service.matching.features import SIGNATURE_BITS, WORD_BITS, LocalFeatures, words
from shotstamp_service.matching.fingerprint import Fingerprint
from shotstamp_service.matching.index import SIGNATURE_BITS as INDEX_SIGNATURE_BITS
from shotstamp_service.matching.index import WORD_BITS as INDEX_WORD_BITS
from shotstamp_service.matching.index import HammingIndex, WordIndex, WordScore
from shotstamp_service.matching.verification import (
    MIN_CELLS,
    NATIVE_SIDE,
    PHOTOMETRY_MIN_INLIERS,
    REMATCH_MIN_INLIERS,
    Evidence,
    Geometry,
    verify_pair,
)

if TYPE_CHECKING:
    from shotstamp_service.matching.segments import Segment

__all__ = [
    "AGREEMENT_COPY",
    "GLOBAL_AGREEMENT_COPY",
    "GLOBAL_INLIERS_COPY",
    "GLOBAL_RESIDUAL_COPY",
    "GLOBAL_RESIDUAL_SHARE",
    "INLIERS_COPY",
    "PDQ_CANDIDATE",
    "PDQ_COPY",
    "PDQ_MIN_QUALITY",
    "PHASH_COPY_DISTANCE",
    "PHASH_SIMILAR_DISTANCE",
    "Candidate",
    "Match",
    "Matcher",
    "Stage1",
    "decide",
    "verify",
]

# -- the rule's constants ------------------------------------------------------------------

# PDQ quality below which a hash does not decide (PDQ's authors suggest 50). All 40 synthetic
# near-blank images of the benchmark score 0–34 and two of them sit within 16 bits of each
# other: without the gate they would be "copies".
PDQ_MIN_QUALITY = 50
# PDQ, stage 1. Corpus, 14.8 M pairs of different photos (every query image against every
# other original): the closest at 42 bits (two tuxpaint planet discs), 1 in 100,000 within 64.
# Copies: median 2–12 bits for re-encoding, resizing, colour, mirror, padding (content box).
# The lower tail of the different-photo distribution falls tenfold every ~14 bits; extrapolated
# it gives ~5e-8 per pair within 31 bits — 0.5 false matches per upload at 10 M registrations —
# and ~4e-9 within 16. So a PDQ distance decides alone only up to PDQ_COPY; up to
# PDQ_CANDIDATE (the index's search radius: ⌊31/16⌋ = 1 flipped bit per chunk probe) it makes
# a stage-2 candidate, confirmed by the photometric check under the alignment the code pair
# implies (GLOBAL_AGREEMENT_COPY) or by keypoints.
PDQ_COPY = 16
PDQ_CANDIDATE = 31
# Confirmation of a PDQ candidate under the alignment its code pair implies: keypoint matches
# that land where it puts them, and thumbnail cells that agree. Corpus: 96 % of the copies at
# 17–31 PDQ bits reach both. No different-photo pair comes within 31 bits, so the check was
# probed with all 1,091 within 76 bits as if they were candidates: none passes. 42 agree on
# ≥ 0.75 of the cells (the uranus and neptune discs up to 1.0: pixels alone cannot tell two
# round objects on one background apart) but keep 1 guided inlier; the most guided inliers,
# 16, belong to two stereo-calibration chessboards that agree on 0.62. Those figures are from
# the 8 × 8 grid and a threshold of 0.75. The threshold became 0.8 by accident in the same
# edit that changed AGREEMENT_COPY, and it was kept: on the corpus with 500 keypoints and the
# 16 × 16 grid, 0.75 and 0.8 give the same recall on every edit, and of the 1,060 probed
# different-photo pairs 43 agree on ≥ 0.8 (68 on ≥ 0.75), none with 12 guided inliers.
GLOBAL_INLIERS_COPY = 12
GLOBAL_AGREEMENT_COPY = 0.8
# Where that alignment leaves fewer than verification.MIN_CELLS cells to compare (a pale
# product on white, brightened), the guided keypoints decide alone, and need many more than
# any different-photo pair probed keeps (14, the chessboards): brightness 98.9 → 99.1 %.
GLOBAL_INLIERS_ALONE = 30
# A query no larger than the stored thumbnail (verification.NATIVE_SIDE: a thumbnail-sized
# copy, a sprite shrunk to a quarter) has too few pixels for keypoints, and its pixels are
# then compared one by one at its own size: a copy if their RMS difference is within
# GLOBAL_RESIDUAL_COPY grey levels over at least GLOBAL_RESIDUAL_PIXELS pixels that are not
# blank in both, and within GLOBAL_RESIDUAL_SHARE of the query's own contrast over them (the
# standard deviation of its grey): two low-contrast images differ by few grey levels however
# different they are. No gain or offset is fitted, so only copies with their tones unchanged
# pass (a resize, a re-encode; the other clauses take the rest). Corpus (bench/matching.py
# --small-probe 0): the small queries' copies within PDQ_CANDIDATE of their original differ by
# a median 6 grey levels (p90 11), 0.12 of their contrast (p90 0.21); every small query against
# every different original under its closest code pair's alignment, whatever their PDQ distance
# (1,185,437 pairs): none passes, the closest 14.8 levels (a dark gravestone against a
# defocused text photo: contrast 10, share 1.48) and 0.52 of the contrast (a brick wall against
# fog, 18.1 levels: 1.5× beyond both bounds, the nearest pair on both at once).
# downscale_25 97.4 → 99.2 % (the 5 left: 3 beyond PDQ_CANDIDATE, 2 below the quality gate),
# downscale_50 99.7 → 99.8 %, all edits 98.4 → 98.5 %, no false match.
# Clip art with hard edges shrunk to 20 × 30 px and re-encoded at JPEG 75 comes to 10–12 levels
# (tests/matching/test_matching_small.py), at JPEG 60 beyond: the rule has little room there.
# At least 16 × 16 pixels to compare: the fewest of any corpus copy it catches is 366.
GLOBAL_RESIDUAL_COPY = 12.0
GLOBAL_RESIDUAL_SHARE = 0.35
GLOBAL_RESIDUAL_PIXELS = 256
# Stage 2. A copy keeps many RANSAC inliers *and* looks the same once aligned. Corpus, 68,358
# pairs of different photos verified (engine candidates, and every same-group or similar_pairs
# pair as originals, crop_80 and combination), photometry on verification's 16 × 16 grid,
# 500 keypoints: with ≥ 20 inliers the most alike agree on 0.72 (the stereo pair
# motorcycle_left/right, 96 inliers), with 12–19 on 0.65 (stereo chessboards). On the 8 × 8
# grid (300 keypoints) the same pairs reached 0.73 and 0.64 and the thresholds stood at 0.8
# and 0.9; the finer grid let the second come down to 0.8 (watermark_text 94.1 → 95.6 %,
# combination 72.0 → 75.0 % with 300 keypoints). 0.75 for ≥ 20 inliers would add 0.1 % of
# recall over all edits but leave a margin of 0.035 over the stereo pair: kept at 0.8. Pairs
# that are one picture are not counted (bench.corpus.SAME_PICTURE).
INLIERS_COPY = 20
AGREEMENT_COPY = 0.8
INLIERS_COPY_FEW = 12  # fewer inliers are enough when the photometry is near perfect
AGREEMENT_COPY_FEW = 0.8
# The keypoints found again under the fitted transform (verification's `rematched`, only for
# a transform of ≥ REMATCH_MIN_INLIERS RANSAC inliers) count towards INLIERS_COPY_FEW. Corpus,
# the 100,827 verified different-photo pairs, those with ≥ 12 inliers or re-matched keypoints
# and a plausible transform: the most alike agree on 0.715 (the stereo motorcycles, 96
# inliers), the next on 0.656 (stereo chessboards). A copy under a semi-transparent watermark
# agrees on its cells outside the text and is explained by the overlay inside it
# (verification's `overlay` share); a different photo is not: the same pairs reach at most
# 0.76 on that share (two gcompris photos of hands, 8 inliers, 26 re-matched), the
# motorcycles 0.75, the chessboards 0.68.
OVERLAY_COPY = 0.85
# With both agreements at 0.8 the INLIERS_COPY clause adds nothing beyond this one; the two
# stay separate constants because they were measured, and may be tuned, apart.
# When near-white pixels leave fewer than verification.MIN_CELLS cells to compare (a pale
# product brightened to white), the keypoints must carry the decision alone. Re-matched
# keypoints count here too: of the verified different-photo pairs with too few cells, the most
# re-match 45 (two photos of one kind of hammer, gcompris hammer2 / hammer8, 8 inliers).
INLIERS_ALONE = 60
# A digital copy leaves almost no outlier matches; a re-shot scene (a stereo pair, the next
# animation frame) leaves many. Corpus, 500 keypoints: different-photo pairs with ≥ 20
# inliers keep at most 0.88 of their ratio-test matches as inliers (motorcycle_left/right
# crops, 96 of 109; with 300 keypoints 0.85, but 0.905 once the pyramid was made finer, so
# 0.9 became 0.95); copies a median of 0.92. With that many clean inliers a watermark may hide
# more of the pixels, and where no cells can be compared at all (a pale product on white) the
# keypoints decide alone. 40 → 30 clean inliers, and the no-cells case (300 keypoints):
# watermark_text 93.5 → 94.1 %, combination 71.7 → 72.0 %, no false match.
INLIERS_CLEAN = 30
INLIER_SHARE_CLEAN = 0.95
AGREEMENT_CLEAN = 0.6
INLIERS_SIMILAR = 12
AGREEMENT_SIMILAR = 0.6
# A copy is the original cropped, padded, resized and turned a little: the stored image's
# scale relative to the query and the turn between them stay within these bounds.
SCALE_RANGE = (0.4, 2.5)
MAX_ROTATION = 20.0
# Word index: the strongest keypoints indexed per registration (128 × 4 bytes), the
# candidates per upload sent to stage 2, and the orientation-consistent words they need.
# Corpus: indexing 64 keypoints found the original among 5 candidates for 75 % of the 90 %
# crops, 128 for 90 %, all 300 for 95 % (at 2.3× the memory of 128).
# Each candidate costs ~1–3 ms of verification. Before the signatures (below), corpus: 5
# candidates per upload → recall 95.5 % over all edits and 2.5 verifications per non-copy,
# 3 → 95.4 % and 1.7, 2 → 95.3 % and 1.3. With them (SIGNATURE_DISTANCE 10, sigma 6) chance
# votes are rare enough for 2 consistent words to propose a candidate: MIN_VOTES 2 → 96.3 %
# and 2.7 verifications per non-copy (3 → 95.5 % and 1.2); 5 candidates → 96.3 % and 4.3,
# for 1–4 points more of the 10 M estimate on crops: not worth 1.6× the verifications.
INDEX_KEYPOINTS = 128
# Which keypoints: the strongest inside the central box first (Chebyshev distance from the
# centre ≤ INDEX_CENTRE of the side), then the strongest outside it. The strongest keypoints
# of a photo often sit on its outer parts, the first thing a crop removes; the central 70 %
# of each side survives every crop the issue names (centre 90 % and 80 %, 85 % pushed into a
# corner). Corpus, same 128 keypoints per registration, strongest → central first: crop_80
# 94.9 → 95.2 % (10 M estimate 37 → 56 %), crop_offcentre 91.9 → 93.7 %, combination
# 69.4 → 71.7 %, all edits 96.26 → 96.45 %, no false match (0.3: about the same; 0.25 or
# 0.4: less; a 4×4 spatial round robin: 96.21 %).
INDEX_CENTRE = 0.35
MAX_CANDIDATES = 3
MIN_VOTES = 2
# A word lookup reads at most this many postings, rarest words first (the corpus index holds
# fewer in all, so it never binds there). bench/index.py, skewed synthetic words, before the
# signatures: 100 k postings cost ~4 ms at 1 M registrations, 200 k ~7 ms, no budget ~10 ms
# and growing. With them few votes reach the scoring, so reading costs less: at 10 M, 100 k
# → 2.2 ms median and the planted registration among the candidates for 64.5 % of the
# queries, 200 k → 2.5 ms and 74.5 %, 400 k → 4.6 ms and 83 % (one build, same queries; the
# PDQ lookup adds ~3 ms). Real registrations hold twice the synthetic distinct words, so the
# lists are longer and the same budget reads fewer words: 200 k leaves room under 10 ms.
WORD_POSTINGS_BUDGET = 200_000
# Hamming embedding: a query word votes for a posting only if their signatures (32 more
# descriptor bits, local_features.SIGNATURE_POSITIONS) differ in at most SIGNATURE_DISTANCE
# bits, and the vote weighs exp(-(d / SIGNATURE_SIGMA)²) at distance d. Corpus (bench/matching,
# MIN_VOTES 3): distance 6 unweighted cut the (query, unrelated registration) pairs with 3
# consistent votes from 122,553 to 19,578 of 11.3 M but cost true votes too (crop_90 89.5 →
# 86.0 %); 10 keeps 96 % of a copy's word collisions and the weighting ranks the close ones
# first (10 M estimate for crop_80 29 → 37 %; sigma 4: 42 % but pad_10 loses a copy). The
# unrelated registrations that still outscore a crop's original are mostly other frames of the
# stereo-calibration chessboards: the same board, truly similar patches, which no signature
# can tell apart; stage 2 does.
SIGNATURE_DISTANCE = 10
SIGNATURE_SIGMA: float | None = 6.0
# Multi-probe: the words of the query's WORD_PROBES keypoints that a registration would be
# indexed by (`index_keypoints`) are also looked up one bit away, after the exact words, at
# most WORD_PROBE_POSTINGS postings of them (rarest first) and only within what
# WORD_POSTINGS_BUDGET leaves. A copy's keypoint keeps its 20-bit word only if none of those
# bits moved: (1 − d/256)^20 at descriptor distance d, 1.7 % at the combination's median 47
# bits, 9 % with one bit allowed to move. Corpus (bench/matching.py): combination 89.2 →
# 91.0 %, rotate 97.7 → 98.3 %, all edits 98.2 → 98.4 %, no false match among 100,827 verified
# different-photo pairs. 128 probed keypoints without a cap: 91.1 %, but on a catalogue of
# look-alike product shots (bench/load.py, 8 clients, ~1,500 registrations) the service
# process's CPU per upload went 6.9 → ~14 ms (a 5,000 cap: 12.3 ms; 64 and 2,000: 8.6 ms);
# all 500 keypoints: 92.5 % for 2.6× the corpus lookup. Where it helps: a median query's 64
# probes hold ~920 postings per 664 registrations, so the cap reads them all up to ~1,400
# registrations and their rarest beyond; past ~270 k registrations the exact words alone
# fill WORD_POSTINGS_BUDGET and no probe is read (at 10 M they hold ~7 M postings).
WORD_PROBES = 64
WORD_PROBE_POSTINGS = 2_000
MAX_MATCHES = 20
# The foundation's rule, for registrations stored with a pHash only (module docstring). Measured
# by the foundation on ../shared/photos: every copy resized to 50 % and re-encoded at q50 within
# 6 bits; 3 of 351,541 different-photo pairs within 6 (neighbouring calibration frames).
PHASH_COPY_DISTANCE = 6
PHASH_SIMILAR_DISTANCE = 10

# Index changes remembered for `Matcher.look_again` (a few in-flight uploads' worth; each
# holds its fingerprint, ~15 KB with features). An older look is redone in full.
JOURNAL_CHANGES = 512

# The word index stores signatures as uint32 and tabulates their distances up to its own
# SIGNATURE_BITS: it must be the width local_features samples.
assert SIGNATURE_BITS == INDEX_SIGNATURE_BITS
# Its probes flip the low WORD_BITS bits of a word: the width local_features samples.
assert WORD_BITS == INDEX_WORD_BITS
# verify_pair skips the photometry below PHOTOMETRY_MIN_INLIERS: no rule may ask for less.
assert min(INLIERS_COPY, INLIERS_COPY_FEW, INLIERS_SIMILAR) >= PHOTOMETRY_MIN_INLIERS

Verdict = Literal["copy", "similar"]


@dataclass(frozen=True)
class Match:
    """A registration the upload matches, with the evidence per fingerprint."""

    ref: int
    distances: dict[str, float | int]
    verdict: Verdict
    # Stage 2's fitted alignment of the upload onto the registration (stage-1 copies have none)
    geometry: Geometry | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Candidate:
    """A registration stage 1 could not decide alone: verify it with local features."""

    ref: int
    pdq: int | None = None  # smallest PDQ distance, if within PDQ_CANDIDATE
    pdq_pair: tuple[str, str] | None = None  # (query code, stored code) at that distance
    gated: bool = False  # a code of that pair is below PDQ_MIN_QUALITY: no global check
    words: float = 0.0  # word-index score
    votes: int = 0  # orientation-consistent words

    @property
    def global_pair(self) -> tuple[str, str] | None:
        """The code pair to check globally in stage 2, if any (never for gated codes)."""
        return None if self.gated else self.pdq_pair


@dataclass(frozen=True)
class Stage1:
    """Stage 1's answer for one fingerprint, as of the index's `generation` (`Matcher.look`).

    `candidates` is None when the look stopped at a stage-1 copy.
    """

    fp: Fingerprint
    generation: int
    found: list[Match]
    candidates: list[Candidate] | None


def _candidate_order(c: Candidate) -> tuple[bool, int, int, int]:
    return (c.pdq is None, c.pdq or 0, -c.votes, c.ref)


class _RefSet:
    """Which refs are registered: a bitmap for ordinary sequence numbers, a set otherwise."""

    _BITMAP_LIMIT = 1 << 31

    def __init__(self) -> None:
        self._bits = bytearray()
        self._other: set[int] = set()
        self.count = 0

    def __contains__(self, ref: int) -> bool:
        if 0 <= ref < self._BITMAP_LIMIT:
            byte = ref >> 3
            return byte < len(self._bits) and bool(self._bits[byte] >> (ref & 7) & 1)
        return ref in self._other

    def add(self, ref: int) -> None:
        if ref in self:
            return
        if 0 <= ref < self._BITMAP_LIMIT:
            byte = ref >> 3
            if byte >= len(self._bits):
                self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits) // 2)))
            self._bits[byte] |= 1 << (ref & 7)
        else:
            self._other.add(ref)
        self.count += 1

    def add_many(self, refs: np.ndarray) -> None:
        """`add` for many refs at once, all new, all ordinary sequence numbers."""
        if not len(refs):
            return
        top = int(refs.max()) + 1
        if top > self._BITMAP_LIMIT or int(refs.min()) < 0:
            for ref in refs.tolist():
                self.add(ref)
            return
        marks = np.zeros(-(-top // 8) * 8, bool)
        marks[refs] = True
        packed = np.packbits(marks, bitorder="little")
        if len(packed) > len(self._bits):
            self._bits.extend(bytes(len(packed) - len(self._bits)))
        bits = np.frombuffer(self._bits, np.uint8)
        fresh = int(np.bitwise_count(packed & ~bits[: len(packed)]).sum(dtype=np.int64))
        bits[: len(packed)] |= packed
        self.count += fresh

    def remove(self, ref: int) -> bool:
        if ref not in self:
            return False
        if 0 <= ref < self._BITMAP_LIMIT:
            self._bits[ref >> 3] &= ~(1 << (ref & 7)) & 0xFF
        else:
            self._other.discard(ref)
        self.count -= 1
        return True


class _PhashIndex:
    """64-bit pHash codes in a growable uint64 array, searched with vectorised popcount.

    Only for registrations without PDQ (stored before the engine): a full scan, but of a
    set that no longer grows.
    """

    def __init__(self) -> None:
        self._codes = np.zeros(0, dtype=np.uint64)
        self._refs = np.zeros(0, dtype=np.int64)
        self._live = np.zeros(0, dtype=bool)
        self._slot: dict[int, int] = {}
        self._count = 0

    def __len__(self) -> int:
        return len(self._slot)

    def add(self, ref: int, code: bytes) -> None:
        if self._count == len(self._codes):
            grow = max(1024, len(self._codes))
            self._codes = np.concatenate([self._codes, np.zeros(grow, dtype=np.uint64)])
            self._refs = np.concatenate([self._refs, np.zeros(grow, dtype=np.int64)])
            self._live = np.concatenate([self._live, np.zeros(grow, dtype=bool)])
        slot = self._count
        self._codes[slot] = int.from_bytes(code, "big")
        self._refs[slot] = ref
        self._live[slot] = True
        self._slot[ref] = slot
        self._count += 1

    def discard(self, ref: int) -> None:
        slot = self._slot.pop(ref, None)
        if slot is not None:
            self._live[slot] = False

    def search(self, code: bytes, radius: int) -> list[tuple[int, int]]:
        """(ref, distance) of the live codes within `radius`."""
        if not self._slot:
            return []
        query = np.uint64(int.from_bytes(code, "big"))
        distances = np.bitwise_count(self._codes[: self._count] ^ query)
        hits = np.flatnonzero((distances <= radius) & self._live[: self._count])
        return [(int(self._refs[i]), int(distances[i])) for i in hits]

    @property
    def nbytes(self) -> int:
        return int(self._codes.nbytes + self._refs.nbytes + self._live.nbytes)


def index_keypoints(local: LocalFeatures, limit: int = INDEX_KEYPOINTS) -> np.ndarray:
    """Indices of the keypoints a registration is indexed by: central ones first (INDEX_CENTRE)."""
    height, width = local.shape
    offset = np.maximum(np.abs((local.xy[:, 0] + 0.5) / width - 0.5),
                        np.abs((local.xy[:, 1] + 0.5) / height - 0.5))
    # Keypoints are stored strongest first, so a stable sort keeps strength order within each.
    order: np.ndarray = np.argsort(offset > INDEX_CENTRE, kind="stable")[:limit]
    return order


def _legacy(fp: Fingerprint) -> bool:
    """Stored before the engine: a pHash and nothing else to match it by."""
    return "pdq" not in fp.hashes and "phash" in fp.hashes


# Tags of stored PDQ codes in the Hamming indexes.
_STORED_CODES = ("pdq", "pdq_trim", "pdq_black")


def _split_codes(fp: Fingerprint, *, query: bool,
                 ) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(name, code) of the PDQ codes of enough quality to decide, and of the others."""
    good: list[tuple[str, bytes]] = []
    low: list[tuple[str, bytes]] = []
    for name, code, quality in fp.pdq_codes(query=query):
        enough = quality is not None and quality >= PDQ_MIN_QUALITY
        (good if enough else low).append((name, code))
    return good, low


def _add_codes(index: HammingIndex, ref: int, codes: list[tuple[str, bytes]]) -> None:
    if codes:
        index.add(ref, [c for _, c in codes], [_STORED_CODES.index(n) for n, _ in codes])


def _hits(index: HammingIndex, codes: list[tuple[str, bytes]],
          radius: int) -> dict[int, tuple[int, tuple[str, str]]]:
    """ref → (distance, (query code name, stored code name))."""
    if not codes:
        return {}
    found = index.search([c for _, c in codes], radius)
    return {ref: (h.distance, (codes[h.query][0], _STORED_CODES[h.tag]))
            for ref, h in found.items()}


@dataclass
class Matcher:
    """Both indexes behind the contract the service calls."""

    background: bool = True
    _pdq: HammingIndex = field(init=False)  # codes of quality >= PDQ_MIN_QUALITY
    _pdq_low: HammingIndex = field(init=False)  # the others: candidates only
    _words: WordIndex = field(init=False)
    _legacy: _PhashIndex = field(init=False, default_factory=_PhashIndex)  # pHash-only rows
    _refs: _RefSet = field(init=False, default_factory=_RefSet)
    _mapped: int = field(init=False, default=0)  # of them, in attached segments
    # `search` reads the PDQ index once for both stages; `candidates`, called next for the same
    # fingerprint with no add or discard in between, reuses the hits.
    _generation: int = field(init=False, default=0)
    _near: tuple[Fingerprint, int, dict[int, tuple[int, tuple[str, str]]]] | None = field(
        init=False, default=None, repr=False)
    # Every change since the oldest kept: (ref, its fingerprint if added, None if discarded),
    # one per `_generation` step, so `look_again` can read only what changed since a look.
    # A bulk load clears it (those changes are not kept): a look before it is redone in full.
    _journal: deque[tuple[int, Fingerprint | None]] = field(
        init=False, default_factory=lambda: deque(maxlen=JOURNAL_CHANGES), repr=False)

    def __post_init__(self) -> None:
        self._pdq = HammingIndex(max_radius=PDQ_CANDIDATE, background=self.background)
        self._pdq_low = HammingIndex(max_radius=PDQ_CANDIDATE, background=self.background)
        self._words = WordIndex(background=self.background)

    def __len__(self) -> int:
        return self._refs.count

    def add(self, ref: int, fp: Fingerprint) -> None:
        """Index registration `ref`; adding a ref already present does nothing."""
        if ref in self._refs:
            return
        self._refs.add(ref)
        self._generation += 1
        self._journal.append((ref, fp))
        if _legacy(fp):
            self._legacy.add(ref, fp.hashes["phash"])
            return
        good, low = _split_codes(fp, query=False)
        _add_codes(self._pdq, ref, good)
        _add_codes(self._pdq_low, ref, low)
        local = fp.local
        if local is not None and len(local):
            self._words.add(ref, *words(local, index_keypoints(local)))

    def add_many(self, items: Iterable[tuple[int, Fingerprint]]) -> int:
        """Bulk `add` for the rebuild at start: one pass, indexes built once. Returns count."""
        bulk = self.bulk()
        for ref, fp in items:
            bulk.add(ref, fp)
        return bulk.finish()

    def attach(self, segment: Segment) -> None:
        """Search a persisted segment's registrations too (`segments.py`): its PDQ tables
        and word postings are memory-mapped, shared with every process that maps them."""
        self._refs.add_many(segment.refs)
        self._mapped += len(segment.refs)
        self._generation += 1
        self._journal.clear()  # not journalled: looks from before it are redone in full
        self._pdq.attach(segment.pdq)
        self._pdq_low.attach(segment.pdq_low)
        for part in segment.words:
            self._words.attach(part)
        for ref, code in segment.legacy:
            self._legacy.add(ref, code)

    def replace_segments(self, segments: list[Segment]) -> None:
        """Search exactly `segments` as the persisted part (another manifest: segments
        written since, or merged), and drop from memory the registrations they cover. Runs
        without awaiting: a lookup sees the index before or after, and both answer alike."""
        through = segments[-1].through if segments else 0
        for segment in segments:
            self._refs.add_many(segment.refs)  # those read into memory already are kept
            for ref, code in segment.legacy:
                if ref not in self._legacy._slot:
                    self._legacy.add(ref, code)
        self._pdq.replace_frozen([s.pdq for s in segments], through)
        self._pdq_low.replace_frozen([s.pdq_low for s in segments], through)
        self._words.replace_persisted([w for s in segments for w in s.words], through)
        self._mapped = sum(len(s.refs) for s in segments)
        self._generation += 1
        self._journal.clear()  # not journalled: looks from before it are redone in full
        self._near = None

    @property
    def resident(self) -> int:
        """Registrations indexed in this process's memory, not in mapped segments."""
        return len(self) - self._mapped

    def adopt(self, columns: Columns) -> int:
        """Bulk-load registrations already collected as `Columns` (see `BulkLoad`)."""
        bulk = BulkLoad(self)
        for ref in columns.refs:
            if ref in self._refs:
                raise ValueError(f"ref {ref} is indexed already")
            self._refs.add(ref)
        if len(columns):
            self._generation += 1
            self._journal.clear()
        bulk._columns = columns
        return bulk.finish()

    def bulk(self) -> BulkLoad:
        """A bulk load fed one fingerprint at a time (from an async store cursor)."""
        return BulkLoad(self)

    def discard(self, ref: int) -> None:
        """Forget `ref` (a reservation whose commit failed, or was replaced by its seq)."""
        if self._refs.remove(ref):
            self._generation += 1
            self._journal.append((ref, None))
            self._pdq.discard(ref)
            self._pdq_low.discard(ref)
            self._words.discard(ref)
            self._legacy.discard(ref)

    def search(self, fp: Fingerprint) -> list[Match]:
        """Stage 1's verdicts from global hashes alone: copies, closest first."""
        near = self._near_hits(fp)
        found = [Match(ref, {"pdq": d}, "copy") for ref, (d, _) in near.items() if d <= PDQ_COPY]
        if "phash" in fp.hashes:
            found += [
                Match(ref, {"phash": d}, "copy" if d <= PHASH_COPY_DISTANCE else "similar")
                for ref, d in self._legacy.search(fp.hashes["phash"], PHASH_SIMILAR_DISTANCE)
            ]
        return rank(found)

    def _near_hits(self, fp: Fingerprint) -> dict[int, tuple[int, tuple[str, str]]]:
        cached = self._near
        if cached is not None and cached[0] is fp and cached[1] == self._generation:
            return cached[2]
        good, _ = _split_codes(fp, query=True)
        near = _hits(self._pdq, good, PDQ_CANDIDATE)
        self._near = (fp, self._generation, near)
        return near

    def look(self, fp: Fingerprint, *, stop_at_copy: bool = True) -> Stage1:
        """`search` and, unless it found a copy and `stop_at_copy`, `candidates`."""
        found = self.search(fp)
        if stop_at_copy and any(m.verdict == "copy" for m in found):
            return Stage1(fp, self._generation, found, None)
        return Stage1(fp, self._generation, found, self.candidates(fp))

    def look_again(self, earlier: Stage1, *, stop_at_copy: bool = True) -> Stage1:
        """`look(earlier.fp)` after the index changed, reading only what changed since.

        The registry looks again after every await (race safety, see `registry`); a full
        look costs a whole PDQ multi-index lookup and word vote, so only the registrations
        added or discarded since `earlier` are looked at, through a scratch matcher holding
        just the added ones, under the same rule. What comes back is `earlier`'s answer minus
        the discarded refs, plus every added ref a full look would report: stage-1 copies
        exactly, PDQ candidates exactly, and word candidates with at least MIN_VOTES — all
        of them, not only those a full look's top MAX_CANDIDATES would keep, and without
        dropping `earlier`'s word candidates that newcomers would outscore. So the list is a
        superset of a full look's: more verification at worst, never a copy unseen.
        """
        fp, gap = earlier.fp, self._generation - earlier.generation
        if gap == 0 and (earlier.candidates is not None or stop_at_copy):
            return earlier
        if earlier.candidates is None or gap > len(self._journal):
            return self.look(fp, stop_at_copy=stop_at_copy)
        changed: dict[int, Fingerprint | None] = {}
        for ref, added in list(self._journal)[len(self._journal) - gap:]:
            changed[ref] = added  # the latest change of each ref wins
        scratch = Matcher(background=False)
        for ref, added in changed.items():
            if added is not None and ref in self._refs:
                scratch.add(ref, added)
        found = [m for m in earlier.found if m.ref not in changed]
        candidates = [c for c in earlier.candidates if c.ref not in changed]
        if len(scratch):
            found = rank(found + scratch.search(fp))
            if stop_at_copy and any(m.verdict == "copy" for m in found):
                return Stage1(fp, self._generation, found, None)
            candidates = sorted(candidates + scratch.candidates(fp, limit=None),
                                key=_candidate_order)
        return Stage1(fp, self._generation, found, candidates)

    def candidates(self, fp: Fingerprint, *, limit: int | None = MAX_CANDIDATES,
                   ) -> list[Candidate]:
        """Registrations stage 2 should verify (excluding stage 1's copies).

        `limit`: the most word-index candidates (None: all with MIN_VOTES votes).
        """
        good, low = _split_codes(fp, query=True)
        near = self._near_hits(fp)
        out: dict[int, Candidate] = {
            ref: Candidate(ref, pdq=d, pdq_pair=pair)
            for ref, (d, pair) in near.items() if d > PDQ_COPY
        }
        # The quality gate: a near code where either side cannot tell photos apart proposes a
        # candidate for the keypoints to confirm, never for the global check.
        gated = _hits(self._pdq_low, good + low, PDQ_CANDIDATE)
        for ref, hit in _hits(self._pdq, low, PDQ_CANDIDATE).items():
            if ref not in gated or hit[0] < gated[ref][0]:
                gated[ref] = hit
        for ref, (d, pair) in gated.items():
            if ref not in out and near.get(ref, (PDQ_CANDIDATE + 1,))[0] > PDQ_COPY:
                out[ref] = Candidate(ref, pdq=d, pdq_pair=pair, gated=True)
        for score in self.word_scores(fp, limit=len(self._words) if limit is None else limit):
            if near.get(score.ref, (PDQ_CANDIDATE + 1,))[0] <= PDQ_COPY:
                continue  # already a copy by its hash
            c = out.get(score.ref, Candidate(score.ref))
            out[score.ref] = Candidate(c.ref, c.pdq, c.pdq_pair, c.gated, score.score,
                                       score.votes)
        return sorted(out.values(), key=_candidate_order)

    def word_scores(self, fp: Fingerprint, *, limit: int, min_votes: int = MIN_VOTES,
                    max_postings: int | None = WORD_POSTINGS_BUDGET,
                    probes: int = WORD_PROBES) -> list[WordScore]:
        """The word index's best `limit` registrations for `fp` (all its keypoints' words,
        and one bit away from the words of `probes` of them)."""
        local = fp.local
        if local is None or not len(local):
            return []
        return self._words.search(*words(local), limit=limit, min_votes=min_votes,
                                  max_distance=SIGNATURE_DISTANCE, sigma=SIGNATURE_SIGMA,
                                  max_postings=max_postings,
                                  probe=index_keypoints(local, probes) if probes else None,
                                  max_probe_postings=WORD_PROBE_POSTINGS)

    def match(self, fp: Fingerprint, features_of: Callable[[int], bytes | None]) -> list[Match]:
        """Both stages in one call (benchmarks, tests, the `check` endpoint off the hot path)."""
        matches = self.search(fp)
        if matches:
            return matches  # a copy by its hash: the service stops here too
        query = fp.local
        for candidate in self.candidates(fp):
            stored = features_of(candidate.ref)
            evidence = (verify(query, stored, candidate.global_pair)
                        if query is not None and stored else None)
            result = decide(candidate, evidence)
            if result is not None:
                matches.append(result)
        return rank(matches)

    def wait(self) -> None:
        """Let background rebuilds finish (tests, benchmarks)."""
        self._pdq.wait()
        self._pdq_low.wait()
        self._words.wait()

    @property
    def nbytes(self) -> int:
        return self._pdq.nbytes + self._pdq_low.nbytes + self._words.nbytes + self._legacy.nbytes

    def describe(self) -> dict[str, Any]:
        """The rule and thresholds in use, JSON-able: served to staff."""
        return {
            "engine": "shotstamp-matching/1",
            "primary": "pdq",
            "fingerprints": {
                "pdq": {"bits": 256, "algorithm": "PDQ (pdqhash) of the 256 px canonical image",
                        "codes": ["pdq: whole image", "pdq_trim: content box inside a uniform "
                                  "border", "pdq_mirror: left-right mirror, query only"]},
                "phash": {"bits": 64, "algorithm": "imagehash.phash of the reduced decode; decides "
                          "only against registrations stored with a phash alone (legacy)"},
                "orb": {"keypoints": "up to 500 ORB keypoints of the canonical image",
                        "words": f"{WORD_BITS}-bit sampled descriptors of the "
                                 f"{INDEX_KEYPOINTS} strongest (those within "
                                 f"{INDEX_CENTRE} of the side from the centre first), "
                                 "in an inverted index",
                        "signatures": f"{SIGNATURE_BITS} other descriptor bits per word; a "
                                      f"vote needs hamming <= {SIGNATURE_DISTANCE}"},
            },
            "copy": [
                f"pdq hamming <= {PDQ_COPY}, both codes of quality >= {PDQ_MIN_QUALITY}",
                f"pdq hamming <= {PDQ_CANDIDATE} (quality-gated), and under the alignment the "
                f"code pair implies global_inliers >= {GLOBAL_INLIERS_COPY} and "
                f"global_agreement >= {GLOBAL_AGREEMENT_COPY}, or global_inliers >= "
                f"{GLOBAL_INLIERS_ALONE} where fewer than {MIN_CELLS} cells are comparable, "
                f"or for an upload of at most {NATIVE_SIDE} px global_residual <= "
                f"{GLOBAL_RESIDUAL_COPY} grey levels (RMS, at the upload's own size) and <= "
                f"{GLOBAL_RESIDUAL_SHARE} x global_contrast over global_pixels >= "
                f"{GLOBAL_RESIDUAL_PIXELS}",
                f"orb_inliers >= {INLIERS_COPY} and photo_agreement >= {AGREEMENT_COPY}",
                f"max(orb_inliers, orb_rematched) >= {INLIERS_COPY_FEW} and photo_agreement "
                f">= {AGREEMENT_COPY_FEW} or photo_overlay >= {OVERLAY_COPY} (orb_rematched: "
                f"keypoints re-matched under a transform of >= {REMATCH_MIN_INLIERS} inliers)",
                f"max(orb_inliers, orb_rematched) >= {INLIERS_ALONE} when fewer than "
                f"{MIN_CELLS} thumbnail cells are comparable (near-white)",
                f"orb_inliers >= {INLIERS_CLEAN}, >= {INLIER_SHARE_CLEAN} of orb_matches, and "
                f"photo_agreement >= {AGREEMENT_CLEAN} or fewer than {MIN_CELLS} comparable "
                "cells",
            ],
            "similar": [
                f"orb_inliers >= {INLIERS_SIMILAR} and photo_agreement >= {AGREEMENT_SIMILAR}",
            ],
            "plausible_transform": {"scale": list(SCALE_RANGE),
                                    "max_rotation_degrees": MAX_ROTATION},
            "quality_gate": f"pdq quality < {PDQ_MIN_QUALITY}: the hash only proposes "
                            "candidates; local features decide",
            "second_stage": {"max_candidates": MAX_CANDIDATES, "min_word_votes": MIN_VOTES,
                             "probed_keypoints": WORD_PROBES,
                             "probe_postings_budget": WORD_PROBE_POSTINGS,
                             "word_postings_budget": WORD_POSTINGS_BUDGET},
            "legacy": f"registrations stored with a phash only: phash hamming <= "
                      f"{PHASH_COPY_DISTANCE} is a copy, <= {PHASH_SIMILAR_DISTANCE} similar",
            "registrations": len(self),
        }


class Columns:
    """What the indexes need of many fingerprints, as flat arrays: a bulk load's input, and
    a persisted segment's (`segments.py`). Only the codes and the strongest keypoints' words
    are kept per registration (~700 bytes), never the feature blobs."""

    def __init__(self) -> None:
        self.refs: list[int] = []
        self._stored: dict[str, tuple[list[int], list[bytes], list[int]]] = {
            "good": ([], [], []), "low": ([], [], [])}
        self._word_refs: list[int] = []
        self._counts: list[int] = []
        self._word_ids: list[np.ndarray] = []
        self._word_angles: list[np.ndarray] = []
        self._word_signatures: list[np.ndarray] = []
        self._legacy: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self.refs)

    def add(self, ref: int, fp: Fingerprint) -> None:
        self.refs.append(ref)
        if _legacy(fp):
            self._legacy.append((ref, fp.hashes["phash"]))
            return
        for kind, codes in zip(("good", "low"), _split_codes(fp, query=False), strict=True):
            refs, blobs, tags = self._stored[kind]
            for name, code in codes:
                refs.append(ref)
                blobs.append(code)
                tags.append(_STORED_CODES.index(name))
        local = fp.local
        if local is not None and len(local):
            ids, angles, signatures = words(local, index_keypoints(local))
            self._word_refs.append(ref)
            self._counts.append(len(ids))
            self._word_ids.append(ids)  # new arrays, not views into the feature blob
            self._word_angles.append(angles)
            self._word_signatures.append(signatures)

    def codes(self, kind: Literal["good", "low"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(refs, (n, 32) codes, tags) of the PDQ codes of enough quality, or the others."""
        refs, blobs, tags = self._stored[kind]
        return (np.array(refs, np.int64),
                np.frombuffer(b"".join(blobs), np.uint8).reshape(-1, 32),
                np.array(tags, np.uint8))

    def words(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(refs, counts, words, angles, signatures) as `WordIndex.add_many` takes them."""
        if not self._word_refs:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint32),
                    np.zeros(0, np.uint8), np.zeros(0, np.uint32))
        return (np.array(self._word_refs, np.int64), np.array(self._counts, np.int64),
                np.concatenate(self._word_ids), np.concatenate(self._word_angles),
                np.concatenate(self._word_signatures))

    def legacy(self) -> list[tuple[int, bytes]]:
        """(ref, 8-byte pHash) of registrations stored with a pHash alone."""
        return list(self._legacy)


class BulkLoad:
    """Collects what the indexes need of many fingerprints (`Columns`), then builds them once.

    A store's worth can stream through. Until `finish`, the collected registrations are not
    searchable.
    """

    def __init__(self, matcher: Matcher) -> None:
        self._matcher = matcher
        self._columns = Columns()

    def add(self, ref: int, fp: Fingerprint) -> None:
        m = self._matcher
        if ref in m._refs:
            return
        m._refs.add(ref)
        m._generation += 1
        m._journal.clear()  # not journalled: looks from before it are redone in full
        self._columns.add(ref, fp)

    def finish(self) -> int:
        """Build the indexes over what was collected; returns how many were added."""
        m, columns = self._matcher, self._columns
        for ref, code in columns.legacy():
            m._legacy.add(ref, code)
        for index, kind in ((m._pdq, "good"), (m._pdq_low, "low")):
            refs, codes, tags = columns.codes(kind)  # type: ignore[arg-type]
            if len(refs):
                index.add_many(refs, codes, tags)
        refs, counts, ids, angles, signatures = columns.words()
        if len(refs):
            m._words.add_many(refs, counts, ids, angles, signatures)
        self._columns = Columns()
        return len(columns)


def verify(query: LocalFeatures | Fingerprint | bytes, stored: LocalFeatures | bytes,
           pdq_pair: tuple[str, str] | None = None) -> Evidence:
    """Stage 2 for one candidate: pure, for the process pool. Accepts blobs or parsed features.

    Pass the candidate's `global_pair` as `pdq_pair`.
    """
    if isinstance(query, Fingerprint):
        parsed = query.local
        if parsed is None:
            return Evidence()
        query = parsed
    if isinstance(query, bytes):
        query = LocalFeatures.from_bytes(query)
    if isinstance(stored, bytes):
        stored = LocalFeatures.from_bytes(stored)
    return verify_pair(query, stored, pdq_pair)


def verify_many(query: bytes, stored: Iterable[tuple[int, bytes, tuple[str, str] | None]],
                ) -> list[tuple[int, Evidence]]:
    """`verify` for several candidates in one pool task (the query is pickled once).

    `stored`: (ref, feature blob, the candidate's `global_pair`).
    """
    parsed = LocalFeatures.from_bytes(query)
    return [(ref, verify(parsed, blob, pair)) for ref, blob, pair in stored]


def _plausible(evidence: Evidence) -> bool:
    return (SCALE_RANGE[0] <= evidence.scale <= SCALE_RANGE[1]
            and abs(evidence.rotation) <= MAX_ROTATION)


def _pixels_match(evidence: Evidence) -> bool:
    """A small upload's pixels, one by one, under its PDQ alignment (GLOBAL_RESIDUAL_*)."""
    if (evidence.global_residual is None or evidence.global_pixels is None
            or evidence.global_contrast is None):
        return False
    return (evidence.global_pixels >= GLOBAL_RESIDUAL_PIXELS
            and evidence.global_residual <= min(GLOBAL_RESIDUAL_COPY,
                                                GLOBAL_RESIDUAL_SHARE * evidence.global_contrast))


def decide(candidate: Candidate, evidence: Evidence | None) -> Match | None:
    """The verdict for one stage-2 candidate from its evidence."""
    distances: dict[str, float | int] = {}
    if candidate.pdq is not None:
        distances["pdq"] = candidate.pdq
    if candidate.votes:
        distances["word_votes"] = candidate.votes
    if evidence is None:
        return None
    distances.update(evidence.as_dict())
    if (candidate.global_pair is not None and evidence.global_agreement is not None
            and evidence.global_inliers is not None
            and ((evidence.global_agreement >= GLOBAL_AGREEMENT_COPY
                  and evidence.global_inliers >= GLOBAL_INLIERS_COPY)
                 or (evidence.global_cells is not None and evidence.global_cells < MIN_CELLS
                     and evidence.global_inliers >= GLOBAL_INLIERS_ALONE)
                 or _pixels_match(evidence))):
        return Match(candidate.ref, distances, "copy", evidence.global_geometry)
    if not evidence.inliers or not _plausible(evidence):
        return None
    inliers, agreement = evidence.inliers, evidence.agreement
    support = max(inliers, evidence.rematched)
    if ((inliers >= INLIERS_COPY and agreement >= AGREEMENT_COPY)
            or (support >= INLIERS_COPY_FEW
                and (agreement >= AGREEMENT_COPY_FEW or evidence.overlay >= OVERLAY_COPY))
            or (support >= INLIERS_ALONE and evidence.cells < MIN_CELLS)
            or (inliers >= INLIERS_CLEAN and inliers >= INLIER_SHARE_CLEAN * evidence.matches
                and (agreement >= AGREEMENT_CLEAN or evidence.cells < MIN_CELLS))):
        return Match(candidate.ref, distances, "copy", evidence.geometry)
    if inliers >= INLIERS_SIMILAR and agreement >= AGREEMENT_SIMILAR:
        return Match(candidate.ref, distances, "similar", evidence.geometry)
    return None


def rank(matches: list[Match]) -> list[Match]:
    """Copies first, then similar; within each, closest PDQ then oldest; one per ref."""
    best: dict[int, Match] = {}
    for m in matches:
        if m.ref not in best or (m.verdict == "copy" and best[m.ref].verdict != "copy"):
            best[m.ref] = m
    ordered = sorted(best.values(), key=lambda m: (m.verdict != "copy",
                                                   m.distances.get("pdq", 256), m.ref))
    return ordered[:MAX_MATCHES]
