"""Is this upload a copy of an earlier registration? The two stages that gather the evidence.

The rule that turns evidence into a verdict is the clause table in `rule` (one place; also
docs/matching-rule.md, generated from it). This module finds what the clauses read.

Stage 1, fast, in the event loop (`Matcher.search`, `Matcher.candidates`): exact PDQ range
search over the whole-image and content-box hashes of every registration (`index.HammingIndex`),
queried with the upload's whole-image, content-box and mirrored hashes; and a vote of the
upload's ORB visual words in an inverted file (`index.WordIndex`). Stage 1's clauses decide
what they can here (the bulk of real copies); the rest become candidates.

Stage 2, in the process pool, only for the few candidates stage 1 returns (`verify`, pure):
the stored features of each candidate are fetched from the database by ref and compared with
the upload's (`verification.verify_pair`); `decide` applies stage 2's clauses to the evidence.

Low-information images (PDQ quality < PDQ_MIN_QUALITY: blank, flat, low contrast) are still
indexed and searched, in an index of their own, but a PDQ distance between them only makes
a candidate for stage 2, where local features must confirm it.

Service protocol (race-safe, see `registry`): fingerprint in the pool → `search` (no await) →
a `copy` decides at once; otherwise `candidates` and `add` of the reservation (no await) →
fetch features of the candidates → `verify` in the pool → `decide`; a `copy` of another
seller's registration discards the reservation and answers 409.

Registrations stored before the engine carry only a 64-bit `phash` (no PDQ, no features): they
stay in a plain pHash array (`_PhashIndex`) and are matched by the global-hash rule (clauses
`phash`, `phash_similar`), so upgrading does not unprotect them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import numpy as np

from shotstamp_service.matching.features import (
    ANGLE_BINS,
    SIGNATURE_BITS,
    WORD_BITS,
    LocalFeatures,
    VisualWords,
    words,
)
from shotstamp_service.matching.fingerprint import Fingerprint
from shotstamp_service.matching.index import SIGNATURE_BITS as INDEX_SIGNATURE_BITS
from shotstamp_service.matching.index import STORED_SIGNATURE_BITS as INDEX_STORED_SIGNATURE_BITS
from shotstamp_service.matching.index import WORD_BITS as INDEX_WORD_BITS
from shotstamp_service.matching.index import (
    HammingIndex,
    WordIndex,
    WordQuery,
    WordScore,
    stored_signatures,
)
from shotstamp_service.matching.ranking import QueryWords, StoredKeypoints, consistency
from shotstamp_service.matching.rule import (
    AGREEMENT_CLEAN,
    AGREEMENT_COPY,
    AGREEMENT_COPY_FEW,
    AGREEMENT_SIMILAR,
    GLOBAL_AGREEMENT_COPY,
    GLOBAL_INLIERS_ALONE,
    GLOBAL_INLIERS_COPY,
    GLOBAL_RESIDUAL_COPY,
    GLOBAL_RESIDUAL_PIXELS,
    GLOBAL_RESIDUAL_SHARE,
    INLIER_SHARE_CLEAN,
    INLIERS_ALONE,
    INLIERS_CLEAN,
    INLIERS_COPY,
    INLIERS_COPY_FEW,
    INLIERS_SIMILAR,
    MAX_ROTATION,
    OVERLAY_COPY,
    PDQ_CANDIDATE,
    PDQ_COPY,
    PDQ_MIN_QUALITY,
    PHASH_COPY_DISTANCE,
    PHASH_SIMILAR_DISTANCE,
    SCALE_RANGE,
    Verdict,
    clause_lines,
    clause_named,
    describe_rule,
    explain,
    figures,
    first_clause,
)
from shotstamp_service.matching.verification import (
    PHOTOMETRY_MIN_INLIERS,
    Evidence,
    Geometry,
    verify_pair,
)

if TYPE_CHECKING:
    from shotstamp_service.matching.segments import Segment

__all__ = [
    "AGREEMENT_CLEAN",
    "AGREEMENT_COPY",
    "AGREEMENT_COPY_FEW",
    "AGREEMENT_SIMILAR",
    "GLOBAL_AGREEMENT_COPY",
    "GLOBAL_INLIERS_ALONE",
    "GLOBAL_INLIERS_COPY",
    "GLOBAL_RESIDUAL_COPY",
    "GLOBAL_RESIDUAL_PIXELS",
    "GLOBAL_RESIDUAL_SHARE",
    "INLIERS_ALONE",
    "INLIERS_CLEAN",
    "INLIERS_COPY",
    "INLIERS_COPY_FEW",
    "INLIERS_SIMILAR",
    "INLIER_SHARE_CLEAN",
    "MAX_CANDIDATES",
    "MAX_ROTATION",
    "MIN_CONSISTENT",
    "OVERLAY_COPY",
    "PDQ_CANDIDATE",
    "PDQ_COPY",
    "PDQ_MIN_QUALITY",
    "PHASH_COPY_DISTANCE",
    "PHASH_SIMILAR_DISTANCE",
    "SCALE_RANGE",
    "SHORTLIST",
    "Candidate",
    "IndexEntry",
    "Match",
    "Matcher",
    "QuerySides",
    "Stage1",
    "consistent_keypoints",
    "could_match",
    "decide",
    "index_entry",
    "shortlist",
    "verify",
    "verify_many",
    "word_query",
]

# -- the index's constants (the rule's thresholds are in `rule`; history for both:
# docs/matching-history.md) ------------------------------------------------------------------

# Keypoints indexed per registration (128 × 4 bytes): 90 % of 90 % crops found, 2.3× less than all.
INDEX_KEYPOINTS = 128  # history: #index_keypoints
# Central box (of the side, from the centre) whose keypoints are indexed first: crops keep it.
INDEX_CENTRE = 0.35  # history: #index_centre
# Word candidates per upload stage 1 hands over (the shortlist); of them the MAX_CANDIDATES
# best word scores are fully verified, as before it, and so are the MAX_CANDIDATES most
# consistent (`ranking.consistency`: where the matched keypoints sit) with MIN_CONSISTENT.
SHORTLIST = 64  # history: #shortlist-max_candidates-and-min_consistent
MAX_CANDIDATES = 3  # history: #shortlist-max_candidates-and-min_consistent
MIN_CONSISTENT = 8  # history: #shortlist-max_candidates-and-min_consistent
# The orientation-consistent words a word candidate needs.
MIN_VOTES = 2  # history: #index_keypoints
# Postings a word lookup reads at most, rarest words first (keeps it under ~10 ms at 10 M).
WORD_POSTINGS_BUDGET = 200_000  # history: #word_postings_budget
# A vote needs signatures within this many of 32 bits, weighted exp(-(d / sigma)²).
SIGNATURE_DISTANCE = 10  # history: #signature_distance-and-signature_sigma
SIGNATURE_SIGMA: float | None = 6.0  # history: #signature_distance-and-signature_sigma
# Query keypoints whose words are also looked up one bit away, and those probes' postings cap.
WORD_PROBES = 64  # history: #word_probes-and-word_probe_postings
WORD_PROBE_POSTINGS = 2_000  # history: #word_probes-and-word_probe_postings
# The probe words' postings where the exact words fill WORD_POSTINGS_BUDGET (at scale), beyond it.
WORD_PROBE_POSTINGS_AT_SCALE = 20_000  # history: #word_probe_postings_at_scale
MAX_MATCHES = 20  # the most matches one answer lists

# Index changes remembered for `Matcher.look_again` (a few in-flight uploads' worth; each
# holds its fingerprint, ~15 KB with features). An older look is redone in full.
JOURNAL_CHANGES = 512
# Word-lookup query sides kept (`Matcher._queries`, ≈ 25 KB each): the uploads in flight.
QUERIES_KEPT = 64

# The word index stores signatures as uint32 and tabulates their distances up to its own
# SIGNATURE_BITS: it must be the width local_features samples.
assert SIGNATURE_BITS == INDEX_SIGNATURE_BITS
# Its probes flip the low WORD_BITS bits of a word: the width local_features samples.
assert WORD_BITS == INDEX_WORD_BITS
# verify_pair skips the photometry below PHOTOMETRY_MIN_INLIERS: no rule may ask for less.
assert min(INLIERS_COPY, INLIERS_COPY_FEW, INLIERS_SIMILAR) >= PHOTOMETRY_MIN_INLIERS

@dataclass(frozen=True)
class Match:
    """A registration the upload matches, with the evidence per fingerprint.

    `clause`: the rule's clause that decided (`rule.CLAUSES`); `explanation`: its words.
    """

    ref: int
    distances: dict[str, float | int]
    verdict: Verdict
    clause: str = field(default="", compare=False)
    pdq_pair: tuple[str, str] | None = field(default=None, compare=False)  # for the words
    # Stage 2's fitted alignment of the upload onto the registration (stage-1 copies have none)
    geometry: Geometry | None = field(default=None, compare=False)

    @property
    def stage(self) -> int:
        return clause_named(self.clause).stage if self.clause else 0

    @property
    def explanation(self) -> str:
        """In words, made when asked: most matches decided are never shown."""
        return explain(clause_named(self.clause), self.distances, self.pdq_pair) \
            if self.clause else ""


def _match(ref: int, distances: dict[str, float | int], clause_name: str,
           pdq_pair: tuple[str, str] | None = None, geometry: Geometry | None = None) -> Match:
    return Match(ref, distances, clause_named(clause_name).verdict, clause_name, pdq_pair,
                 geometry)


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
    def by_words(self) -> bool:
        """Proposed by the word index alone: verified only if `shortlist` picks it."""
        return self.pdq is None

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


def _candidate_order(c: Candidate) -> tuple[bool, int, float, int]:
    return (c.pdq is None, c.pdq or 0, -c.words, c.ref)  # words: as `WordIndex.search` ranks


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


_T = TypeVar("_T")

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


@dataclass(frozen=True)
class _Entry:
    """What indexing one fingerprint takes. Made once per fingerprint (`Matcher._entry`): a
    registration is added as a reservation, then under its seq, and other uploads'
    `look_again` read it too."""

    legacy: bool
    good: list[tuple[str, bytes]]
    low: list[tuple[str, bytes]]
    words: VisualWords | None  # of its INDEX_KEYPOINTS


IndexEntry = _Entry  # opaque outside the engine: made by `Matcher.entry`, taken by `add`
# id(fp) → (fp, its `WordQuery`): `Matcher.query_sides`, for a `Matcher.scratch`.
QuerySides = OrderedDict[int, tuple[Fingerprint, WordQuery | None]]


def _entry(fp: Fingerprint) -> _Entry:
    if _legacy(fp):
        return _Entry(True, [], [], None)
    good, low = _split_codes(fp, query=False)
    local = fp.local
    indexed = words(local, index_keypoints(local)) if local is not None and len(local) else None
    return _Entry(False, good, low, indexed)


def _word_query(fp: Fingerprint) -> WordQuery | None:
    """The query side of `fp`'s word lookups with the default probes (`Matcher.word_scores`)."""
    local = fp.local
    if local is None or not len(local):
        return None
    return WordQuery.of(*words(local), probe=index_keypoints(local, WORD_PROBES)
                        if WORD_PROBES else None)


