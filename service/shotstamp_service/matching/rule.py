"""The matching rule as one table of clauses: the single place the rule is written.

`decide` (stage 2) and `Matcher.search` (stage 1) evaluate it, `describe` serves it at
`GET /v1/config`, `explain` turns the clause that decided into words for a seller, and
`python -m shotstamp_service.matching.rule --markdown` writes docs/matching-rule.md from it.
A clause holds when all its conditions hold (a missing figure holds none); the first clause
that holds, in table order, gives the verdict. Why each threshold has its value, with the
measurements and their history: docs/matching-history.md.
"""

from __future__ import annotations

import argparse
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shotstamp_service.matching.verification import (
    MIN_CELLS,
    NATIVE_SIDE,
    REMATCH_MIN_INLIERS,
    Evidence,
)

__all__ = [
    "CLAUSES",
    "THRESHOLDS",
    "Clause",
    "Cond",
    "Threshold",
    "clause_named",
    "describe_rule",
    "explain",
    "figures",
    "first_clause",
    "markdown",
    "pixels_match",
    "plausible",
]

HISTORY = "docs/matching-history.md"

# -- thresholds (one line of why each; the measurements: docs/matching-history.md) ---------

# PDQ quality below which a hash proposes candidates only (blank, flat, low contrast).
PDQ_MIN_QUALITY = 50  # history: #pdq_min_quality
# PDQ bits within which two codes are a copy at once (~4e-9 false matches per pair).
PDQ_COPY = 16  # history: #pdq_copy-and-pdq_candidate
# PDQ bits within which a code proposes a stage-2 candidate (the index's search radius).
PDQ_CANDIDATE = 31  # history: #pdq_copy-and-pdq_candidate
# Keypoint matches that must land where a PDQ candidate's alignment puts them.
GLOBAL_INLIERS_COPY = 12  # history: #global_inliers_copy-and-global_agreement_copy
# Share of cells that must agree under that alignment (no probed different pair has both).
GLOBAL_AGREEMENT_COPY = 0.8  # history: #global_inliers_copy-and-global_agreement_copy
# Guided keypoints alone where that alignment leaves too few cells (a pale product on white).
GLOBAL_INLIERS_ALONE = 30  # history: #global_inliers_alone
# RMS grey levels within which a small upload's own pixels match its original's.
GLOBAL_RESIDUAL_COPY = 12.0  # history: #global_residual
# The same, as a share of the upload's own contrast (low-contrast images differ by little).
GLOBAL_RESIDUAL_SHARE = 0.35  # history: #global_residual
# Fewest pixels (16 × 16) the small-upload comparison needs.
GLOBAL_RESIDUAL_PIXELS = 256  # history: #global_residual
# RANSAC inliers for a keypoint copy (the stereo pairs stay below on agreement).
INLIERS_COPY = 20  # history: #inliers_copy-and-agreement_copy
# Share of aligned cells that must agree for a keypoint copy.
AGREEMENT_COPY = 0.8  # history: #inliers_copy-and-agreement_copy
# Fewer inliers (or re-matched keypoints) suffice when the photometry is near perfect.
INLIERS_COPY_FEW = 12  # history: #inliers_copy_few-and-overlay_copy
AGREEMENT_COPY_FEW = 0.8  # history: #inliers_copy_few-and-overlay_copy
# Share of cells that agree or differ only by a semi-transparent overlay (a watermark).
OVERLAY_COPY = 0.85  # history: #inliers_copy_few-and-overlay_copy
# Keypoints alone where near-white pixels leave too few cells (twice the most any pair kept).
INLIERS_ALONE = 60  # history: #inliers_alone
# Clean inliers: many, nearly all the matches (a digital copy leaves few outliers).
INLIERS_CLEAN = 30  # history: #inliers_clean
INLIER_SHARE_CLEAN = 0.95  # history: #inliers_clean
AGREEMENT_CLEAN = 0.6  # history: #inliers_clean
# The same scene or a partial copy: shown, never blocks.
INLIERS_SIMILAR = 12  # history: #inliers_clean
AGREEMENT_SIMILAR = 0.6  # history: #inliers_clean
# A copy is cropped, padded, resized and turned a little: scale and turn stay within these.
SCALE_RANGE = (0.4, 2.5)  # history: #scale_range-and-max_rotation
MAX_ROTATION = 20.0  # history: #scale_range-and-max_rotation
# Registrations stored with a pHash only (before the engine): the global-hash rule.
PHASH_COPY_DISTANCE = 6  # history: #the-global-hash-rule-phash
PHASH_SIMILAR_DISTANCE = 10  # history: #the-global-hash-rule-phash

