"""Matching benchmark over the development corpus: recall per edit, false matches, margins, cost.

    PYTHONPATH=sdk:service python -m bench.matching [--workers 2] [--photos DIR]

1. Fingerprints every original (tests.kit.corpus), every edited copy (tests.kit.edits, fixed seeds)
   and every held-out photo with its edits; cached in bench/out/cache/ under a digest of the
   fingerprinting code, so a re-run after a threshold change takes seconds.
2. Registers the originals of the non-held-out photos in a `Matcher` and runs every query
   through both stages exactly as the service would (search → candidates → verify → decide).
3. Prints recall per edit (copy verdict for the true original) beside plain 64-bit pHash at its
   best threshold; the false-positive rate over queries; the per-pair false-match rate over all
   pairs of different photos (global hashes over every pair, local features over every pair the
   engine verifies and every hard-negative pair: same subject group, similar_pairs.tsv); the
   margin between the closest impostor and each threshold; low-information images; cost per
   upload for copies and non-copies, at corpus size and extrapolated to 10 M registrations.
4. Writes bench/out/matching.json, bench/out/matching.txt and PNG histograms.
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shotstamp_service.matching import engine as rule
from shotstamp_service.matching.engine import Candidate, Matcher, decide, verify
from shotstamp_service.matching.features import LocalFeatures
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.matching.rule import pixels_match, plausible
from shotstamp_service.matching.verification import (
    MIN_CELLS,
    NATIVE_SIDE,
    Evidence,
    global_transform,
    residual,
    verify_pair,
)
from tests.kit.corpus import (
    SAME_PICTURE,
    Photo,
    corpus_dir,
    held_out,
    known_copies,
    load_photos,
    original_bytes,
    same_picture,
    similar_pairs,
)
from tests.kit.edits import EDITS, apply_edit, encode

OUT = Path(__file__).resolve().parent / "out"
SERVICE = Path(__file__).resolve().parent.parent / "service" / "shotstamp_service" / "matching"
TEN_MILLION = 10_000_000
# Different-photo pairs this close in PDQ are used to probe the global photometric check.
GLOBAL_PROBE = 76
# The code fingerprints and evidence depend on; the rule's thresholds are not part of it.
FINGERPRINT_CODE = [SERVICE / f for f in ("decode.py", "hashes.py", "features.py",
                                          "fingerprint.py")]


@dataclass
class Item:
    """One fingerprinted image: a photo's original, an edited copy, or a known copy."""

    photo: str
    edit: str  # "original", an edit name, or "known:<copy file>"
    fp: Fingerprint
    plain_phash: int  # imagehash.phash(Image.open(f)) of the full decode: the baseline
    ms: float  # time to fingerprint


def _digest(paths: Iterable[Path]) -> str:
    """A digest of the code's syntax tree: comments, docstrings and layout do not count."""
    h = hashlib.sha256()
    for p in sorted(paths):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                    and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(p.name.encode())
        h.update(ast.dump(tree).encode())
    return h.hexdigest()[:16]


def _plain_phash(data: bytes) -> int:
    import imagehash

    return int(str(imagehash.phash(Image.open(io.BytesIO(data)))), 16)


def _fingerprint_photo(args: tuple[str, str, bool]) -> list[Item]:
    root, file, with_edits = args
    data, shot = original_bytes(Path(root) / file)
    items = []
    jobs: list[tuple[str, bytes]] = [("original", data)]
    if with_edits:
        jobs += [(e.name, apply_edit(e, shot, photo=file)) for e in EDITS]
    for name, blob in jobs:
        t = time.perf_counter()
        fp = fingerprint(blob)
        ms = (time.perf_counter() - t) * 1000
        items.append(Item(file, name, fp, _plain_phash(blob), ms))
    return items


def _fingerprint_known(args: tuple[str, str, str]) -> Item:
    root, original, copy = args
    blob = (Path(root) / copy).read_bytes()
    t = time.perf_counter()
    fp = fingerprint(blob)
    return Item(original, f"known:{copy}", fp, _plain_phash(blob), (time.perf_counter() - t) * 1000)


def fingerprints_digest() -> str:
    kit = Path(__file__).resolve().parent.parent / "tests" / "kit"
    return _digest([*FINGERPRINT_CODE, kit / "edits.py", kit / "corpus.py"])


def fingerprint_corpus(root: Path, workers: int) -> list[Item]:
    cache = OUT / "cache" / f"fingerprints-{fingerprints_digest()}.pkl"
    if cache.exists():
        with open(cache, "rb") as f:
            return pickle.load(f)
    photos = load_photos(root)
    jobs = [(str(root), p.file, True) for p in photos]
    known = [(str(root), o, c) for o, c, _ in known_copies(root)]
    t = time.perf_counter()
    items: list[Item] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for n, batch in enumerate(pool.map(_fingerprint_photo, jobs, chunksize=4)):
            items.extend(batch)
            if n % 100 == 0:
                print(f"  fingerprinted {n}/{len(jobs)} photos ({time.perf_counter() - t:.0f} s)",
                      file=sys.stderr, flush=True)
        items.extend(pool.map(_fingerprint_known, known))
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "wb") as f:
        pickle.dump(items, f)
    return items


# -- running queries through the engine -----------------------------------------------------


@dataclass
class QueryResult:
    item: Item
    genuine_ref: int | None  # the registration it copies, if any
    verdict: str  # for the genuine ref: "copy-fast", "copy-verified", "similar", "miss"
    wrong_copies: list[int]  # refs of other photos given a copy verdict
    wrong_similar: int
    search_ms: float
    candidates_ms: float
    verifications: int
    verify_ms: float
    true_words: float  # the genuine registration's word score (0 if below MIN_VOTES)
    verified_copy: bool  # stage 2 would call the genuine registration a copy if verified
    via_pdq: bool  # the genuine registration was a PDQ candidate (found at any index size)
    true_consistent: int = 0  # the genuine registration's `ranking.consistency`
    ranking_ms: float = 0.0  # ordering the word candidates by consistency (`engine.shortlist`)
    word_candidates: int = 0  # word candidates handed over (at most SHORTLIST)
    # every unrelated registration with MIN_VOTES: (word score, consistency, 1 if a look-alike)
    others: np.ndarray | None = None
    lookalikes: int = 0  # registered look-alikes of its photo (`run_queries`' `lookalikes`)