def index_entry(fp: Fingerprint) -> IndexEntry:
    """What indexing `fp` takes, made here (`Matcher.entry` keeps the ones it makes)."""
    return _entry(fp)


def word_query(fp: Fingerprint) -> WordQuery | None:
    """The query side `Matcher.word_scores` makes for `fp` (None: it has no keypoints)."""
    return _word_query(fp)


# The stored signature bits a vote may differ in: `WordIndex.search_query`'s own bound
# (SIGNATURE_DISTANCE over the full signature, halved with the bits the index keeps).
_VOTE_BITS = SIGNATURE_DISTANCE // (INDEX_SIGNATURE_BITS // INDEX_STORED_SIGNATURE_BITS)


def could_match(fp: Fingerprint, query: WordQuery | None, stored: Fingerprint,
                entry: IndexEntry) -> bool:
    """Whether a look for `fp` (`query`: its `word_query`) in a matcher holding `stored`
    (indexed as `entry`) could report it, as a match or a candidate. False only when no
    PDQ code of `fp` (mirror included) is within PDQ_CANDIDATE of one of `stored`'s and
    fewer than MIN_VOTES of `stored`'s postings could vote: a posting is one per distinct
    indexed word (the signature of its first keypoint, as `WordIndex.add` keeps it), and
    votes only for the query word equal to it, exact or probed (query words are distinct),
    whose stored signature is within SIGNATURE_DISTANCE (`near_votes`' test): then `match`
    finds nothing there. A bound on both stages' inputs, no search."""
    if entry.legacy or _legacy(fp):
        return True
    codes = [int.from_bytes(code, "big") for _, code in entry.good + entry.low]
    for _, code, _ in fp.pdq_codes(query=True):
        mine = int.from_bytes(code, "big")
        if any((mine ^ theirs).bit_count() <= PDQ_CANDIDATE + 1 for theirs in codes):
            return True  # one bit of margin: whichever way the index bounds its radius
    if query is None or entry.words is None:
        return False
    indexed, first = np.unique(np.asarray(entry.words[0], np.uint32), return_index=True)
    # Each indexed word's query word (query words are distinct): the exact part, then the
    # probe part, each sorted (`WordQuery`); -1 where it has none.
    q = np.full(len(indexed), -1, np.int64)
    for lo, hi in ((0, query.exact), (query.exact, len(query.words))):
        if hi > lo:
            part = query.words[lo:hi]
            at = np.minimum(np.searchsorted(part, indexed), hi - lo - 1)
            q = np.where(part[at] == indexed, lo + at, q)
    hit = np.flatnonzero(q >= 0)
    if len(hit) < MIN_VOTES:
        return False
    q, first = q[hit], first[hit]
    near = np.bitwise_count(
        query.signatures[q] ^ stored_signatures(np.asarray(entry.words[2])[first])) <= _VOTE_BITS
    if np.count_nonzero(near) < MIN_VOTES:
        return False
    stored_angles = np.asarray(entry.words[1])[first[near]].astype(np.int64)
    votes = np.bincount((query.angles[q[near]] - stored_angles) % ANGLE_BINS,
                        minlength=ANGLE_BINS)  # by angle difference, as `best_bins` bins them
    # A vote counts in its bin and the next; the best bin needs MIN_VOTES.
    return int((votes + np.roll(votes, 1)).max()) >= MIN_VOTES