Verdict = Literal["copy", "similar"]
Number = float | int


@dataclass(frozen=True)
class Threshold:
    value: Number
    why: str


THRESHOLDS: dict[str, Threshold] = {
    "PDQ_MIN_QUALITY": Threshold(PDQ_MIN_QUALITY, "below it a PDQ code cannot tell photos "
                                 "apart (blank, flat, low contrast)"),
    "PDQ_COPY": Threshold(PDQ_COPY, "~4e-9 different-photo pairs per comparison come this "
                          "close; copies: median 2–12 bits"),
    "PDQ_CANDIDATE": Threshold(PDQ_CANDIDATE, "the index's search radius; beyond PDQ_COPY a "
                               "near code only proposes a candidate"),
    "GLOBAL_INLIERS_COPY": Threshold(GLOBAL_INLIERS_COPY, "two round objects on one background "
                                     "agree on their pixels but keep ~1 guided keypoint"),
    "GLOBAL_AGREEMENT_COPY": Threshold(GLOBAL_AGREEMENT_COPY, "96 % of PDQ copies at 17–31 "
                                       "bits reach it; no probed different pair has both"),
    "GLOBAL_INLIERS_ALONE": Threshold(GLOBAL_INLIERS_ALONE, "twice the most guided keypoints "
                                      "any probed different pair keeps (14)"),
    "GLOBAL_RESIDUAL_COPY": Threshold(GLOBAL_RESIDUAL_COPY, "small copies differ by a median "
                                      "6 grey levels; the closest different pair by 14.8"),
    "GLOBAL_RESIDUAL_SHARE": Threshold(GLOBAL_RESIDUAL_SHARE, "two low-contrast images differ "
                                       "by few grey levels however different they are"),
    "GLOBAL_RESIDUAL_PIXELS": Threshold(GLOBAL_RESIDUAL_PIXELS, "16 × 16 pixels at least; the "
                                        "smallest copy caught has 366"),
    "MIN_CELLS": Threshold(MIN_CELLS, "fewer comparable thumbnail cells (an 8th of the grid) "
                           "are no photometric evidence"),
    "INLIERS_COPY": Threshold(INLIERS_COPY, "with ≥ 20 inliers the most alike different "
                              "photos (a stereo pair) agree on 0.72"),
    "AGREEMENT_COPY": Threshold(AGREEMENT_COPY, "a margin over the stereo pair's 0.72; copies "
                                "agree on a median 0.98"),
    "INLIERS_COPY_FEW": Threshold(INLIERS_COPY_FEW, "fewer keypoints suffice when the "
                                  "photometry is near perfect"),
    "AGREEMENT_COPY_FEW": Threshold(AGREEMENT_COPY_FEW, "with 12–19 inliers different photos "
                                    "agree on at most 0.66"),
    "OVERLAY_COPY": Threshold(OVERLAY_COPY, "different photos reach at most 0.76 on the "
                              "overlay share; a watermarked copy is explained by it"),
    "INLIERS_ALONE": Threshold(INLIERS_ALONE, "keypoints decide alone only well above the 45 "
                               "any different pair re-matched"),
    "INLIERS_CLEAN": Threshold(INLIERS_CLEAN, "many clean inliers let a watermark hide more "
                               "of the pixels"),
    "INLIER_SHARE_CLEAN": Threshold(INLIER_SHARE_CLEAN, "different photos keep at most 0.905 "
                                    "of their matches as inliers; copies a median 0.92"),
    "AGREEMENT_CLEAN": Threshold(AGREEMENT_CLEAN, "with clean inliers a watermark may hide up "
                                 "to 40 % of the cells"),
    "INLIERS_SIMILAR": Threshold(INLIERS_SIMILAR, "enough keypoints for the same scene or a "
                                 "partial copy"),
    "AGREEMENT_SIMILAR": Threshold(AGREEMENT_SIMILAR, "enough agreement for the same scene or "
                                   "a partial copy"),
    "SCALE_MIN": Threshold(SCALE_RANGE[0], "a copy is resized at most 2.5× (stored / upload "
                           "size of the shared content)"),
    "SCALE_MAX": Threshold(SCALE_RANGE[1], "a copy is resized at most 2.5×"),
    "MAX_ROTATION": Threshold(MAX_ROTATION, "a copy is turned a little, not on its side"),
    "PHASH_COPY_DISTANCE": Threshold(PHASH_COPY_DISTANCE, "every copy resized to 50 % at q50 "
                                     "within 6 bits; 3 of 351,541 different pairs"),
    "PHASH_SIMILAR_DISTANCE": Threshold(PHASH_SIMILAR_DISTANCE, "shown as similar, never "
                                        "blocks"),
    "ONE": Threshold(1, "a fitted transform at all"),
}