class EvidenceCache:
    """Evidence per (query, ref), persisted: it depends on the features code, not the rule."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[tuple[str, str, int, tuple[str, str] | None],
                        tuple[Evidence, float]] = {}
        if path.exists():
            with open(path, "rb") as f:
                self.data = pickle.load(f)
        self.dirty = False

    def get(self, item: Item, ref: int, stored: bytes,
            pair: tuple[str, str] | None = None) -> tuple[Evidence, float]:
        key = (item.photo, item.edit, ref, pair)
        if key not in self.data:
            t = time.perf_counter()
            evidence = verify(item.fp, stored, pair)
            self.data[key] = (evidence, (time.perf_counter() - t) * 1000)
            self.dirty = True
        return self.data[key]

    def save(self) -> None:
        if self.dirty:
            with open(self.path, "wb") as f:
                pickle.dump(self.data, f)


# Unrelated registrations kept per query, best word scores first, for the consistency tail.
TAIL_PER_QUERY = 200


@dataclass
class Unrelated:
    """Unrelated (query, registration) pairs at corpus size, for the estimates at scale."""

    scores: np.ndarray  # every pair's word score (≥ MIN_VOTES votes), sorted
    pairs: int  # (query, unrelated registration) pairs the scores come from
    # the pairs with the best word scores: (word score, consistency), highest score first
    tail: np.ndarray
    # The pairs split as `estimate_in` reads them: (word score, consistency) of every pair of
    # different groups (independent photos) with MIN_VOTES, highest score first, out of
    # `independent_pairs`; and of every look-alike pair, out of `lookalike_pairs`.
    independent: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))
    independent_pairs: int = 0
    lookalike: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))
    lookalike_pairs: int = 0
    # the sorted consistencies of the independent pairs at or above a word score, by score
    _memo: dict[float, np.ndarray] = dataclasses.field(default_factory=dict, repr=False,
                                                       compare=False)

    def independent_above(self, score: float, consistency: float) -> int:
        """Independent pairs at least as high as `score` and as consistent as `consistency`."""
        ind = self.independent
        at_least = int(np.searchsorted(-ind[:, 0], -score, side="right"))  # highest first
        if consistency == -math.inf:
            return at_least
        if score not in self._memo:
            self._memo[score] = np.sort(ind[:at_least, 1])
        kept = self._memo[score]
        return len(kept) - int(np.searchsorted(kept, consistency))


def run_queries(items: list[Item], registered: dict[str, int], related: dict[str, set[int]],
                cache: EvidenceCache, shortlist: int = rule.SHORTLIST,
                lookalikes: dict[str, set[int]] | None = None, pair_consistency: bool = True,
                ) -> tuple[Matcher, list[QueryResult], Unrelated]:
    """Every query through both stages, `shortlist` word candidates handed to stage 2; also the
    word scores of unrelated registrations, and (`pair_consistency`) the consistency of each,
    split by `lookalikes` (each photo's look-alike registrations: `corpus_lookalikes`)."""
    matcher = Matcher(background=False)
    features: dict[int, bytes] = {}
    parsed: dict[int, LocalFeatures] = {}
    for item in items:
        if item.edit == "original" and item.photo in registered:
            ref = registered[item.photo]
            matcher.add(ref, item.fp)
            assert item.fp.features is not None
            features[ref] = item.fp.to_store()[1]  # the stored form, as the service keeps
            parsed[ref] = LocalFeatures.from_bytes(features[ref])
    results = []
    unrelated_scores: list[np.ndarray] = []
    tails: list[tuple[float, int, int]] = []  # (word score, query's result index, ref)
    for item in items:
        if item.edit == "original" and item.photo in registered:
            continue  # the registration itself
        genuine = registered.get(item.photo)
        ok = related.get(item.photo, set()) | ({genuine} if genuine is not None else set())
        t = time.perf_counter()
        matches = matcher.search(item.fp)
        t1 = time.perf_counter()
        verifications, verify_ms = 0, 0.0
        candidates: list[Candidate] = []
        if not matches:
            # The service stops at a stage-1 copy; otherwise it verifies the candidates.
            candidates = matcher.candidates(item.fp, limit=shortlist)
        t2 = time.perf_counter()
        # As `engine.verify_many` does in the pool: every PDQ candidate, and the word
        # candidates `shortlist` picks by the consistency of their matched keypoints.
        by_words = [(c.ref, features[c.ref]) for c in candidates if c.by_words]
        chosen = set(rule.shortlist(item.fp.local, by_words)) \
            if by_words and item.fp.local is not None else set()
        ranking_ms = (time.perf_counter() - t2) * 1000
        for c in candidates:
            if c.by_words and c.ref not in chosen:
                continue
            evidence, ms = cache.get(item, c.ref, features[c.ref], c.global_pair)
            verifications += 1
            verify_ms += ms
            m = decide(c, evidence)
            if m is not None:
                matches.append(m)
        ranked = rule.rank(matches)
        verdict = "miss"
        for m in ranked:
            if m.ref == genuine:
                if m.verdict == "copy":
                    verdict = "copy-fast" if "orb_inliers" not in m.distances else "copy-verified"
                else:
                    verdict = "similar"
        wrong = [m.ref for m in ranked if m.ref not in ok and m.verdict == "copy"]
        wrong_similar = sum(1 for m in ranked if m.ref not in ok and m.verdict == "similar")
        # For the 10 M extrapolation: every registration's word score for this query, from
        # exact words only. At 10 M a query's exact words alone hold more postings than
        # WORD_POSTINGS_BUDGET, so the budget leaves nothing for multi-probe words.
        true_words, verified_copy = 0.0, False
        local = item.fp.local
        if local is not None and len(local):
            scores = matcher.word_scores(item.fp, limit=1 << 30, min_votes=1, max_postings=None,
                                         probes=0)
            others = [x for x in scores if x.ref not in ok and x.votes >= rule.MIN_VOTES]
            unrelated_scores.append(np.array([x.score for x in others]))
            mates = (lookalikes or {}).get(item.photo, set()) - ok
            cons = rule.consistent_keypoints(local, [parsed[x.ref] for x in others]) \
                if pair_consistency and others else np.zeros(len(others))
            rows = np.array([(x.score, c, x.ref in mates) for x, c in zip(others, cons,
                                                                          strict=True)],
                            np.float64).reshape(-1, 3)
            tails.extend((x.score, len(results), x.ref) for x in others[:TAIL_PER_QUERY])
            for x in scores:
                if x.ref == genuine and x.votes >= rule.MIN_VOTES:
                    true_words = x.score
        else:
            rows, mates = np.zeros((0, 3)), set()
        via_pdq = False
        if genuine is not None and verdict not in ("copy-fast",):
            mine = [c for c in candidates if c.ref == genuine]
            via_pdq = bool(mine) and mine[0].pdq is not None
            candidate = mine[0] if mine else Candidate(genuine)
            evidence, _ = cache.get(item, genuine, features[genuine], candidate.global_pair)
            m = decide(candidate, evidence)
            verified_copy = m is not None and m.verdict == "copy"
        true_consistent = 0
        if genuine is not None and local is not None:
            true_consistent = int(rule.consistent_keypoints(local, [parsed[genuine]])[0])
        results.append(QueryResult(item, genuine, verdict, wrong, wrong_similar,
                                   (t1 - t) * 1000, (t2 - t1) * 1000, verifications, verify_ms,
                                   true_words, verified_copy, via_pdq, true_consistent,
                                   ranking_ms, sum(c.by_words for c in candidates), rows,
                                   len(mates)))
    unrelated = np.sort(np.concatenate(unrelated_scores)) if unrelated_scores else np.zeros(0)
    pairs = sum(1 for r in results if r.item.fp.local is not None) * (len(parsed) - 1)
    # The consistency of the unrelated pairs with the best word scores: TAIL_SHARE times as
    # many as a shortlist holds at the largest index estimated (`verified_at_scale`).
    tails.sort(reverse=True)
    wanted = math.ceil(TAIL_SHARE * TAIL_SHORTLIST * pairs / max(SCALES))
    tail = [(score, int(rule.consistent_keypoints(results[i].item.fp.local, [parsed[ref]])[0]))
            for score, i, ref in tails[:wanted]]
    with_local = [r for r in results if r.item.fp.local is not None and r.others is not None]
    split = np.concatenate([r.others for r in with_local if r.others is not None]) \
        if with_local else np.zeros((0, 3))
    look = split[:, 2] > 0
    independent = split[~look, :2]
    lookalike_pairs = sum(r.lookalikes for r in with_local)
    return matcher, results, Unrelated(
        unrelated, pairs, np.array(tail).reshape(-1, 2),
        independent[np.argsort(-independent[:, 0], kind="stable")], pairs - lookalike_pairs,
        split[look, :2], lookalike_pairs)


# Index sizes the recall is estimated at, and how many times a shortlist's worth of unrelated
# pairs with the best word scores have their consistency measured.
SCALES = (1_000_000, TEN_MILLION)
TAIL_SHARE = 4
# The shortlist size the tail is measured for, fixed so that every size in the trade table reads
# the same tail (a larger shortlist is then estimated against TAIL_SHARE × 32 / its size times
# its competition: still more than it meets).
TAIL_SHORTLIST = 32
SHORTLIST_SIZES = (16, 32, 48, 64)


def _fewer_than(keep: int, expected: float) -> float:
    """P(Poisson(expected) < keep)."""
    e = float(expected)  # a numpy float's powers overflow to inf, and 0 × inf is nan
    try:
        return sum(math.exp(-e) * e**k / math.factorial(k) for k in range(keep))
    except OverflowError:  # a shortlist of 48 or more far past its rate: in log space
        return sum(math.exp(k * math.log(e) - e - math.lgamma(k + 1)) for k in range(keep))


def found_at_scale(true_score: float, unrelated_sorted: np.ndarray, pairs: int, n: int,
                   keep: int = rule.MAX_CANDIDATES) -> float:
    """P(the true registration is among the `keep` best word scores when the index holds
    `n` others).

    Unrelated registrations outscore it independently with the probability measured over
    `pairs` (query, unrelated registration) pairs at corpus size; the number that do at `n`
    is then Poisson. Scores are idf-weighted at corpus size (idf grows slowly with n).
    """
    if true_score <= 0:
        return 0.0
    above = len(unrelated_sorted) - np.searchsorted(unrelated_sorted, true_score)
    rate = max(above, 0.5) / pairs * n  # half a pair when none was seen: the resolution
    return _fewer_than(keep, rate)


def estimate_at_scale(r: QueryResult, unrelated: Unrelated, n: int, *,
                      words_only: bool = False, size: int = rule.SHORTLIST,
                      least: int = rule.MIN_CONSISTENT) -> float:
    """P(`r`'s copy verdict still holds when the index holds `n` unrelated registrations), by
    the linear estimate: every unrelated corpus pair, look-alikes included, scaled with n.
    Replaced by `estimate_in` (issue 22); printed beside it for one release."""
    if r.verdict == "copy-fast" or (r.verdict == "copy-verified" and r.via_pdq):
        return 1.0  # the PDQ index is exact: its candidates do not depend on its size
    if not r.verified_copy:
        return 0.0
    by_words = found_at_scale(r.true_words, unrelated.scores, unrelated.pairs, n,
                              rule.MAX_CANDIDATES)
    if words_only:  # the ranking before the shortlist: the 3 best word scores verified
        return by_words
    # both are verified: at least the likelier of the two (a lower bound of the union)
    return max(by_words, verified_at_scale(r.true_words, r.true_consistent, unrelated, n,
                                           size, least))


def verified_at_scale(true_score: float, true_consistent: int, unrelated: Unrelated,
                      n: int, size: int = rule.SHORTLIST,
                      least: int = rule.MIN_CONSISTENT) -> float:
    """P(the true registration is fully verified when the index holds `n` others): it is in
    the SHORTLIST best word scores, and fewer than MAX_CANDIDATES shortlisted unrelated ones
    are at least as consistent (`engine.shortlist`).

    The unrelated registrations a shortlist holds at `n` are the pairs of the best word
    scores; every pair of `unrelated.tail` (TAIL_SHARE times more than a shortlist holds at
    the largest scale) counts as shortlisted, which overstates how many outrank the original.
    """
    if true_consistent < least:
        return 0.0
    words = found_at_scale(true_score, unrelated.scores, unrelated.pairs, n, size)
    above = int((unrelated.tail[:, 1] >= true_consistent).sum()) if len(unrelated.tail) else 0
    rate = max(above, 0.5) / unrelated.pairs * n
    return words * _fewer_than(rule.MAX_CANDIDATES, rate)


def verifications_at_scale(unrelated: Unrelated, size: int = rule.SHORTLIST,
                           least: int = rule.MIN_CONSISTENT) -> float:
    """Expected full verifications of a non-copy's full shortlist: its MAX_CANDIDATES best
    word scores, and min(MAX_CANDIDATES, how many of the other `size` - MAX_CANDIDATES hold
    `least` consistent keypoints), each as consistent as a pair of `unrelated.tail` (the
    best word scores) at random."""
    if not len(unrelated.tail):
        return float(rule.MAX_CANDIDATES)
    share = float((unrelated.tail[:, 1] >= least).mean())
    rest = size - rule.MAX_CANDIDATES
    return rule.MAX_CANDIDATES + sum(min(rule.MAX_CANDIDATES, k) * math.comb(rest, k)
                                     * share**k * (1 - share) ** (rest - k)
                                     for k in range(rest + 1))


# -- the estimate at scale: independent photos and fixed look-alike families --------------------
#
# The linear estimate above (`estimate_at_scale`, kept for one release beside this one) scales
# every unrelated corpus pair with n, look-alikes included: a query's 3 chessboard siblings
# among 663 registrations become 45,000 at 10 M. `estimate_in` scales only the pairs of
# different groups (independent photos); a photo's look-alikes are a fixed number
# (docs/benchmarks-at-scale.md, "The estimate at scale").


def corpus_lookalikes(photos: list[Photo], registered: dict[str, int],
                      root: Path | None = None) -> dict[str, set[int]]:
    """Each photo's look-alikes among the registrations: the other registered photos of its
    manifest group (frames of one scene, stamps of one series) or of similar_pairs.tsv."""
    groups: dict[str, set[str]] = collections.defaultdict(set)
    for p in photos:
        groups[p.group].add(p.file)
    out = {p.file: {registered[f] for f in groups[p.group] if f in registered and f != p.file}
           for p in photos}
    for a, b, _ in similar_pairs(root):
        if a in out and b in registered:
            out[a].add(registered[b])
        if b in out and a in registered:
            out[b].add(registered[a])
    return out


@dataclass(frozen=True)
class Population:
    """What an index holds besides a query's original, as `estimate_in` models it."""

    # (independent photos, registrations of each): a real catalogue registers each photo
    # once; bench/fullscale.py registers each of its 3,107 seeds ≈ 322 times with noise
    independent: tuple[tuple[float, int], ...]
    # look-alikes of every photo (the same product shot by other sellers); None: exactly the
    # query's look-alikes among the corpus's registrations, as measured
    lookalikes: float | None = None
    # the chances that one look-alike outranks the original (by word score, and by
    # consistency in the shortlist); None: as the query's corpus look-alikes do
    share: tuple[float, float] | None = None


def _poisson_pmf(mean: float, upto: int) -> np.ndarray:
    k = np.arange(upto)
    if mean <= 0:
        return (k == 0).astype(np.float64)
    return np.exp(k * math.log(mean) - mean - np.array([math.lgamma(x + 1) for x in k]))


def _below(keep: int, fixed: int, lookalike_mean: float,
           clusters: Iterable[tuple[float, int]]) -> float:
    """P(fixed + Poisson(lookalike_mean) + Σ size × Poisson(mean) < keep), over `clusters`
    of (mean, size): a cluster that outranks the original outranks it with all its copies."""
    room = keep - fixed
    if room <= 0:
        return 0.0
    pmf = _poisson_pmf(lookalike_mean, room)
    for mean, size in clusters:
        whole = _poisson_pmf(mean, (room - 1) // size + 1)
        spread = np.zeros(room)
        spread[::size] = whole
        pmf = np.convolve(pmf, spread)[:room]
    return float(min(1.0, pmf.sum()))


def _competitors(r: QueryResult, unrelated: Unrelated, population: Population,
                 score: float, consistency: float) -> tuple[int, float, list[tuple[float, int]]]:
    """(look-alikes counted exactly, expected look-alikes, independent clusters as (expected,
    size)) at least as high as `score` in word score and `consistency` in consistency."""
    seen = unrelated.independent_above(score, consistency)
    # half a pair when none was seen: the resolution of the corpus (a guess, on the safe side)
    rate = max(seen, 0.5) / max(1, unrelated.independent_pairs)
    clusters = [(photos * rate, size) for photos, size in population.independent]
    mine = r.others[r.others[:, 2] > 0] if r.others is not None else np.zeros((0, 3))
    above = int(((mine[:, 0] >= score) & (mine[:, 1] >= consistency)).sum())
    if population.lookalikes is None:
        return above, 0.0, clusters
    if population.share is not None:  # the word ranking reads no consistency
        words, consistent = population.share
        return 0, population.lookalikes * (words if consistency == -math.inf
                                           else consistent), clusters
    look = unrelated.lookalike
    pooled = (int(((look[:, 0] >= score) & (look[:, 1] >= consistency)).sum())
              / max(1, unrelated.lookalike_pairs))
    # its own look-alikes' share, or the corpus's if that is larger or it has none: a guess
    share = max(above / r.lookalikes, pooled) if r.lookalikes else pooled
    return 0, population.lookalikes * share, clusters


def _shortlist_floor(unrelated: Unrelated, population: Population, size: int) -> float:
    """The word score above which TAIL_SHARE × `size` independent registrations are expected
    (every one of them counted as shortlisted: more competition than a shortlist holds)."""
    ind = unrelated.independent[:, 0]
    registrations = sum(photos * each for photos, each in population.independent)
    # the k-th highest pair is expected registrations × (k + 1) / pairs times in the index
    k = math.ceil(TAIL_SHARE * size * max(1, unrelated.independent_pairs)
                  / max(registrations, 1e-300)) - 1
    return float(ind[k]) if k < len(ind) else -math.inf


def estimate_in(r: QueryResult, unrelated: Unrelated, population: Population, *,
                words_only: bool = False, size: int = rule.SHORTLIST,
                least: int = rule.MIN_CONSISTENT) -> float:
    """P(`r`'s copy verdict still holds in an index of `population`): as `estimate_at_scale`,
    with independent photos scaled and look-alikes fixed (`_competitors`)."""
    if r.verdict == "copy-fast" or (r.verdict == "copy-verified" and r.via_pdq):
        return 1.0  # the PDQ index is exact: its candidates do not depend on its size
    if not r.verified_copy or r.true_words <= 0:
        return 0.0
    by_words = _below(rule.MAX_CANDIDATES,
                      *_competitors(r, unrelated, population, r.true_words, -math.inf))
    if words_only or r.true_consistent < least:
        return by_words
    words = _below(size, *_competitors(r, unrelated, population, r.true_words, -math.inf))
    floor = _shortlist_floor(unrelated, population, size)
    consistent = _below(rule.MAX_CANDIDATES,
                        *_competitors(r, unrelated, population, floor, r.true_consistent))
    return max(by_words, words * consistent)


def catalogue(n: int, lookalikes: float) -> Population:
    """A marketplace's index: n independent photos, each with `lookalikes` look-alikes that
    outrank a copy's original with LOOKALIKE_SHARE."""
    return Population(((n, 1),), lookalikes, LOOKALIKE_SHARE)


# Look-alikes per photo the 10 M estimate is given (docs/benchmarks-at-scale.md: why 10).
LOOKALIKES = 10
LOOKALIKE_SIZES = (0, 10, 100)
# Another shot of the same thing outranks a copy's original this often, by word score and by
# consistency: the most of the seeds' families (docs/benchmarks-at-scale.md).
LOOKALIKE_SHARE = (0.24, 0.09)


# -- global-hash distances over every pair -----------------------------------------------------


def _codes(items: list[Item], *, query: bool, gated: bool) -> tuple[np.ndarray, np.ndarray]:
    """(codes (n, 4) uint64, owner index (n,)) of every PDQ code of `items`."""
    rows, owners = [], []
    for i, item in enumerate(items):
        for _, code, quality in item.fp.pdq_codes(query=query):
            if gated and (quality is None or quality < rule.PDQ_MIN_QUALITY):
                continue
            rows.append(np.frombuffer(code, np.uint64))
            owners.append(i)
    if not rows:
        return np.zeros((0, 4), np.uint64), np.zeros(0, np.int64)
    return np.stack(rows), np.array(owners)


def pair_distances(queries: list[Item], stored: list[Item], *, gated: bool) -> np.ndarray:
    """(len(queries), len(stored)) smallest PDQ distance over code pairs; 999 if none."""
    qc, qo = _codes(queries, query=True, gated=gated)
    sc, so = _codes(stored, query=False, gated=gated)
    out = np.full((len(queries), len(stored)), 999, np.int16)
    if len(qc) == 0 or len(sc) == 0:
        return out
    for start in range(0, len(qc), 2048):
        block = qc[start : start + 2048]
        d = np.bitwise_count(block[:, None, :] ^ sc[None, :, :]).sum(axis=2).astype(np.int16)
        rows = qo[start : start + 2048]
        # reduce to (query item, stored item) minima
        for j_owner in np.unique(so):
            cols = so == j_owner
            col_min = d[:, cols].min(axis=1)
            np.minimum.at(out[:, j_owner], rows, col_min)
    return out


def closest_code_pair(query: Fingerprint, stored: Fingerprint) -> tuple[str, str]:
    """The (query code, stored code) names at the smallest PDQ distance, quality-gated."""
    best: tuple[int, str, str] | None = None
    for qn, qc, qq in query.pdq_codes(query=True):
        for sn, sc, sq in stored.pdq_codes():
            if (qq or 0) < rule.PDQ_MIN_QUALITY or (sq or 0) < rule.PDQ_MIN_QUALITY:
                continue
            d = (int.from_bytes(qc, "big") ^ int.from_bytes(sc, "big")).bit_count()
            if best is None or d < best[0]:
                best = (d, qn, sn)
    assert best is not None
    return best[1], best[2]


def small_upload_report(queries: list[Item], originals: list[Item], different: np.ndarray,
                        pdq_gated: np.ndarray, nearest: int) -> str:
    """The pixel check for small uploads (`verification.residual`, matching.GLOBAL_RESIDUAL_*),
    on copies and probed with each small query's `nearest` different originals by PDQ (0: all
    of them, ~0.2 ms a pair)."""
    def measure(i: int, j: int) -> tuple[float, int, float] | None:
        q, s = queries[i].fp, originals[j].fp
        assert q.local is not None and s.local is not None
        pair = closest_code_pair(q, s)
        return residual(q.local, s.local, global_transform(q.local, s.local, *pair))

    def passes(r: tuple[float, int, float]) -> bool:
        return pixels_match(Evidence(global_residual=r[0], global_pixels=r[1],
                                     global_contrast=r[2]))

    def share(r: tuple[float, int, float]) -> float:
        return r[0] / max(r[2], 1e-9)

    small = [i for i, q in enumerate(queries) if q.fp.local is not None
             and q.fp.local.source is not None and max(q.fp.local.source) <= NATIVE_SIDE
             and (pdq_gated[i] < 999).any()]
    copies: list[tuple[tuple[float, int, float], str]] = []
    probed = []
    for i in small:
        own = np.flatnonzero(~different[i] & (pdq_gated[i] <= rule.PDQ_CANDIDATE))
        if queries[i].edit != "original":
            copies += [(r, queries[i].edit) for j in own[:1] if (r := measure(i, j)) is not None]
        others = np.flatnonzero(different[i] & (pdq_gated[i] < 999))
        if nearest:
            others = others[np.argsort(pdq_gated[i, others], kind="stable")[:nearest]]
        for j in others:
            if (r := measure(i, j)) is not None:
                probed.append((r, int(pdq_gated[i, j]), queries[i].photo, queries[i].edit,
                               originals[j].photo))
    lines = [f"- Small uploads (long side ≤ {NATIVE_SIDE} px: {len(small)} queries), their pixels "
             f"compared at their own size under the closest code pair's alignment:"]
    if copies:
        res = [r[0] for r, _ in copies]
        shares = np.array([share(r) for r, _ in copies])
        failing = collections.Counter(e for r, e in copies if not passes(r)).most_common(4)
        lines.append(f"  - copies within PDQ_CANDIDATE of their original: {len(copies)}, "
                     f"{sum(passes(r) for r, _ in copies)} pass (most failing: "
                     f"{', '.join(f'{e} {n}' for e, n in failing) or 'none'}); RMS residual "
                     f"{percentiles(res, (50, 90, 99))} grey levels, as a share of contrast "
                     + " ".join(f"p{p}={np.percentile(shares, p):.2f}" for p in (50, 90, 99)))
    if probed:
        passed = sum(passes(r) for r, *_ in probed)
        which = f"{nearest} nearest different originals by PDQ" if nearest else \
            "different originals, all of them"
        lines.append(f"  - probed with each one's {which} (any distance; none within "
                     f"PDQ_CANDIDATE): {len(probed):,} pairs, "
                     f"{passed} would pass (needs ≤ {rule.GLOBAL_RESIDUAL_COPY} and ≤ "
                     f"{rule.GLOBAL_RESIDUAL_SHARE} of contrast over ≥ "
                     f"{rule.GLOBAL_RESIDUAL_PIXELS} px). Closest:")
        by_residual = min(probed, key=lambda x: x[0][0])
        by_share = min(probed, key=lambda x: share(x[0]))
        # Both bounds at once: how far the nearest pair is from passing, as a multiple of them.
        by_both = min(probed, key=lambda x: max(x[0][0] / rule.GLOBAL_RESIDUAL_COPY,
                                                share(x[0]) / rule.GLOBAL_RESIDUAL_SHARE))
        for (r, d, q, e, o), what in ((by_residual, "residual"), (by_share, "share"),
                                      (by_both, "both (the larger of the two ratios)")):
            lines.append(f"    - on {what}: {q} [{e}] vs {o}: {d} bits, residual {r[0]:.1f} "
                         f"over {r[1]} px, contrast {r[2]:.1f} (share {share(r):.2f})")
    return "\n".join(lines)


def phash_distances(queries: list[Item], stored: list[Item]) -> np.ndarray:
    q = np.array([i.plain_phash for i in queries], np.uint64)
    s = np.array([i.plain_phash for i in stored], np.uint64)
    return np.bitwise_count(q[:, None] ^ s[None, :]).astype(np.int16)


# -- low-information images ---------------------------------------------------------------


def near_blank_images() -> list[tuple[str, bytes]]:
    """Deliberately similar but different near-blank images: a product shot's worst case."""
    out = []
    rng = np.random.default_rng(7)
    size = 800
    for i in range(12):  # a small object of a different shape/colour on white
        im = Image.new("RGB", (size, size), "white")
        d = ImageDraw.Draw(im)
        r = 10 + 6 * i
        colour = tuple(int(c) for c in rng.integers(0, 230, 3))
        cx, cy = size // 2 + int(rng.integers(-60, 60)), size // 2 + int(rng.integers(-60, 60))
        if i % 3 == 0:
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif i % 3 == 1:
            d.rectangle((cx - r, cy - r // 2, cx + r, cy + r // 2), fill=colour)
        else:
            d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
        out.append((f"dot-{i}", encode(im, quality=92)))
    for i in range(8):  # faint gradients and tints
        a = np.linspace(0, 1, size)[None, :] if i % 2 else np.linspace(0, 1, size)[:, None]
        base = 255 - (6 + 3 * i) * a
        arr = np.broadcast_to(base[..., None], (size, size, 3)).astype(np.uint8)
        out.append((f"gradient-{i}", encode(Image.fromarray(np.ascontiguousarray(arr)))))
    for i in range(8):  # sensor noise on white, grey, cream
        level = (255, 245, 235, 225)[i % 4]
        arr = np.clip(level + rng.normal(0, 2 + i, (size, size, 3)), 0, 255).astype(np.uint8)
        out.append((f"noise-{i}", encode(Image.fromarray(arr))))
    for i in range(8):  # a thin line or a short caption, blurred: almost nothing
        im = Image.new("RGB", (size, size), "white")
        d = ImageDraw.Draw(im)
        if i % 2:
            y = 200 + 50 * i
            d.line((100, y, 700, y + 10 * i), fill=(200, 200, 200), width=2)
        else:
            d.text((300 + 10 * i, 380), f"item {i}", fill=(180, 180, 180))
        out.append((f"faint-{i}", encode(im.filter(ImageFilter.GaussianBlur(1)))))
    for i in range(4):  # uniform fields
        out.append((f"uniform-{i}", encode(Image.new("RGB", (size, size), (255 - 10 * i,) * 3))))
    return out


def low_information_report() -> dict[str, object]:
    images = near_blank_images()
    fps = [(name, fingerprint(data)) for name, data in images]
    matcher = Matcher(background=False)
    features = {}
    for ref, (_, fp) in enumerate(fps):
        matcher.add(ref, fp)
        features[ref] = fp.to_store()[1]
    false_copies, false_similar = [], 0
    for ref, (name, _) in enumerate(fps):
        # query a re-encoded version of each: it must find itself and nothing else
        requery = fingerprint(encode(Image.open(io.BytesIO(images[ref][1])).convert("RGB"),
                                     quality=70))
        for m in matcher.match(requery, features.get):
            if m.ref != ref and m.verdict == "copy":
                false_copies.append((name, fps[m.ref][0], m.distances))
            elif m.ref != ref:
                false_similar += 1
    qualities = sorted(fp.quality or 0 for _, fp in fps)
    ungated = pair_distances(
        [Item(n, "original", fp, 0, 0) for n, fp in fps],
        [Item(n, "original", fp, 0, 0) for n, fp in fps], gated=False)
    np.fill_diagonal(ungated, 999)
    return {
        "images": len(fps),
        "pairs": len(fps) * (len(fps) - 1),
        "pdq_quality": {"min": qualities[0], "median": qualities[len(qualities) // 2],
                        "max": qualities[-1],
                        "below_gate": sum(q < rule.PDQ_MIN_QUALITY for q in qualities)},
        "closest_pdq_without_gate": int(ungated.min()),
        "pairs_within_pdq_copy_without_gate": int((ungated <= rule.PDQ_COPY).sum()),
        "false_copies": false_copies,
        "false_similar": false_similar,
    }


# -- reporting ------------------------------------------------------------------------------


def percentiles(values: Iterable[float], ps: Iterable[float] = (1, 5, 50, 95, 99)) -> str:
    arr = np.asarray(list(values), float)
    if len(arr) == 0:
        return "-"
    return " ".join(f"p{p:g}={np.percentile(arr, p):.0f}" for p in ps)


def histogram_png(path: Path, title: str, genuine: np.ndarray, impostor: np.ndarray,
                  thresholds: dict[str, float], xlabel: str, bins: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    ax.hist(impostor, bins=bins, alpha=0.55, color="tab:red", density=True,
            label=f"different photos (n={len(impostor):,})")
    ax.hist(genuine, bins=bins, alpha=0.55, color="tab:blue", density=True,
            label=f"copies (n={len(genuine):,})")
    for name, x in thresholds.items():
        ax.axvline(x, color="black", linestyle="--", linewidth=1)
        ax.text(x, ax.get_ylim()[1] * 0.95, f" {name}", rotation=90, va="top", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density (log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evidence_png(path: Path, genuine: list[Evidence], impostor: list[Evidence]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for evs, colour, label in ((impostor, "tab:red", "different photos (verified pairs)"),
                               (genuine, "tab:blue", "copies")):
        x = [max(1, e.inliers) for e in evs]
        y = [e.agreement for e in evs]
        ax.scatter(x, y, s=6, alpha=0.35, color=colour, label=f"{label} (n={len(evs):,})")
    ax.axvline(rule.INLIERS_COPY, color="black", linestyle="--", linewidth=1)
    ax.axhline(rule.AGREEMENT_COPY, color="black", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("ORB RANSAC inliers")
    ax.set_ylabel("photometric agreement (share of cells)")
    ax.set_title("Stage 2 evidence: copies vs different photos (copy region: upper right)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--small-probe", type=int, default=30,
                        help="probe the pixel check of each small upload with its N nearest "
                             "different originals by PDQ (0: every one, a few minutes more)")
    parser.add_argument("--shortlist", type=int, default=rule.SHORTLIST,
                        help="word candidates handed to stage 2 (engine.SHORTLIST unless given)")
    parser.add_argument("--hard-edits", default="crop_80,combination",
                        help="edits also verified against every hard-negative pair")
    args = parser.parse_args(argv)
    root = args.photos or corpus_dir()
    if not (root / "manifest.tsv").exists():
        print(f"no corpus at {root} (set SHOTSTAMP_PHOTOS or --photos)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    t_start = time.perf_counter()
    photos = load_photos(root)
    holdout = held_out(photos, root)
    order = [p.file for p in photos]
    registered = {f: i for i, f in enumerate(order) if f not in holdout}
    items = fingerprint_corpus(root, args.workers)
    by_key = {(i.photo, i.edit): i for i in items}
    # Evidence depends on the fingerprints and on the verification code, not on the rule.
    digest = _digest([*FINGERPRINT_CODE, SERVICE / "verification.py"])
    cache = EvidenceCache(OUT / "cache" / f"evidence-{digest}.pkl")
    partners = same_picture()
    related = {f: {registered[g] for g in others if g in registered}
               for f, others in partners.items()}
    shortlist = args.shortlist
    matcher, results, unrelated = run_queries(items, registered, related, cache, shortlist,
                                              corpus_lookalikes(photos, registered, root))
    word_pairs = unrelated.pairs
    say(f"# Matching benchmark — {len(photos)} photos, {len(registered)} registered, "
        f"{len(holdout)} held out, {len(EDITS)} edit families, SHORTLIST {shortlist}")
    say()

    # -- recall per edit, beside plain pHash -------------------------------------------------
    originals = [by_key[(f, "original")] for f in order]
    genuine_results = [r for r in results if r.genuine_ref is not None
                       and not r.item.edit.startswith("known:")]
    impostor_results = [r for r in results if r.genuine_ref is None]
    # plain pHash: best threshold with no false match among all pairs of different photos
    queries = [r.item for r in results] + [originals[i] for i in sorted(registered.values())]
    ph = phash_distances(queries, originals)
    photo_index = {f: i for i, f in enumerate(order)}
    own = np.array([photo_index[q.photo] for q in queries])
    different = np.ones_like(ph, bool)
    different[np.arange(len(queries)), own] = False
    for k, q in enumerate(queries):  # one picture under two names is not a different photo
        for other in partners.get(q.photo, ()):
            if other in photo_index:  # a corpus subset (--photos) may lack the partner
                different[k, photo_index[other]] = False
    # each unordered pair of originals appears twice; a pair is different photos either way
    ph_impostor_min = int(ph[different].min())
    ph_best = ph_impostor_min - 1
    ph_genuine = {(q.photo, q.edit): int(ph[k, own[k]]) for k, q in enumerate(queries)}

    say("## Recall per edit (copy verdict for the true original)")
    say()
    say("| edit | goal | n | shotstamp | stage 1 alone | similar only | missed | "
        f"plain pHash ≤{ph_best} | at 1 M (est.) | at 10 M (est.) | "
        + " | ".join(f"10 M, {k} look-alikes" for k in LOOKALIKE_SIZES if k != LOOKALIKES)
        + " | at 10 M, top 3 by words | at 10 M, linear (old) |")
    say("|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(LOOKALIKE_SIZES) + "---|")

    def at_scale(r: QueryResult, n: int = TEN_MILLION, *, words_only: bool = False,
                 size: int = shortlist, least: int = rule.MIN_CONSISTENT,
                 lookalikes: float = LOOKALIKES) -> float:
        return estimate_in(r, unrelated, catalogue(n, lookalikes), words_only=words_only,
                           size=size, least=least)

    def scaled_row(rs: list[QueryResult]) -> str:
        columns = [np.mean([at_scale(r, SCALES[0]) for r in rs]),
                   np.mean([at_scale(r) for r in rs]),
                   *(np.mean([at_scale(r, lookalikes=k) for r in rs])
                     for k in LOOKALIKE_SIZES if k != LOOKALIKES),
                   np.mean([at_scale(r, words_only=True) for r in rs]),
                   np.mean([estimate_at_scale(r, unrelated, TEN_MILLION, size=shortlist)
                            for r in rs])]
        return " | ".join(f"{x:.1%}" for x in columns)

    per_edit: dict[str, dict[str, float]] = {}
    tiers: dict[float, list[QueryResult]] = collections.defaultdict(list)
    for e in EDITS:
        rs = [r for r in genuine_results if r.item.edit == e.name]
        n = len(rs)
        copy = sum(r.verdict.startswith("copy") for r in rs)
        fast = sum(r.verdict == "copy-fast" for r in rs)
        similar = sum(r.verdict == "similar" for r in rs)
        ph_hit = sum(ph_genuine[(r.item.photo, r.item.edit)] <= ph_best for r in rs)
        recall = copy / n
        mark = "✓" if recall >= e.goal else "✗"
        scaled = float(np.mean([at_scale(r) for r in rs]))
        per_edit[e.name] = {"n": n, "recall": recall, "stage1": fast / n, "similar": similar / n,
                            "goal": e.goal, "plain_phash": ph_hit / n, "at_10m": scaled,
                            "at_1m": float(np.mean([at_scale(r, SCALES[0]) for r in rs])),
                            "at_10m_linear": float(np.mean([estimate_at_scale(
                                r, unrelated, TEN_MILLION, size=shortlist) for r in rs]))}
        tiers[e.goal].extend(rs)
        say(f"| {e.name} | {e.goal:.0%} | {n} | {recall:.1%} {mark} | {fast / n:.1%} | "
            f"{similar / n:.1%} | {n - copy - similar} | {ph_hit / n:.1%} | "
            f"{scaled_row(rs)} |")
    total = len(genuine_results)
    overall = sum(r.verdict.startswith("copy") for r in genuine_results) / total
    ph_overall = sum(ph_genuine[(r.item.photo, r.item.edit)] <= ph_best
                     for r in genuine_results) / total
    say(f"| **all edits** | | {total} | **{overall:.1%}** | | | | {ph_overall:.1%} | "
        f"{scaled_row(genuine_results)} |")
    for goal, rs in sorted(tiers.items(), reverse=True):
        rec = sum(r.verdict.startswith("copy") for r in rs) / len(rs)
        say(f"| tier ≥{goal:.0%} | | {len(rs)} | {rec:.1%} | | | | | {scaled_row(rs)} |")
    say()
    say("The last columns estimate recall with 1 M and 10 M registrations (`estimate_in`, "
        "docs/benchmarks-at-scale.md): stage-1 copies stay copies; a stage-2 copy needs its "
        "original among the MAX_CANDIDATES best word scores, or among the SHORTLIST = "
        f"{shortlist} best and then among the MAX_CANDIDATES = {rule.MAX_CANDIDATES} most "
        f"consistent of them (with at least MIN_CONSISTENT = {rule.MIN_CONSISTENT}; the "
        "likelier of the two is counted). The index holds n independent photos, which "
        "outscore it at the rate measured over the "
        f"{unrelated.independent_pairs:,} (query, registration) pairs of different manifest "
        f"groups here, and {LOOKALIKES} look-alikes of each photo (the next columns: "
        + ", ".join(str(k) for k in LOOKALIKE_SIZES if k != LOOKALIKES)
        + "), each of which outranks it by word score and by consistency with "
        f"LOOKALIKE_SHARE = {LOOKALIKE_SHARE} (another shot of the same thing, "
        "bench/recall_full.py --validate; the corpus's own "
        f"look-alikes, {unrelated.lookalike_pairs:,} pairs of one manifest group or "
        "similar_pairs.tsv, outrank far less often). 'top 3 by words' is the ranking before "
        "the shortlist; 'linear (old)' is the estimate before issue 22's fix, every unrelated "
        f"pair of the {word_pairs:,} scaled with n, look-alikes included (kept one release "
        "for comparison).")
    say()
    say("What the shortlist's size and MIN_CONSISTENT trade (recall at 10 M, estimated as "
        "above; copies found here by words alone whose original has fewer consistent "
        "keypoints than the gate; full verifications per non-copy at 10 M):")
    say()
    say("| SHORTLIST | MIN_CONSISTENT | all edits | combination | crop_offcentre | crop_80 | "
        "gate loses here | verifications at 10 M |")
    say("|---|---|---|---|---|---|---|---|")
    by_words_found = [r for r in genuine_results if r.verdict == "copy-verified"
                      and not r.via_pdq]
    for size in SHORTLIST_SIZES:
        for least in (3, 5, 8, 10, 12):
            def est(rs: list[QueryResult], size: int = size, least: int = least) -> str:
                return f"{np.mean([at_scale(r, size=size, least=least) for r in rs]):.1%}"
            fam = {e: [r for r in genuine_results if r.item.edit == e]
                   for e in ("combination", "crop_offcentre", "crop_80")}
            say(f"| {size} | {least} | {est(genuine_results)} | {est(fam['combination'])} | "
                f"{est(fam['crop_offcentre'])} | {est(fam['crop_80'])} | "
                f"{sum(r.true_consistent < least for r in by_words_found)} | "
                f"{verifications_at_scale(unrelated, size, least):.2f} |")
    say()
    consistent = [r.true_consistent for r in genuine_results if r.verified_copy
                  and not r.via_pdq and r.verdict != "copy-fast"]
    say(f"Consistency of the originals stage 2 calls copies (word-found): "
        f"{percentiles(consistent, (0, 1, 5, 50))} (percentiles 0/1/5/50); fewer than "
        f"MIN_CONSISTENT: {sum(c < rule.MIN_CONSISTENT for c in consistent)} of "
        f"{len(consistent)}. Unrelated pairs of the best word scores: consistency "
        f"{percentiles(unrelated.tail[:, 1] if len(unrelated.tail) else [0], (50, 95, 99, 100))}"
        " (percentiles 50/95/99/100).")
    say()

    # misses by image size: most misses are tiny images
    small = [r for r in genuine_results if not r.verdict.startswith("copy")]
    sizes = {p.file: min(p.width, p.height) for p in photos}
    say(f"Misses (not a copy verdict): {len(small)}; of which short side < 128 px: "
        f"{sum(sizes[r.item.photo] < 128 for r in small)}, < 256 px: "
        f"{sum(sizes[r.item.photo] < 256 for r in small)} "
        f"(the corpus: {sum(s < 128 for s in sizes.values())} and "
        f"{sum(s < 256 for s in sizes.values())} of {len(sizes)} photos)")
    say()

    # -- known copies shipped by the packages ------------------------------------------------
    say("## Known copies (known_copies.tsv)")
    say()
    say("| original | copy | relation | verdict |")
    say("|---|---|---|---|")
    relation = {(o, c): rel for o, c, rel in known_copies(root)}
    for r in results:
        if r.item.edit.startswith("known:"):
            copy_file = r.item.edit[len("known:"):]
            say(f"| {r.item.photo} | {copy_file} | {relation[(r.item.photo, copy_file)]} | "
                f"{r.verdict} |")
    say()

    # -- false positives over queries ------------------------------------------------------------
    fp_queries = [r for r in results if r.wrong_copies]
    say("## False positives over queries")
    say()
    say(f"Queries: {len(results)} ({len(genuine_results)} edited copies of registered photos, "
        f"{len(impostor_results)} held-out photos and their edits). Queries given a copy verdict "
        f"for a registration of a different photo: {len(fp_queries)} "
        f"({len(fp_queries) / len(results):.4%}).")
    for r in fp_queries[:20]:
        say(f"- {r.item.photo} [{r.item.edit}] → "
            f"{', '.join(order[ref] for ref in r.wrong_copies)}")
    held_similar = sum(1 for r in impostor_results if r.wrong_similar)
    say(f"Held-out queries with only `similar` matches: {held_similar} of "
        f"{len(impostor_results)} (shown, never blocking).")
    say()

    # -- every pair of different photos: global hashes --------------------------------------
    pdq_gated = pair_distances(queries, originals, gated=True)
    pdq_any = pair_distances(queries, originals, gated=False)
    imp_gated = pdq_gated[different]
    imp_any = pdq_any[different]
    n_pairs = int(different.sum())
    fm_global = int((imp_gated <= rule.PDQ_COPY).sum())
    closest = int(imp_gated.min())
    k = np.unravel_index(np.argmin(np.where(different, pdq_gated, 999)), pdq_gated.shape)
    closest_pair = (queries[k[0]].photo, queries[k[0]].edit, originals[k[1]].photo)
    # -- local features: every pair the engine verified, and hard negatives -----------------
    verified_impostor: list[tuple[Evidence, str, str, str]] = []
    verified_genuine: list[Evidence] = []
    for (photo, edit, ref, _), (ev, _) in cache.data.items():
        if order[ref] in partners.get(photo, ()):
            continue
        if order[ref] == photo:
            verified_genuine.append(ev)
        else:
            verified_impostor.append((ev, photo, edit, order[ref]))
    hard_pairs = set()
    groups = collections.defaultdict(list)
    for p in photos:
        groups[p.group].append(p.file)
    for files in groups.values():
        hard_pairs.update(itertools.combinations(sorted(files), 2))
    for a, b, _ in similar_pairs(root):
        hard_pairs.add(tuple(sorted((a, b))))
    hard_pairs = {(a, b) for a, b in hard_pairs if b not in partners.get(a, ())}
    hard_edits = [e for e in args.hard_edits.split(",") if e]
    hard_cache = EvidenceCache(OUT / "cache" / f"hard-{digest}.pkl")
    hard: list[tuple[Evidence, str, str, str]] = []
    for a, b in sorted(hard_pairs):
        for q, s in ((a, b), (b, a)):
            for edit in ["original", *hard_edits]:
                qi = by_key[(q, edit)]
                stored = by_key[(s, "original")].fp.to_store()[1]
                assert stored is not None
                ev, _ = hard_cache.get(qi, photo_index[s], stored)
                hard.append((ev, q, edit, s))
    hard_cache.save()
    cache.save()
    all_impostor_ev = verified_impostor + hard

    def local_copy(ev: Evidence) -> bool:
        m = decide(Candidate(0), ev)
        return m is not None and m.verdict == "copy"

    fm_local = [x for x in all_impostor_ev if local_copy(x[0])]
    fm_local_pairs = {(q, e, s) for _, q, e, s in fm_local}
    global_pairs = {(queries[i].photo, queries[i].edit, originals[j].photo)
                    for i, j in zip(*np.nonzero(different & (pdq_gated <= rule.PDQ_COPY)),
                                    strict=True)}
    fm_pairs = global_pairs | fm_local_pairs
    say("## Every pair of different photos")
    say()
    say(f"Pairs (query image, registered original) of different photos: {n_pairs:,} "
        f"({len(queries):,} query images incl. all {len(originals)} originals × "
        f"{len(originals)} originals).")
    say(f"- Global hashes (PDQ ≤ {rule.PDQ_COPY}, quality ≥ {rule.PDQ_MIN_QUALITY}): "
        f"{fm_global} false matches; closest different pair at {closest} bits "
        f"({closest_pair[0]} [{closest_pair[1]}] vs {closest_pair[2]}): margin "
        f"{closest - rule.PDQ_COPY} bits over PDQ_COPY. Without the quality gate the closest "
        f"is {int(imp_any.min())} bits.")
    say(f"- Local features: {len(all_impostor_ev):,} different-photo pairs verified "
        f"({len(verified_impostor):,} engine candidates, {len(hard):,} hard-negative pairs: "
        f"same group or similar_pairs.tsv, originals and {', '.join(hard_edits)}): "
        f"{len(fm_local)} given a copy verdict.")
    for ev, q, e, s in sorted(fm_local, key=lambda x: -x[0].inliers)[:10]:
        say(f"  - {q} [{e}] vs {s}: {ev.as_dict()}")
    say(f"- Per-pair false-match rate: {len(fm_pairs)} / {n_pairs:,} = "
        f"{len(fm_pairs) / n_pairs:.2e}")
    # The global photometric check confirms PDQ candidates (PDQ_COPY < d <= PDQ_CANDIDATE).
    # No different-photo pair comes that close here, so probe it with the closest ones.
    probe = np.argwhere(different & (pdq_gated <= GLOBAL_PROBE))
    global_imp = []
    for i, j in probe:
        qfp, sfp = queries[i].fp, originals[j].fp
        pair = closest_code_pair(qfp, sfp)
        assert qfp.local is not None and sfp.local is not None
        ev = verify_pair(qfp.local, sfp.local, pair)
        as_candidate = Candidate(0, pdq=int(pdq_gated[i, j]), pdq_pair=pair)
        verdict = decide(as_candidate, ev)
        global_imp.append((ev.global_agreement or 0.0, ev.global_inliers or 0,
                           verdict is not None and verdict.verdict == "copy",
                           int(pdq_gated[i, j]), queries[i].photo, queries[i].edit,
                           originals[j].photo))
    global_imp.sort(key=lambda x: (-x[1] * (x[0] >= rule.GLOBAL_AGREEMENT_COPY), -x[0]))
    over = sum(x[0] >= rule.GLOBAL_AGREEMENT_COPY for x in global_imp)
    passed = sum(x[2] for x in global_imp)
    say(f"- Stage-2 confirmation of PDQ candidates, probed with the {len(global_imp)} "
        f"different-photo pairs within {GLOBAL_PROBE} PDQ bits (none is within "
        f"PDQ_CANDIDATE = {rule.PDQ_CANDIDATE}) as if they were candidates: {over} agree on "
        f"≥ {rule.GLOBAL_AGREEMENT_COPY} of the cells under the implied alignment (round "
        f"discs on one background look alike), {passed} would be called copies. Closest:")
    for g, gi, _, d, q, e, o in global_imp[:4]:
        say(f"  - {q} [{e}] vs {o}: {d} bits, agreement {g:.2f}, guided inliers {gi} "
            f"(needs {rule.GLOBAL_INLIERS_COPY})")
    if global_imp:
        g, gi, _, d, q, e, o = max(global_imp, key=lambda x: x[1])
        say(f"  - most guided inliers of any probed pair: {gi} ({q} [{e}] vs {o}, {d} bits, "
            f"agreement {g:.2f}); with too few cells to compare, "
            f"GLOBAL_INLIERS_ALONE = {rule.GLOBAL_INLIERS_ALONE} decide alone")
    say(small_upload_report(queries, originals, different, pdq_gated, args.small_probe))
    # The PDQ tail below what 14 M pairs can show: fit log P(d <= x) linearly in x over the
    # measurable lower tail and extrapolate to PDQ_COPY.
    ecdf_x = np.arange(closest, closest + 40)
    ecdf_p = np.array([(imp_gated <= x).sum() / n_pairs for x in ecdf_x])
    usable = ecdf_p > 0
    slope, intercept = np.polyfit(ecdf_x[usable], np.log10(ecdf_p[usable]), 1)
    p_copy = 10 ** (slope * rule.PDQ_COPY + intercept)
    say(f"- PDQ tail: P(d ≤ x) for different photos falls by 10× every {-1 / slope:.1f} bits "
        f"below x = {closest + 39} (log-linear fit from {closest} to {closest + 39} bits); "
        f"extrapolated, P(d ≤ {rule.PDQ_COPY}) ≈ {p_copy:.1e} per pair, i.e. "
        f"{p_copy * TEN_MILLION:.1e} false stage-1 matches per upload at 10 M registrations.")
    ok_ev = [x for x in all_impostor_ev if not local_copy(x[0])]
    by_inliers = sorted(ok_ev, key=lambda x: -x[0].inliers)[:5]
    agreeing = sorted([x for x in ok_ev if x[0].inliers >= rule.INLIERS_COPY],
                      key=lambda x: -x[0].agreement)[:5]
    say(f"- Closest impostors to the local rule (inliers ≥ {rule.INLIERS_COPY} and agreement ≥ "
        f"{rule.AGREEMENT_COPY}):")
    for ev, q, e, s in by_inliers + agreeing:
        say(f"  - {q} [{e}] vs {s}: inliers {ev.inliers}, agreement {ev.agreement:.2f}, "
            f"scale {ev.scale:.2f}, rotation {ev.rotation:.1f}°")
    # The clauses that count re-matched keypoints, each with its closest different-photo pair
    # among plausible transforms (an implausible one is never a copy, and a degenerate one —
    # scale 0.01 — can map a whole picture onto one flat patch that "agrees" everywhere).
    supported = [x for x in ok_ev if max(x[0].inliers, x[0].rematched) >= rule.INLIERS_COPY_FEW
                 and plausible(x[0])]
    for measure, threshold in (("agreement", rule.AGREEMENT_COPY_FEW),
                               ("overlay", rule.OVERLAY_COPY)):
        if supported:
            ev, q, e, s = max(supported, key=lambda x: getattr(x[0], measure))
            say(f"- Closest on {measure} (needs ≥ {threshold}) with ≥ {rule.INLIERS_COPY_FEW} "
                f"inliers or re-matched keypoints: {q} [{e}] vs {s}: {measure} "
                f"{getattr(ev, measure):.3f}, inliers {ev.inliers}, re-matched {ev.rematched}")
    few_cells = [x for x in ok_ev if x[0].cells < MIN_CELLS]
    if few_cells:
        ev, q, e, s = max(few_cells, key=lambda x: max(x[0].inliers, x[0].rematched))
        say(f"- Most inliers or re-matched keypoints with fewer than {MIN_CELLS} cells to "
            f"compare (needs ≥ {rule.INLIERS_ALONE}): {q} [{e}] vs {s}: inliers {ev.inliers}, "
            f"re-matched {ev.rematched}, cells {ev.cells}")
    say()

    say("## Pairs in the corpus that are one picture (tests.kit.corpus.SAME_PICTURE)")
    say()
    for a, b, why in SAME_PICTURE:
        if (a, "original") not in by_key or (b, "original") not in by_key:
            continue  # a corpus subset (--photos)
        verdicts = []
        for q, s_ in ((a, b), (b, a)):
            one = Matcher(background=False)
            stored_fp = by_key[(s_, "original")].fp
            one.add(0, stored_fp)
            found = one.match(by_key[(q, "original")].fp, {0: stored_fp.to_store()[1]}.get)
            verdicts.append(f"{q.split('/')[-1]} → "
                            f"{found[0].verdict if found else 'no match'} "
                            f"{found[0].distances if found else ''}")
        say(f"- {a} / {b}: {why}. Engine: {'; '.join(verdicts)}.")
    hard_cache.save()
    say()

    # -- distributions -------------------------------------------------------------------------
    gen_pdq = np.array([pdq_any[k, own[k]] for k, q in enumerate(queries)
                        if q.edit not in ("original",) and not q.edit.startswith("known:")
                        and q.photo in registered])
    say("## Distance distributions")
    say()
    say("| measure | copies | different photos |")
    say("|---|---|---|")
    say(f"| PDQ bits (min over codes) | {percentiles(gen_pdq)} | "
        f"min={int(imp_any.min())} {percentiles(imp_any, (0.001, 0.01, 0.1, 1, 50))} |")
    gen_ph = np.array([ph_genuine[(r.item.photo, r.item.edit)] for r in genuine_results])
    say(f"| plain pHash bits | {percentiles(gen_ph)} | min={ph_impostor_min} "
        f"{percentiles(ph[different], (0.001, 0.01, 0.1, 1, 50))} |")
    say(f"| ORB inliers (verified pairs) | {percentiles(e.inliers for e in verified_genuine)} | "
        f"{percentiles((x[0].inliers for x in all_impostor_ev), (50, 99, 99.9, 100))} |")
    say(f"| photometric agreement | "
        f"{percentiles((e.agreement * 100 for e in verified_genuine), (1, 5, 50))} % | "
        f"{percentiles((x[0].agreement * 100 for x in all_impostor_ev), (50, 99, 100))} % |")
    say()
    say("Per edit, PDQ bits to the original (min over codes): "
        + "; ".join(f"{e.name} {np.median([pdq_any[k, own[k]] for k, q in enumerate(queries) if q.edit == e.name and q.photo in registered]):.0f}"  # noqa: E501
                    for e in EDITS))
    say()
    histogram_png(OUT / "pdq_hist.png", "PDQ distance: copies vs different photos (corpus)",
                  gen_pdq, imp_any, {"PDQ_COPY": rule.PDQ_COPY},
                  "Hamming distance (bits of 256), smallest over whole-image/content-box/mirror",
                  np.arange(0, 180, 3))
    histogram_png(OUT / "phash_hist.png", "Plain 64-bit pHash: copies vs different photos",
                  gen_ph, ph[different], {f"best ({ph_best})": ph_best},
                  "Hamming distance (bits of 64)", np.arange(0, 50, 1))
    evidence_png(OUT / "evidence.png", verified_genuine, [x[0] for x in all_impostor_ev])

    # -- low-information images -----------------------------------------------------------------
    say("## Low-information images")
    say()
    low = low_information_report()
    say(f"Synthetic near-blank images (dots, gradients, noise, faint lines, uniform fields): "
        f"{low['images']}, {low['pairs']} ordered pairs. PDQ quality {low['pdq_quality']}. "
        f"Without the gate the closest two are {low['closest_pdq_without_gate']} bits apart "
        f"and {low['pairs_within_pdq_copy_without_gate']} ordered pairs are within PDQ_COPY. "
        f"With the engine: {len(low['false_copies'])} copy verdicts between different images, "
        f"{low['false_similar']} similar.")
    for a, b, d in low["false_copies"][:5]:  # type: ignore[misc]
        say(f"- {a} vs {b}: {d}")
    tux = [o for o in originals if o.photo.startswith("tuxpaint")]
    tux_d = pair_distances(tux, tux, gated=True)
    np.fill_diagonal(tux_d, 999)
    for i, x in enumerate(tux):
        for j, y in enumerate(tux):
            if y.photo in partners.get(x.photo, ()):
                tux_d[i, j] = 999
    tux_pairs = [(ev, q, e, s) for ev, q, e, s in hard if q.startswith("tuxpaint")]
    say(f"Product cut-outs on white (tuxpaint, same group or similar_pairs, both directions, "
        f"originals and {', '.join(hard_edits)}): {len(tux_pairs)} pairs verified, "
        f"{sum(local_copy(x[0]) for x in tux_pairs)} copy verdicts; among all {len(tux)} tuxpaint "
        f"originals, {int((tux_d <= rule.PDQ_COPY).sum()) // 2} pairs within PDQ_COPY, closest "
        f"{int(tux_d.min())} bits.")
    say()

    # -- cost per upload -------------------------------------------------------------------------
    # Fingerprint time: bench/fingerprint.py's side-by-side measurement on 1000 px product
    # JPEGs if it has run, else the median while fingerprinting this corpus (busier, mixed).
    fp_json = OUT / "fingerprint.json"
    plain_ms = None
    if fp_json.exists():
        measured = json.loads(fp_json.read_text())["median_ms"]
        fp_ms = measured["shotstamp fingerprint (whole)"]
        plain_ms = measured["naive imagehash.phash(Image.open(f))"]
    else:
        fp_ms = float(np.median([i.ms for i in items]))
    say("## Cost per upload (one core, medians)")
    say()
    copies = genuine_results
    noncopies = impostor_results

    def cost(rs: list[QueryResult]) -> dict[str, float]:
        return {
            "search_ms": float(np.median([r.search_ms for r in rs])),
            "candidates_ms": float(np.median([r.candidates_ms for r in rs])),
            "verifications": float(np.mean([r.verifications for r in rs])),
            "verify_ms_mean": float(np.mean([r.verify_ms for r in rs])),
            "ranking_ms": float(np.median([r.ranking_ms for r in rs if r.word_candidates]
                                          or [0.0])),
            "word_candidates": float(np.mean([r.word_candidates for r in rs])),
        }

    c_copy, c_non = cost(copies), cost(noncopies)
    per_verify = float(np.median([ms for (_, ms) in cache.data.values()]))
    # At 10 M registrations: a non-copy's shortlist is full (SHORTLIST word candidates), and
    # of it at most MAX_CANDIDATES are verified, only those with MIN_CONSISTENT keypoints.
    cand_rate = (np.mean([r.word_candidates for r in noncopies]) / max(1, len(registered)))
    verif_10m = verifications_at_scale(unrelated, shortlist)
    index_json = OUT / "index.json"
    lookup_10m = None
    if index_json.exists():
        lookup_10m = json.loads(index_json.read_text()).get("at_10m_ms")
    say("| | fingerprint | stage 1 search | stage 1 candidates | word candidates | "
        "shortlist ranking | verifications | verify total |")
    say("|---|---|---|---|---|---|---|---|")
    for name, c in ((f"copies ({len(copies)})", c_copy),
                    (f"non-copies ({len(noncopies)})", c_non)):
        say(f"| {name} | {fp_ms:.1f} ms | {c['search_ms']:.2f} ms | "
            f"{c['candidates_ms']:.2f} ms | {c['word_candidates']:.2f} | "
            f"{c['ranking_ms']:.2f} ms | {c['verifications']:.2f} | "
            f"{c['verify_ms_mean']:.1f} ms |")
    lk = (f"{lookup_10m['pdq']:.1f} ms PDQ + {lookup_10m['words']:.1f} ms words (bench/index.py)"
          if lookup_10m else "run bench/index.py for the lookup cost at 10 M")
    say(f"| non-copies at 10 M (extrapolated) | {fp_ms:.1f} ms | {lk} | | {shortlist} | "
        "bench/ranking.py | "
        f"{verif_10m:.1f} | {verif_10m * per_verify:.1f} ms |")
    say()
    if plain_ms is not None:
        say(f"Fingerprint from bench/fingerprint.py (1000×1000 product JPEGs); the naive "
            f"`imagehash.phash(Image.open(f))` loop takes {plain_ms:.1f} ms there.")
    say(f"One verification (ORB match + RANSAC + photometry): {per_verify:.1f} ms median. "
        f"At corpus size a non-copy pulls in {c_non['word_candidates']:.2f} word-index candidates "
        f"on average ({cand_rate:.2e} of the registrations); at 10 M that is capped at "
        f"SHORTLIST = {shortlist}, of which the MAX_CANDIDATES = {rule.MAX_CANDIDATES} "
        "best word scores are verified, and at most as many more with MIN_CONSISTENT = "
        f"{rule.MIN_CONSISTENT} consistent keypoints.")
    say()
    say(f"Benchmark wall time: {time.perf_counter() - t_start:.0f} s.")

    report = {
        "photos": len(photos), "registered": len(registered), "held_out": len(holdout),
        "per_edit": per_edit, "overall_recall": overall, "plain_phash_best_threshold": ph_best,
        "plain_phash_overall": ph_overall,
        "false_positive_queries": len(fp_queries), "queries": len(results),
        "pairs": n_pairs, "false_match_pairs": len(fm_pairs),
        "pdq_closest_impostor": closest, "pdq_margin": closest - rule.PDQ_COPY,
        "low_information": {k: v for k, v in low.items() if k != "false_copies"},
        "cost": {"fingerprint_ms": fp_ms, "copies": c_copy, "non_copies": c_non,
                 "verify_ms": per_verify, "verifications_at_10m": verif_10m,
                 "plain_phash_ms": plain_ms},
        "rule": matcher.describe(),
    }
    (OUT / "matching.json").write_text(json.dumps(report, indent=2, default=str))
    (OUT / "matching.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