def _cached(cache: OrderedDict[int, tuple[Fingerprint, _T]], fp: Fingerprint,
            make: Callable[[Fingerprint], _T], size: int = JOURNAL_CHANGES) -> _T:
    """`make(fp)`, remembered for the latest `size` fingerprints in `cache`."""
    key = id(fp)
    held = cache.get(key)
    if held is not None and held[0] is fp:
        cache.move_to_end(key)
        return held[1]
    value = make(fp)
    cache[key] = (fp, value)
    if len(cache) > size:
        cache.popitem(last=False)
    return value


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
    # id(fp) → (fp, its `_Entry`) of the latest few added (the fingerprint is held, so its
    # id is not reused while it is here).
    _entry_cache: OrderedDict[int, tuple[Fingerprint, _Entry]] = field(
        init=False, default_factory=OrderedDict, repr=False)
    # id(fp) → (fp, its `WordQuery`) of the latest QUERIES_KEPT looked up: an upload's looks
    # (`look`, then `look_again`'s scratch matchers) make its query side once.
    _queries: OrderedDict[int, tuple[Fingerprint, WordQuery | None]] = field(
        init=False, default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        self._pdq = HammingIndex(max_radius=PDQ_CANDIDATE, background=self.background)
        self._pdq_low = HammingIndex(max_radius=PDQ_CANDIDATE, background=self.background)
        self._words = WordIndex(background=self.background)

    def __len__(self) -> int:
        return self._refs.count

    @property
    def generation(self) -> int:
        """Changes so far (adds, discards, loads): a `Stage1` is as of one of them."""
        return self._generation

    def add(self, ref: int, fp: Fingerprint, entry: IndexEntry | None = None) -> None:
        """Index registration `ref`; adding a ref already present does nothing. `entry`:
        `fp`'s, made already (`entry`, by this matcher or another on any thread)."""
        if ref in self._refs:
            return
        self._refs.add(ref)
        self._generation += 1
        self._journal.append((ref, fp))
        if entry is None:
            entry = self._entry(fp)
        else:  # kept like one made here: `look_again`'s scratch matchers read it
            given = entry
            _cached(self._entry_cache, fp, lambda _: given)
        if entry.legacy:
            self._legacy.add(ref, fp.hashes["phash"])
            return
        _add_codes(self._pdq, ref, entry.good)
        _add_codes(self._pdq_low, ref, entry.low)
        if entry.words is not None:
            self._words.add(ref, *entry.words)

    def _entry(self, fp: Fingerprint) -> _Entry:
        return _cached(self._entry_cache, fp, _entry)

    def entry(self, fp: Fingerprint) -> IndexEntry:
        """What indexing `fp` takes (its keypoints' words, its PDQ codes), made once: a
        registration followed from another process is parsed by one thread for both the
        index and the commit lock's screen (`registry`)."""
        return self._entry(fp)

    def query_sides(self, fps: Iterable[Fingerprint]) -> QuerySides:
        """The query sides (`WordQuery`, read-only) this matcher has made for `fps`, for a
        `scratch` matcher on another thread: their looks there do not make them again."""
        out: QuerySides = OrderedDict()
        for fp in fps:
            held = self._queries.get(id(fp))
            if held is not None and held[0] is fp:
                out[id(fp)] = held
        return out

    @classmethod
    def scratch(cls, sides: QuerySides | None = None) -> Matcher:
        """An empty matcher without background rebuilds, sharing no state with any other
        but the read-only query sides `sides` (`query_sides`)."""
        out = cls(background=False)
        if sides:
            out._queries = OrderedDict(sides)
        return out

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

    def rekey(self, old: int, new: int, fp: Fingerprint) -> None:
        """`discard(old)` then `add(new, fp)`: a reservation committed as seq `new`, with
        `fp` the fingerprint `old` was added with. Indexed once: where `old`'s codes and
        postings are still in the indexes' tails (a few milliseconds after the reservation,
        nearly always) they are re-keyed in place, else discarded and added again. Either
        way the journal, the generation and every answer are those of the two calls
        (docs/index.md, "Each upload indexed once")."""
        if old not in self._refs or new in self._refs:
            self.discard(old)
            self.add(new, fp)
            return
        entry = self._entry(fp)
        self._refs.remove(old)
        self._refs.add(new)
        self._generation += 2
        self._journal.append((old, None))
        self._journal.append((new, fp))
        if entry.legacy:
            self._legacy.discard(old)
            self._legacy.add(new, fp.hashes["phash"])
            return
        for index, codes in ((self._pdq, entry.good), (self._pdq_low, entry.low)):
            if codes and not index.rekey(old, new):
                index.discard(old)
                _add_codes(index, new, codes)
        if entry.words is not None and not self._words.rekey(old, new):
            self._words.discard(old)
            self._words.add(new, *entry.words)

    def search(self, fp: Fingerprint) -> list[Match]:
        """Stage 1's verdicts from global hashes alone: copies, closest first."""
        near = self._near_hits(fp)
        found = []
        for ref, (d, pair) in near.items():
            clause = first_clause({"pdq": d}, stage=1)
            if clause is not None:
                found.append(_match(ref, {"pdq": d}, clause.name, pair))
        if "phash" in fp.hashes:
            for ref, d in self._legacy.search(fp.hashes["phash"], PHASH_SIMILAR_DISTANCE):
                clause = first_clause({"phash": d}, stage=1)
                if clause is not None:
                    found.append(_match(ref, {"phash": d}, clause.name))
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

    def look_again(self, earlier: Stage1, *, stop_at_copy: bool = True,
                   below: int | None = None) -> Stage1:
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
        `below`: only registrations added with a ref below it are looked at (the registry's
        guard, which has no use for reservations: they sit above every stored ref).
        """
        fp, gap = earlier.fp, self._generation - earlier.generation
        if gap == 0 and (earlier.candidates is not None or stop_at_copy):
            return earlier
        if earlier.candidates is None or gap > len(self._journal):
            return self.look(fp, stop_at_copy=stop_at_copy)
        changed: dict[int, Fingerprint | None] = {}
        for ref, added in list(self._journal)[len(self._journal) - gap:]:
            changed[ref] = added  # the latest change of each ref wins
        scratch: Matcher | None = None
        for ref, added in changed.items():
            if added is not None and ref in self._refs and (below is None or ref < below):
                if scratch is None:
                    scratch = Matcher(background=False)
                    scratch._entry_cache = self._entry_cache  # their entries are made already
                    scratch._queries = self._queries  # and `fp`'s query side
                scratch.add(ref, added)
        found = [m for m in earlier.found if m.ref not in changed]
        candidates = [c for c in earlier.candidates if c.ref not in changed]
        if scratch is not None:
            found = rank(found + scratch.search(fp))
            if stop_at_copy and any(m.verdict == "copy" for m in found):
                return Stage1(fp, self._generation, found, None)
            candidates = sorted(candidates + scratch.candidates(fp, limit=None),
                                key=_candidate_order)
        return Stage1(fp, self._generation, found, candidates)

    def candidates(self, fp: Fingerprint, *, limit: int | None = SHORTLIST,
                   ) -> list[Candidate]:
        """Registrations stage 2 should consider (excluding stage 1's copies): every PDQ
        candidate, verified in full, and the word index's best, of which `shortlist` picks the
        few to verify.

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
                    probes: int = WORD_PROBES,
                    probe_postings_at_scale: int | None = None) -> list[WordScore]:
        """The word index's best `limit` registrations for `fp` (all its keypoints' words,
        and one bit away from the words of `probes` of them)."""
        local = fp.local
        if local is None or not len(local):
            return []
        query = (_cached(self._queries, fp, _word_query, QUERIES_KEPT) if probes == WORD_PROBES
                 else WordQuery.of(*words(local), probe=index_keypoints(local, probes)
                                   if probes else None))
        assert query is not None  # made from the same non-empty local features
        return self._words.search_query(query, limit=limit, min_votes=min_votes,
                                        max_distance=SIGNATURE_DISTANCE, sigma=SIGNATURE_SIGMA,
                                        max_postings=max_postings,
                                        max_probe_postings=WORD_PROBE_POSTINGS,
                                        scale_probe_postings=WORD_PROBE_POSTINGS_AT_SCALE
                                        if probe_postings_at_scale is None
                                        else probe_postings_at_scale)

    def match(self, fp: Fingerprint, features_of: Callable[[int], bytes | None], *,
              limit: int | None = SHORTLIST, after: int | None = None,
              past_similar: bool = False) -> list[Match]:
        """Both stages in one call (benchmarks, tests, the `check` endpoint off the hot path,
        and the registry's screen under the commit lock, on the store's thread).

        `limit`: the most word-index candidates, as `candidates` (None: all with MIN_VOTES).
        `after`: only refs above it are reported or verified (the screen: what its upload's
        pre-lock look covered is not looked at again). `past_similar`: a stage-1 match that
        is only similar does not end the search, so stage 2 may still find a copy.
        """
        matches = [m for m in self.search(fp) if after is None or m.ref > after]
        if any(m.verdict == "copy" for m in matches) or (matches and not past_similar):
            return matches  # decided by its hash: the service stops here too
        query = fp.local
        if query is None:
            return matches
        candidates = [c for c in self.candidates(fp, limit=limit)
                      if after is None or c.ref > after]
        blobs = {c.ref: features_of(c.ref) for c in candidates}
        evidence = dict(verify_many(query, [(c.ref, blob, c.global_pair, c.by_words)
                                            for c in candidates
                                            if (blob := blobs[c.ref])]))
        for candidate in candidates:
            result = decide(candidate, evidence.get(candidate.ref))
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
            "copy": clause_lines("copy"),
            "similar": clause_lines("similar"),
            "plausible_transform": {"scale": list(SCALE_RANGE),
                                    "max_rotation_degrees": MAX_ROTATION},
            "quality_gate": f"pdq quality < {PDQ_MIN_QUALITY}: the hash only proposes "
                            "candidates; local features decide",
            "second_stage": {"shortlist": SHORTLIST, "max_candidates": MAX_CANDIDATES,
                             "min_consistent_keypoints": MIN_CONSISTENT,
                             "min_word_votes": MIN_VOTES,
                             "probed_keypoints": WORD_PROBES,
                             "probe_postings_budget": WORD_PROBE_POSTINGS,
                             "probe_postings_at_scale": WORD_PROBE_POSTINGS_AT_SCALE,
                             "word_postings_budget": WORD_POSTINGS_BUDGET},
            "legacy": "; ".join(line for line in clause_lines("copy") + clause_lines("similar")
                                if line.startswith("phash")),
            "rule": describe_rule(),
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


def verify(query: LocalFeatures | Fingerprint | bytes, stored: LocalFeatures | bytes | memoryview,
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
    if isinstance(stored, bytes | memoryview):  # a blob the pool received out of band
        stored = LocalFeatures.from_bytes(stored)
    return verify_pair(query, stored, pdq_pair)


# One stage-2 item: (ref, feature blob, the candidate's `global_pair`[, its `by_words`]).
Stage2Item = tuple[int, bytes, tuple[str, str] | None] \
    | tuple[int, bytes, tuple[str, str] | None, bool]


def consistent_keypoints(query: LocalFeatures | QueryWords,
                         stored: Sequence[LocalFeatures] | Sequence[bytes]) -> np.ndarray:
    """`ranking.consistency` of each stored image's indexed keypoints (`index_keypoints`: the
    ones that voted in the word index; central first, so a crop keeps them). On the corpus
    the 128 beat all 500: the same share of originals above every look-alike, at 3/4 of
    the cost (docs/matching-history.md). `stored`: parsed features, or feature blobs (only
    their keypoints are read)."""
    if all(isinstance(s, LocalFeatures) for s in stored):
        parsed = cast("Sequence[LocalFeatures]", stored)
        return consistency(query, parsed, [index_keypoints(features) for features in parsed])
    blobs = cast("Sequence[bytes]", stored)
    return consistency(query, StoredKeypoints.from_blobs(blobs, INDEX_KEYPOINTS, INDEX_CENTRE))


def shortlist(query: LocalFeatures | QueryWords, stored: Sequence[tuple[int, bytes]],
              keep: int = MAX_CANDIDATES) -> list[int]:
    """The refs of the word candidates to verify (`stored`: (ref, feature blob) in the word
    index's order): the first `keep`, and the `keep` whose matched keypoints agree best on
    one similarity transform, each with at least MIN_CONSISTENT."""
    if len(stored) <= keep:
        return [ref for ref, _ in stored]
    scores = consistent_keypoints(query, [blob for _, blob in stored]).tolist()
    order = sorted(range(len(stored)), key=lambda i: -scores[i])  # stable: word order on ties
    consistent = [stored[i][0] for i in order[:keep] if scores[i] >= MIN_CONSISTENT]
    first = [ref for ref, _ in stored[:keep]]
    return first + [ref for ref in consistent if ref not in first]


def verify_many(query: bytes | LocalFeatures, stored: Iterable[Stage2Item],
                ) -> list[tuple[int, Evidence]]:
    """`verify` for one upload's candidates in one pool task (the query is pickled once).

    `stored`: (ref, feature blob, the candidate's `global_pair`, and its `by_words`). The
    candidates proposed by the word index alone are verified only if `shortlist` picks them;
    the others get no evidence (no verdict), and of their blobs only the keypoints are read.
    """
    parsed = LocalFeatures.from_bytes(query) if isinstance(query, bytes) else query
    items = [(item[0], item[1], item[2], len(item) > 3 and item[3]) for item in stored]
    chosen = set(shortlist(parsed, [(ref, blob) for ref, blob, _, by_words in items if by_words]))
    return [(ref, verify(parsed, blob, pair)) for ref, blob, pair, by_words in items
            if not by_words or ref in chosen]


def decide(candidate: Candidate, evidence: Evidence | None) -> Match | None:
    """The verdict for one stage-2 candidate from its evidence: the first stage-2 clause of
    `rule.CLAUSES` that holds."""
    distances: dict[str, float | int] = {}
    if candidate.pdq is not None:
        distances["pdq"] = candidate.pdq
    if candidate.votes:
        distances["word_votes"] = candidate.votes
    if evidence is None:
        return None
    clause = first_clause(figures(candidate.pdq, candidate.global_pair, evidence), stage=2)
    if clause is None:
        return None
    distances.update(evidence.as_dict())
    # A clause that reads the PDQ alignment decides on it; the others on the keypoints'.
    geometry = evidence.global_geometry if "aligned" in clause.reads else evidence.geometry
    return _match(candidate.ref, distances, clause.name, candidate.pdq_pair, geometry)


def rank(matches: list[Match]) -> list[Match]:
    """Copies first, then similar; within each, closest PDQ then oldest; one per ref."""
    best: dict[int, Match] = {}
    for m in matches:
        if m.ref not in best or (m.verdict == "copy" and best[m.ref].verdict != "copy"):
            best[m.ref] = m
    ordered = sorted(best.values(), key=lambda m: (m.verdict != "copy",
                                                   m.distances.get("pdq", 256), m.ref))
    return ordered[:MAX_MATCHES]