# What each figure a clause reads means (its name is the `distances` field where there is one).
FIGURES: dict[str, str] = {
    "same_bytes": "1 when the upload's SHA-256 is the registration's",
    "pdq": "Hamming distance of the closest PDQ code pair (of 256 bits)",
    "phash": "Hamming distance of the 64-bit pHash (registrations stored with it only)",
    "aligned": "1 when stage 1 proposed the candidate by a near PDQ code of enough quality, "
               "so its alignment was checked",
    "global_agreement": "share of thumbnail cells that agree under the PDQ pair's alignment",
    "global_inliers": "keypoint matches that land where that alignment puts them",
    "global_cells": "thumbnail cells compared under that alignment",
    "global_residual": "RMS grey difference of a small upload's own pixels under it",
    "global_pixels": "pixels that difference is taken over",
    "global_contrast": "the upload's grey standard deviation over them",
    "orb_inliers": "ORB matches consistent with the RANSAC similarity transform",
    "orb_matches": "ORB ratio-test matches",
    "orb_support": f"max(orb_inliers, orb_rematched): keypoints re-matched under a transform "
                   f"of ≥ {REMATCH_MIN_INLIERS} inliers count too",
    "orb_scale": "stored size / upload size of the shared content",
    "orb_turn": "|orb_rotation|, degrees",
    "photo_agreement": "share of thumbnail cells that agree under the keypoint transform",
    "photo_cells": "thumbnail cells compared under it",
    "photo_overlay": "share of cells that agree or differ only by a white or black "
                     "semi-transparent overlay",
}

_FLAGS = ("same_bytes", "aligned")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt}


@dataclass(frozen=True)
class Cond:
    """`figure op threshold`, or `figure op threshold × of` when `of` names another figure."""

    figure: str
    op: Literal["<=", ">=", "<"]
    threshold: str
    of: str | None = None

    def __post_init__(self) -> None:  # looked up once: decide runs for every candidate
        object.__setattr__(self, "_bound", THRESHOLDS[self.threshold].value)
        object.__setattr__(self, "_compare", _OPS[self.op])

    def holds(self, values: Mapping[str, Number | None]) -> bool:
        left = values.get(self.figure)
        if left is None:
            return False
        bound: Number = self._bound  # type: ignore[attr-defined]
        if self.of is not None:
            other = values.get(self.of)
            if other is None:
                return False
            bound = bound * other
        return self._compare(left, bound)  # type: ignore[attr-defined,no-any-return]

    def text(self, *, values: bool = True) -> str:
        if self.threshold == "ONE":  # a flag holds, or a count is at least one
            return self.figure if self.figure in _FLAGS else f"{self.figure} {self.op} 1"
        bound = self.threshold
        if values:
            bound = f"{bound} ({_show(THRESHOLDS[self.threshold].value)})"
        return f"{self.figure} {self.op} {bound}" + (f" × {self.of}" if self.of else "")

    def served(self) -> str:
        """As `GET /v1/config` has always put it: "pdq hamming <= 16 (PDQ_COPY)"."""
        if self.threshold == "ONE":
            return self.text()
        figure = f"{self.figure} hamming" if self.figure in ("pdq", "phash") else self.figure
        bound = _show(THRESHOLDS[self.threshold].value)
        of = f" x {self.of}" if self.of else ""
        return f"{figure} {self.op} {bound}{of} ({self.threshold})"


