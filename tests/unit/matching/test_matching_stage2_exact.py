"""Stage 2's keypoint matching as arrays (`verification._nearest` through OpenCV's
`batchDistance`, the ratio test and re-matching in numpy) gives what the DMatch version gave,
kept verbatim in `verification_ec51195.py`: the same pairs in the same order, hence the same
RANSAC draws and the same evidence, field by field, geometry included."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shotstamp_service.matching import verification
from shotstamp_service.matching.features import LocalFeatures
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from tests.kit.bundled_photos import BUNDLED_PHOTOS
from tests.kit.corpus import load_photos, original_bytes
from tests.kit.edits import EDITS, apply_edit
from tests.unit.matching import verification_ec51195 as before

# Code pairs a PDQ candidate can come with (`Candidate.global_pair`): each alignment is checked.
PAIRS: tuple[tuple[str, str] | None, ...] = (None, ("pdq", "pdq"), ("pdq_trim", "pdq_trim"),
                                            ("pdq_mirror", "pdq"))


# The edits whose copies exercise every step (ratio test, RANSAC, re-matching, the grid, the
# mirrored thumbnails' keypoints) and non-copies' near misses; all 20 run in bench/stage2.py.
EDITED = ("crop_offcentre", "rotate", "combination", "mirror", "watermark_text", "downscale_25")


def _local(fp: Fingerprint) -> LocalFeatures:
    blob = fp.to_store()[1]  # the stored form, as stage 2 reads a registration
    assert blob is not None
    return LocalFeatures.from_bytes(blob)


def _query(fp: Fingerprint) -> LocalFeatures:
    assert fp.local is not None
    return fp.local


def _same_matching(query: LocalFeatures, stored: LocalFeatures,
                   pairs: tuple[tuple[str, str] | None, ...] = PAIRS) -> int:
    """Asserts the nearest descriptors, the ratio-test pairs and the whole evidence under every
    alignment equal the reference's; returns the keypoint inliers (so a test can tell that
    copies were among the pairs)."""
    old = before._nearest(query.descriptors, stored.descriptors)
    distance, index = verification._nearest(query.descriptors, stored.descriptors)
    assert [[(m.queryIdx, m.trainIdx, m.distance) for m in pair] for pair in old] \
        == [[(q, int(t), float(d)) for t, d in zip(ts, ds, strict=True)]
            for q, (ts, ds) in enumerate(zip(index, distance, strict=True))]
    qi, si = verification._ratio_matches(query.descriptors, stored.descriptors)
    assert list(zip(qi.tolist(), si.tolist(), strict=True)) \
        == before._ratio_matches(query.descriptors, stored.descriptors)
    inliers = 0
    for pair in pairs:
        got = verification.verify_pair(query, stored, pair)
        want = before.verify_pair(query, stored, pair)
        assert dataclasses.astuple(got) == dataclasses.astuple(want), pair
        inliers = max(inliers, got.inliers)
    return inliers


def _bundled_fingerprints(bundled: dict[str, tuple[bytes, Any]],
                          ) -> dict[tuple[str, str], Fingerprint]:
    out = {}
    for photo in BUNDLED_PHOTOS:
        data, image = bundled[photo.file]
        out[(photo.name, "original")] = fingerprint(data)
        for edit in EDITS:
            if edit.name not in EDITED:
                continue
            out[(photo.name, edit.name)] = fingerprint(apply_edit(edit, image, photo=photo.name))
    return out


def test_every_edit_of_the_bundled_photos_is_verified_as_before(
        bundled: dict[str, tuple[bytes, Any]]) -> None:
    """Each bundled photo's hard edits against its own original (copies: hundreds of inliers,
    re-matching, the photometric grid) and against the next two originals (non-copies)."""
    fps = _bundled_fingerprints(bundled)
    originals = {name: _local(fp) for (name, edit), fp in fps.items() if edit == "original"}
    names = list(originals)
    copies = 0
    for (name, edit), fp in fps.items():
        if edit == "original":
            continue
        copies += _same_matching(_query(fp), originals[name]) >= 20
        k = names.index(name)
        for other in (names[(k + 1) % len(names)], names[(k + 2) % len(names)]):
            _same_matching(_query(fp), originals[other], PAIRS[:2])
    assert copies > len(originals) * len(EDITED) // 2


def test_corpus_photos_are_verified_as_before(photos: Path) -> None:
    """8 corpus photos' hard edits against their own original and three others."""
    chosen = [p for p in load_photos(photos) if min(p.width, p.height) >= 256]
    chosen = chosen[:: max(1, len(chosen) // 8)][:8]
    originals = {p.file: original_bytes(photos / p.file) for p in chosen}
    stored = {f: _local(fingerprint(data)) for f, (data, _) in originals.items()}
    files = list(stored)
    hard = [e for e in EDITS if e.name in ("crop_offcentre", "rotate", "combination", "mirror")]
    copies = 0
    for k, file in enumerate(files):
        for edit in hard:
            query = _query(fingerprint(apply_edit(edit, originals[file][1], photo=file)))
            copies += _same_matching(query, stored[file]) >= 20
            for other in (files[(k + j) % len(files)] for j in (1, 2, 3)):
                _same_matching(query, stored[other])
    assert copies > len(files) * len(hard) // 2  # copies with RANSAC inliers were compared


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_too_few_descriptors_give_no_pairs(n: int) -> None:
    rng = np.random.default_rng(n)
    few = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    many = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    for query, stored in ((few, many), (many, few)):
        qi, si = verification._ratio_matches(query, stored)
        assert list(zip(qi.tolist(), si.tolist(), strict=True)) \
            == before._ratio_matches(query, stored)
        if n < 2:
            assert len(qi) == 0
