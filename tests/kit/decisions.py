"""Evidence to pin the matching rule's verdicts: real stage-2 evidence from the bundled photos
and their edits, and synthetic evidence around every threshold (`synthetic_cases`).

`python tests/matching/decisions.py` wrote tests/testdata/matching-decisions.json with the
verdicts of `decide` as it stood before the rule became a table of clauses (commit ef181f6);
test_matching_rule.py asserts the table-driven `decide` gives the same verdict on every case.
"""

from __future__ import annotations

import dataclasses
import json
import random
from itertools import product
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "testdata" / "matching-decisions.json"

# Every figure decide reads, with values just below, at and above each threshold it is compared
# with (and the extremes); None where the figure may be missing.
_INT_VALUES = [0, 1, 5, 6, 11, 12, 13, 19, 20, 21, 29, 30, 31, 44, 45, 59, 60, 61, 200]
_SHARE_VALUES = [0.0, 0.3, 0.5999, 0.6, 0.6001, 0.75, 0.7999, 0.8, 0.8001, 0.8499, 0.85,
                 0.8501, 1.0]


def synthetic_cases(n: int = 20_000, seed: int = 23) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(candidate fields, evidence fields) pairs, deterministic for a seed."""
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        pdq = rng.choice([None, 17, 31])
        pair = rng.choice([None, ("pdq", "pdq"), ("pdq_mirror", "pdq_trim")]) if pdq else None
        candidate = {"ref": 7, "pdq": pdq, "pdq_pair": pair, "gated": rng.random() < 0.2,
                     "words": 0.0, "votes": rng.choice([0, 2, 5])}
        inliers = rng.choice(_INT_VALUES)
        has_global = rng.random() < 0.5
        has_pixels = has_global and rng.random() < 0.5
        contrast = rng.choice([0.0, 10.0, 34.2857, 34.3, 40.0])
        evidence = {
            "matches": rng.choice([inliers, inliers + 1, inliers + 2, int(inliers * 1.06) + 1,
                                   inliers * 2, 300]),
            "inliers": inliers,
            "scale": rng.choice([0.0, 0.39, 0.4, 0.41, 1.0, 2.49, 2.5, 2.51, 5.0]),
            "rotation": rng.choice([0.0, 5.0, -19.99, 20.0, -20.0, 20.01, -45.0]),
            "agreement": rng.choice(_SHARE_VALUES),
            "cells": rng.choice([0, 31, 32, 33, 256]),
            "global_agreement": rng.choice(_SHARE_VALUES) if has_global else None,
            "global_inliers": rng.choice(_INT_VALUES) if has_global else None,
            "global_cells": rng.choice([None, 0, 31, 32, 200]) if has_global else None,
            "global_residual": rng.choice([0.0, 6.0, 11.99, 12.0, 12.01, 14.8]) if has_pixels
            else None,
            "global_pixels": rng.choice([0, 255, 256, 257, 4000]) if has_pixels else None,
            "global_contrast": contrast if has_pixels else None,
            "rematched": rng.choice([0, *_INT_VALUES]),
            "overlay": rng.choice(_SHARE_VALUES),
        }
        cases.append((candidate, evidence))
    return cases


def _real_cases() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every stage-2 candidate of every bundled photo and every edit of it, as the engine
    proposes them, and every (edit, registered photo) pair verified under its closest PDQ
    code pair, whether or not stage 1 would propose it."""
    from shotstamp_service.matching.engine import Candidate, Matcher, verify
    from shotstamp_service.matching.fingerprint import fingerprint
    from shotstamp_service.matching.hashes import PerceptualHash
    from tests.kit.bundled_photos import BUNDLED_PHOTOS, load_bundled
    from tests.kit.edits import EDITS, apply_edit

    bundled = {p.file: load_bundled(p) for p in BUNDLED_PHOTOS}
    files = [p.file for p in BUNDLED_PHOTOS]
    names = {p.file: p.name for p in BUNDLED_PHOTOS}
    fps = {f: fingerprint(bundled[f][0]) for f in files}
    matcher = Matcher(background=False)
    for ref, f in enumerate(files):
        matcher.add(ref, fps[f])
    cases = []
    for f, edit in product(files, (None, *EDITS)):
        data = bundled[f][0] if edit is None else apply_edit(edit, bundled[f][1], photo=names[f])
        fp = fingerprint(data)
        proposed = {c.ref: c for c in matcher.candidates(fp, limit=None)}
        for ref, g in enumerate(files):
            candidate = proposed.get(ref)
            if candidate is None:
                pairs = [(PerceptualHash(a) - PerceptualHash(b), (na, nb))
                         for na, a, _ in fp.pdq_codes(query=True)
                         for nb, b, _ in fps[g].pdq_codes()]
                if not pairs:
                    continue
                distance, pair = min(pairs)
                candidate = Candidate(ref, distance, pair)
            if fp.features is None or fps[g].features is None:
                continue
            evidence = verify(fp.features, fps[g].features, candidate.global_pair)
            cases.append((dataclasses.asdict(candidate), dataclasses.asdict(evidence)))
    return cases


def main() -> None:
    from shotstamp_service.matching.engine import Candidate, decide
    from shotstamp_service.matching.verification import Evidence

    def verdict(candidate: dict[str, Any], evidence: dict[str, Any]) -> str:
        c = dict(candidate, pdq_pair=tuple(candidate["pdq_pair"]) if candidate["pdq_pair"]
                 else None)
        m = decide(Candidate(**c), Evidence(**evidence))
        return "-" if m is None else m.verdict[0]

    real = [[c, e, verdict(c, e)] for c, e in _real_cases()]
    synthetic = "".join(verdict(c, e) for c, e in synthetic_cases())
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps({"real": real, "synthetic": synthetic},
                                  separators=(",", ":")) + "\n")
    print(f"{len(real)} real cases {[sum(r[2] == k for r in real) for k in 'cs-']}, "
          f"{len(synthetic)} synthetic {[synthetic.count(k) for k in 'cs-']} (copy, similar, none)")


if __name__ == "__main__":
    main()