@dataclass(frozen=True)
class Clause:
    """One way to reach a verdict: all `conditions` hold on the figures."""

    name: str
    verdict: Verdict
    stage: int  # 1: global hashes, in the event loop; 2: stored features, in the pool
    conditions: tuple[Cond, ...]
    why: str
    words: str  # for a seller, str.format'ed by `explain`
    scope: str = ""  # which uploads and registrations it applies to, where not all

    @property
    def reads(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for c in self.conditions:
            seen[c.figure] = None
            if c.of:
                seen[c.of] = None
        return tuple(seen)

    @property
    def thresholds(self) -> dict[str, Number]:
        return {c.threshold: THRESHOLDS[c.threshold].value for c in self.conditions
                if c.threshold != "ONE"}

    def holds(self, values: Mapping[str, Number | None]) -> bool:
        return all(c.holds(values) for c in self.conditions)


_ALIGNED = Cond("aligned", ">=", "ONE")
# A fitted transform that a copy could have: resized within SCALE_*, turned ≤ MAX_ROTATION.
_PLAUSIBLE = (Cond("orb_inliers", ">=", "ONE"), Cond("orb_scale", ">=", "SCALE_MIN"),
              Cond("orb_scale", "<=", "SCALE_MAX"), Cond("orb_turn", "<=", "MAX_ROTATION"))

CLAUSES: tuple[Clause, ...] = (
    Clause("same_file", "copy", 1, (Cond("same_bytes", ">=", "ONE"),),
           "the very same bytes", "the very same file"),
    Clause("pdq", "copy", 1, (Cond("pdq", "<=", "PDQ_COPY"),),
           "re-encodes, resizes, colour, greyscale, mirror and padding keep the PDQ code "
           "within a few bits: the bulk of real copies, decided at once",
           "{picture}, re-saved or resized ({pdq} of 256 fingerprint bits differ)",
           scope="both codes of PDQ quality ≥ PDQ_MIN_QUALITY (50)"),
    Clause("phash", "copy", 1, (Cond("phash", "<=", "PHASH_COPY_DISTANCE"),),
           "the global-hash rule, so that upgrading does not unprotect older registrations",
           "the same picture, re-saved or resized ({phash} of 64 fingerprint bits differ)",
           scope="registrations stored with a 64-bit pHash only (before the engine)"),
    Clause("phash_similar", "similar", 1, (Cond("phash", "<=", "PHASH_SIMILAR_DISTANCE"),),
           "the global-hash rule's similar band", "a similar picture ({phash} of 64 "
           "fingerprint bits differ; a copy is within {PHASH_COPY_DISTANCE})",
           scope="registrations stored with a 64-bit pHash only (before the engine)"),
    Clause("aligned", "copy", 2,
           (_ALIGNED, Cond("global_agreement", ">=", "GLOBAL_AGREEMENT_COPY"),
            Cond("global_inliers", ">=", "GLOBAL_INLIERS_COPY")),
           "a near PDQ code confirmed: the pixels agree once the frames are lined up, and "
           "keypoints land where the alignment puts them (pixels alone cannot tell two round "
           "products on one background apart)",
           "{picture}, edited: {global_agreement_pc} of it looks the same once lined up and "
           "{global_inliers} details match ({pdq} of 256 fingerprint bits differ)",
           scope=f"candidates with a PDQ code within PDQ_CANDIDATE ({PDQ_CANDIDATE}), both "
                 "of enough quality"),
    Clause("aligned_keypoints", "copy", 2,
           (_ALIGNED, Cond("global_cells", "<", "MIN_CELLS"),
            Cond("global_inliers", ">=", "GLOBAL_INLIERS_ALONE")),
           "near-white pixels leave too few cells to compare: many guided keypoints decide "
           "alone",
           "{picture} on a near-white background, edited: {global_inliers} details match "
           "where they should ({pdq} of 256 fingerprint bits differ)",
           scope="as `aligned`"),
    Clause("aligned_pixels", "copy", 2,
           (_ALIGNED, Cond("global_pixels", ">=", "GLOBAL_RESIDUAL_PIXELS"),
            Cond("global_residual", "<=", "GLOBAL_RESIDUAL_COPY"),
            Cond("global_residual", "<=", "GLOBAL_RESIDUAL_SHARE", of="global_contrast")),
           "a small upload has too few pixels for keypoints: its pixels, one by one at its "
           "own size, keep their tones",
           "{picture}, small: its pixels differ from the original's by {global_residual_gl} "
           "grey levels on average",
           scope=f"as `aligned`, for an upload no larger than the stored thumbnail "
                 f"({NATIVE_SIDE} px)"),
    Clause("keypoints", "copy", 2,
           (*_PLAUSIBLE, Cond("orb_inliers", ">=", "INLIERS_COPY"),
            Cond("photo_agreement", ">=", "AGREEMENT_COPY")),
           "many keypoints fit one plausible transform and the photo looks the same once "
           "aligned (a re-shot scene does not)",
           "{geometry}: {orb_inliers} details line up and {photo_agreement_pc} of it looks "
           "the same"),
    Clause("keypoints_few", "copy", 2,
           (*_PLAUSIBLE, Cond("orb_support", ">=", "INLIERS_COPY_FEW"),
            Cond("photo_agreement", ">=", "AGREEMENT_COPY_FEW")),
           "fewer keypoints (re-matched ones count) are enough when the photometry is near "
           "perfect", "{geometry}: {orb_support} details line up and {photo_agreement_pc} of "
           "it looks the same"),
    Clause("keypoints_overlay", "copy", 2,
           (*_PLAUSIBLE, Cond("orb_support", ">=", "INLIERS_COPY_FEW"),
            Cond("photo_overlay", ">=", "OVERLAY_COPY")),
           "a watermarked copy differs only where a semi-transparent overlay covers it",
           "{geometry}, under a watermark or overlay: {orb_support} details line up and "
           "{photo_overlay_pc} of it is the same or only covered"),
    Clause("keypoints_alone", "copy", 2,
           (*_PLAUSIBLE, Cond("orb_support", ">=", "INLIERS_ALONE"),
            Cond("photo_cells", "<", "MIN_CELLS")),
           "near-white pixels leave too few cells to compare: many keypoints decide alone",
           "{geometry}, on a near-white background: {orb_support} details line up"),
    Clause("keypoints_clean", "copy", 2,
           (*_PLAUSIBLE, Cond("orb_inliers", ">=", "INLIERS_CLEAN"),
            Cond("orb_inliers", ">=", "INLIER_SHARE_CLEAN", of="orb_matches"),
            Cond("photo_agreement", ">=", "AGREEMENT_CLEAN")),
           "a digital copy leaves almost no outlier matches, so a watermark may hide more of "
           "the pixels", "{geometry}: {orb_inliers} details line up with almost no stray "
           "match and {photo_agreement_pc} of it looks the same"),
    Clause("keypoints_clean_blank", "copy", 2,
           (*_PLAUSIBLE, Cond("orb_inliers", ">=", "INLIERS_CLEAN"),
            Cond("orb_inliers", ">=", "INLIER_SHARE_CLEAN", of="orb_matches"),
            Cond("photo_cells", "<", "MIN_CELLS")),
           "clean inliers decide alone where no cells can be compared (a pale product on "
           "white)", "{geometry}, on a near-white background: {orb_inliers} details line up "
           "with almost no stray match"),
    Clause("similar", "similar", 2,
           (*_PLAUSIBLE, Cond("orb_inliers", ">=", "INLIERS_SIMILAR"),
            Cond("photo_agreement", ">=", "AGREEMENT_SIMILAR")),
           "the same scene or a partial copy: shown to the seller and staff, never blocks",
           "a similar picture, not a copy: {orb_inliers} details line up and "
           "{photo_agreement_pc} of it looks the same (the same scene, or a part of it)"),
)
_BY_NAME = {c.name: c for c in CLAUSES}
STAGE2 = tuple(c for c in CLAUSES if c.stage == 2)
_BY_STAGE = {1: tuple(c for c in CLAUSES if c.stage == 1), 2: STAGE2}


def clause_named(name: str) -> Clause:
    return _BY_NAME[name]


def figures(pdq: int | None, global_pair: tuple[str, str] | None,
            evidence: Evidence) -> dict[str, Number | None]:
    """The raw (unrounded) figures stage-2 clauses read, from a candidate and its evidence."""
    e = evidence
    aligned = (global_pair is not None and e.global_agreement is not None
               and e.global_inliers is not None)
    return {
        "pdq": pdq, "aligned": int(aligned),
        "global_agreement": e.global_agreement, "global_inliers": e.global_inliers,
        "global_cells": e.global_cells, "global_residual": e.global_residual,
        "global_pixels": e.global_pixels, "global_contrast": e.global_contrast,
        "orb_inliers": e.inliers, "orb_matches": e.matches,
        "orb_support": max(e.inliers, e.rematched), "orb_scale": e.scale,
        "orb_turn": abs(e.rotation), "photo_agreement": e.agreement, "photo_cells": e.cells,
        "photo_overlay": e.overlay,
    }


def first_clause(values: Mapping[str, Number | None], stage: int = 2) -> Clause | None:
    """The first clause of `stage` that holds on `values`: it gives the verdict."""
    for clause in _BY_STAGE[stage]:
        if clause.holds(values):
            return clause
    return None


def plausible(evidence: Evidence) -> bool:
    """The keypoint transform's scale and turn are ones a copy could have."""
    values = figures(None, None, evidence)
    return all(c.holds(values) for c in _PLAUSIBLE[1:])


def pixels_match(evidence: Evidence) -> bool:
    """A small upload's own pixels match (`aligned_pixels` without its alignment condition)."""
    values = figures(None, None, evidence)
    return all(c.holds(values) for c in clause_named("aligned_pixels").conditions
               if c != _ALIGNED)


# -- words -----------------------------------------------------------------------------------

def _picture(pair: tuple[str, str] | None) -> str:
    """The same picture as a PDQ code pair sees it (mirror code, content box)."""
    if pair is None:
        return "the same picture"
    if pair[0] == "pdq_mirror":
        return "the same picture mirrored"
    if "pdq_trim" in pair:
        return "the same picture with a border added or removed"
    if "pdq_black" in pair:
        return "the same picture on another background"
    return "the same picture"


def _geometry(distances: Mapping[str, Number]) -> str:
    """The fitted transform in words: crop (share of the original's area), resize, turn."""
    parts = []
    coverage = distances.get("orb_coverage")
    if coverage is not None and coverage < 0.9:
        parts.append(f"cropped to ~{_pc(coverage)} of its area")
    resize = distances.get("orb_resize")
    if resize is not None and resize < 0.9:
        parts.append("shrunk")
    elif resize is not None and resize > 1.1:
        parts.append("enlarged")
    turn = distances.get("orb_rotation", 0.0)
    if abs(turn) >= 2:
        parts.append(f"turned {abs(turn):.0f}°")
    if not parts:
        return "the same photo"
    if len(parts) == 1:
        return f"the same photo {parts[0]}"
    return f"the same photo {', '.join(parts[:-1])} and {parts[-1]}"


def _pc(share: float) -> str:
    return f"{math.floor(share * 100 + 0.5)} %"


def explain(clause: Clause, distances: Mapping[str, Number],
            pdq_pair: tuple[str, str] | None = None) -> str:
    """The clause's words for a seller, filled from a match's `distances`."""
    facts: dict[str, Any] = {k: THRESHOLDS[k].value for k in THRESHOLDS}
    facts.update(distances)
    facts.setdefault("pdq", "?")
    facts["orb_support"] = max(int(distances.get("orb_inliers", 0)),
                               int(distances.get("orb_rematched", 0)))
    for name in ("global_agreement", "photo_agreement", "photo_overlay"):
        facts[f"{name}_pc"] = _pc(float(distances.get(name, 0.0)))
    facts["global_residual_gl"] = f"{float(distances.get('global_residual', 0.0)):.0f}"
    facts["picture"] = _picture(pdq_pair)
    facts["geometry"] = _geometry(distances)
    text = clause.words.format(**facts)
    return text[0].upper() + text[1:] if text else text


# -- descriptions ------------------------------------------------------------------------------

def _show(value: Number) -> str:
    return f"{value:g}" if isinstance(value, float) else f"{value:,}".replace(",", " ")


def _conditions(clause: Clause) -> str:
    return " and ".join(c.text(values=False) for c in clause.conditions)


def describe_rule() -> dict[str, Any]:
    """The table as JSON (served at GET /v1/config → matching → clauses)."""
    return {
        "order": "the first clause that holds gives the verdict; a missing figure holds none",
        "clauses": [
            {"name": c.name, "verdict": c.verdict, "stage": c.stage, "reads": list(c.reads),
             "thresholds": c.thresholds, "when": _conditions(c).replace(" and ", " AND "),
             "scope": c.scope, "why": c.why, "words": c.words}
            for c in CLAUSES
        ],
        "thresholds": {k: {"value": t.value, "why": t.why} for k, t in THRESHOLDS.items()
                       if k != "ONE"},
        "figures": FIGURES,
        "history": HISTORY,
    }


def clause_lines(verdict: Verdict) -> list[str]:
    """One line per clause of `verdict`, thresholds filled in (`describe`'s copy/similar)."""
    out = []
    for c in CLAUSES:
        if c.verdict == verdict:
            when = " and ".join(x.served() for x in c.conditions)
            out.append(f"{c.name} (stage {c.stage}): {when}"
                       + (f" [{c.scope}]" if c.scope else ""))
    return out


def markdown() -> str:
    """docs/matching-rule.md."""
    lines = [
        "# The matching rule",
        "",
        "<!-- Generated by `python -m shotstamp_service.matching.rule --markdown` from the",
        "     clause table in service/shotstamp_service/matching/rule.py: do not edit. -->",
        "",
        "Is an upload a copy of an earlier registration? The clauses below are tried in",
        "order; the first that holds gives the verdict (`copy` blocks another seller's",
        "upload, `similar` is shown and never blocks). A clause holds when all its",
        "conditions hold; a figure that is missing holds none. Stage 1 runs in the event",
        "loop on global hashes; stage 2 in the process pool on the few candidates stage 1",
        "proposes. Stage-2 keypoint clauses also need a plausible transform: "
        + " and ".join(c.text() for c in _PLAUSIBLE[1:]) + ".",
        "",
        "Why each threshold has its value, with the measurements: "
        "[matching-history.md](matching-history.md).",
        "",
        "| # | clause | verdict | stage | when | applies to | why | in words |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(CLAUSES, 1):
        when = " and ".join(f"`{x.text()}`" for x in c.conditions
                            if x not in _PLAUSIBLE and x != _ALIGNED)
        if c.conditions[:1] == (_ALIGNED,):
            when = "`aligned` and " + when
        if _PLAUSIBLE[0] in c.conditions:
            when = "plausible transform and " + when
        lines.append(f"| {i} | `{c.name}` | {c.verdict} | {c.stage} | {when} | "
                     f"{c.scope or 'all'} | {c.why} | {c.words} |")
    lines += ["", "## Thresholds", "", "| name | value | why |", "|---|---|---|"]
    lines += [f"| `{k}` | {_show(t.value)} | {t.why} |" for k, t in THRESHOLDS.items()
              if k != "ONE"]
    lines += ["", "## Figures", "", "| figure | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in FIGURES.items()]
    lines += ["", "In words, `{picture}` names what the PDQ code pair saw (mirrored, a border "
              "added or removed) and `{geometry}` the fitted transform: the share of the "
              "original's area the copy shows (`orb_coverage`), whether it was shrunk or "
              "enlarged (`orb_resize`, from both uploads' pixel sizes) and its turn.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print docs/matching-rule.md")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(), end="")
    else:
        import json
        print(json.dumps(describe_rule(), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
