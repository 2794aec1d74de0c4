"""`verification`'s keypoint matching as it was at commit ec51195 (OpenCV's `knnMatch` and
DMatch objects walked in Python), kept verbatim as the reference the array version must
reproduce exactly (test_matching_stage2_exact.py). The rest of stage 2 is today's: `verify_pair`
here differs from `verification.verify_pair` only in the functions below. Not used by the
service."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from shotstamp_service.matching.features import LocalFeatures
from shotstamp_service.matching.verification import (
    GUIDED_TOLERANCE, MIN_MATCHES, PHOTOMETRY_MIN_INLIERS, RANSAC_THRESHOLD, RATIO,
    REMATCH_DISTANCE, REMATCH_MIN_INLIERS, Evidence, _geometry, _resize, _thumbnail_keypoints,
    agreement, global_transform, residual,
)


def verify_pair(query: LocalFeatures, stored: LocalFeatures,
                pdq_pair: tuple[str, str] | None = None) -> Evidence:
    """Evidence that `query` is a copy of `stored`.

    `pdq_pair` — (query code, stored code) names, e.g. ("pdq_mirror", "pdq_trim") — when the
    candidate came from a near PDQ code: the global alignment is then checked too.
    """
    keypoints = _keypoint_evidence(query, stored)
    if pdq_pair is None:
        return keypoints
    transform = global_transform(query, stored, *pdq_pair)
    global_agreement, global_cells, _ = agreement(query, stored, transform)
    global_inliers, qxy, sxy = _guided_inliers(query, stored, transform,
                                               mirrored=pdq_pair[0] == "pdq_mirror")
    small = residual(query, stored, transform)
    if small is not None:
        keypoints = replace(keypoints, global_residual=small[0], global_pixels=small[1],
                            global_contrast=small[2])
    return replace(keypoints, global_agreement=global_agreement, global_inliers=global_inliers,
                   global_cells=global_cells,
                   global_geometry=_geometry("aligned", transform, qxy, sxy, query, stored))


def _nearest(query: np.ndarray, stored: np.ndarray) -> Sequence[Sequence[cv2.DMatch]]:
    """Each query descriptor's two nearest stored descriptors."""
    if len(query) < 2 or len(stored) < 2:
        return []
    return cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query, stored, k=2)


def _ratio_matches(query: np.ndarray, stored: np.ndarray,
                   nearest: Sequence[Sequence[cv2.DMatch]] | None = None) -> list[tuple[int, int]]:
    """(query index, stored index) of Lowe ratio-test matches, one per stored keypoint."""
    if nearest is None:
        nearest = _nearest(query, stored)
    best: dict[int, tuple[float, int]] = {}
    for pair in nearest:
        if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance:
            m = pair[0]
            if m.trainIdx not in best or m.distance < best[m.trainIdx][0]:
                best[m.trainIdx] = (m.distance, m.queryIdx)
    return [(q, t) for t, (_, q) in best.items()]


def _guided_inliers(query: LocalFeatures, stored: LocalFeatures, transform: np.ndarray,
                    *, mirrored: bool) -> tuple[int, np.ndarray, np.ndarray]:
    """Ratio-test matches that `transform` (continuous coordinates) maps onto each other: their
    count and their (query, stored) points."""
    if mirrored:
        qxy, qd = _thumbnail_keypoints(query.thumbnail, query.shape, mirror=True)
        sxy, sd = _thumbnail_keypoints(stored.thumbnail, stored.shape, mirror=False)
        tolerance = 2 * GUIDED_TOLERANCE
    else:
        qxy, qd = query.xy.astype(np.float64) + 0.5, query.descriptors
        sxy, sd = stored.xy.astype(np.float64) + 0.5, stored.descriptors
        tolerance = GUIDED_TOLERANCE
    pairs = _ratio_matches(qd, sd)
    if not pairs:
        return 0, np.zeros((0, 2)), np.zeros((0, 2))
    qi = np.array([q for q, _ in pairs])
    si = np.array([t for _, t in pairs])
    predicted = qxy[qi] @ transform[:, :2].T + transform[:, 2]
    near = np.linalg.norm(predicted - sxy[si], axis=1) <= tolerance
    return int(near.sum()), qxy[qi[near]], sxy[si[near]]


def _keypoint_evidence(query: LocalFeatures, stored: LocalFeatures) -> Evidence:
    # (1): nothing to match
    if len(query) < MIN_MATCHES or len(stored) < MIN_MATCHES:
        return Evidence()
    # (2): ratio-test matches, at most one query keypoint per stored keypoint
    nearest = _nearest(query.descriptors, stored.descriptors)
    pairs = _ratio_matches(query.descriptors, stored.descriptors, nearest)
    if len(pairs) < MIN_MATCHES:
        return Evidence(matches=len(pairs))
    src = query.xy[np.array([q for q, _ in pairs])]
    dst = stored.xy[np.array([t for _, t in pairs])]
    # (3): a similarity transform query → stored, fitted with RANSAC
    transform, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD,
        maxIters=2000, confidence=0.995, refineIters=10,
    )
    if transform is None or inliers is None:
        return Evidence(matches=len(pairs))
    count = int(inliers.sum())
    scale = math.hypot(transform[0, 0], transform[1, 0])
    rotation = math.degrees(math.atan2(transform[1, 0], transform[0, 0]))
    # index → continuous coordinates
    a, t = transform[:, :2], transform[:, 2]
    continuous = np.hstack([a, (t + 0.5 - a @ np.array([0.5, 0.5]))[:, None]])
    kept = inliers.ravel().astype(bool)
    geometry = _geometry("similarity", continuous, src[kept] + 0.5, dst[kept] + 0.5, query,
                         stored)
    # (4): every keypoint pair the transform puts together, ratio test or not
    rematched = _rematch(query, stored, transform, nearest) if count >= REMATCH_MIN_INLIERS else 0
    if max(count, rematched) < PHOTOMETRY_MIN_INLIERS:
        return Evidence(len(pairs), count, scale, rotation, rematched=rematched,
                        geometry=geometry)
    # (5): how much of the overlap looks the same once aligned
    share, cells, overlay = agreement(query, stored, continuous)
    return Evidence(len(pairs), count, scale, rotation, share, cells, rematched=rematched,
                    overlay=overlay, geometry=geometry, coverage=geometry.covered(),
                    resize=_resize(query, stored, scale))


def _rematch(query: LocalFeatures, stored: LocalFeatures, transform: np.ndarray,
             nearest: Sequence[Sequence[cv2.DMatch]]) -> int:
    """One-to-one pairs among each query keypoint's two nearest descriptors that `transform`
    (index coordinates, query → stored) puts within GUIDED_TOLERANCE of each other, at most
    REMATCH_DISTANCE bits apart: the ratio test's rejects that the geometry vouches for."""
    found = np.array([(m.distance, m.queryIdx, m.trainIdx) for pair in nearest for m in pair
                      if m.distance <= REMATCH_DISTANCE]).reshape(-1, 3)
    d, qi, si = found[:, 0], found[:, 1].astype(np.intp), found[:, 2].astype(np.intp)
    offsets = query.xy[qi] @ transform[:, :2].T + transform[:, 2] - stored.xy[si]
    near = np.flatnonzero((offsets * offsets).sum(axis=1) <= GUIDED_TOLERANCE ** 2)
    ranked = near[np.argsort(d[near], kind="stable")]
    ranked = ranked[np.unique(qi[ranked], return_index=True)[1]]
    return len(np.unique(si[ranked]))
