"""Stage 2: is this candidate pair one picture? Evidence from keypoints and from the pixels.

Pure and deterministic (OpenCV's RANSAC seeds its own generator), so `verify_pair` runs in the
process pool on the few candidates stage 1 returns, and any result can be replayed.

Two alignments, each followed by the same photometric comparison:

- **Global** (`global_transform`), for a candidate found by a near PDQ code: PDQ says the whole
  image (or its content box, or its mirror) looks alike, so the alignment is the one the code
  pair implies — the two frames (or boxes) stretched onto each other, mirrored if the query's
  mirror code matched. This also covers aspect-ratio stretches and mirrors, which the keypoint
  model below does not. Pixels alone are not enough here: two different round products of one
  size on one background agree almost everywhere (tuxpaint's uranus and neptune discs agree on
  0.87–0.97 of the cells), so the keypoint matches that land where the alignment puts them are
  counted too (`global_inliers`; for a mirror, ORB is re-run on the two thumbnails, the query's
  mirrored, since ORB descriptors are not mirror-invariant). An upload no larger than the stored
  thumbnail (a stamp shrunk to 40 px) has next to no keypoints; its pixels are then compared one
  by one at its own size (`residual`): a copy has its tones, a different round product on the
  same background does not.
- **Keypoints**: brute-force Hamming matching of ORB descriptors with Lowe's ratio test, at most
  one query keypoint per stored keypoint, then a similarity transform (rotation, uniform scale,
  translation) fitted with RANSAC. The inlier count is the evidence; the transform aligns.
  Once a transform is fitted, the keypoints are matched again under it (`rematched`): a pair
  counts when the transform puts the two keypoints together and their descriptors are close,
  whatever the ratio test said. The ratio test drops a true pair whenever a second keypoint
  looks nearly as alike, which on a small, blurred or watermarked copy is most of them; a
  transform that is right pairs them up again, a chance transform pairs almost none.

The photometric comparison (`agreement`) warps the stored thumbnail onto the query's, fits a
global gain and offset (brightness and contrast edits), drops near-white pixels (clipped
highlights, shared white backgrounds: no evidence either way) and splits the rest into an 16×16
grid:
a textured cell agrees when its pixels correlate, a flat cell when its mean level matches. A
copy agrees almost everywhere outside its watermark or logo; a different photo of the same
scene (a stereo pair, the next frame of an animation, a sprite in another pose) agrees only
where it happens to be identical. A second share (`overlay`) also counts the cells that differ
only as a semi-transparent white or black overlay makes them differ — the usual text
watermark: part of the cell unchanged, part moved towards white (or black), nothing moved the
other way. A parallax shift or a different object moves pixels both ways.

Coordinates: keypoints are in OpenCV pixel-index coordinates of the canonical image (pixel
centres at integers); global transforms are built in continuous coordinates (pixel centres at
+0.5) and converted, so that a mirror maps column i to column w − 1 − i exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from shotstamp_service.matching.features import LocalFeatures
from shotstamp_service.matching.hashes import content_box

__all__ = ["Evidence", "Geometry", "agreement", "global_transform", "residual", "verify_pair"]

# Keypoints: Lowe's ratio, and the RANSAC reprojection threshold in canonical pixels (copies
# fit to ~0.8 px median; 3 px leaves room for resampling at another scale).
RATIO = 0.8
RANSAC_THRESHOLD = 3.0
MIN_MATCHES = 6
# Below this many inliers no keypoint verdict is possible (matching.INLIERS_SIMILAR and
# INLIERS_COPY_FEW are not lower), so the photometric comparison is skipped: most candidates
# that are not copies stop here, which halves their cost.
PHOTOMETRY_MIN_INLIERS = 12
# Photometry: a 16×16 grid over the query thumbnail (8 px cells on the 128 px thumbnail); a
# cell is compared when at least 80 % of it lies inside the stored image once aligned. Smaller
# cells fit inside thin objects on white and between a watermark's strokes: on the corpus the
# most alike different-photo pair with ≥ 20 inliers agrees on 0.64 with 16×16 cells against
# 0.73 with 8×8, while copies keep a median of 0.98 (matching.AGREEMENT_COPY). Computed for
# all cells at once from integral images (~0.2 ms for 256 cells), not cell by cell.
GRID = 16
CELL_COVERAGE = 0.8
CELL_CORRELATION = 0.5  # textured cells agree when their pixels correlate above this
FLAT_STD = 4.0  # a cell this flat (grey levels) in both images is compared by its mean
FLAT_DIFFERENCE = 20.0  # grey levels, after the global gain/offset fit
# Pixels that say nothing are left out: white in both images (a white background agrees with
# any other white background), and a highlight clipped to white in one image where the other
# is merely bright (a brightened or contrast-stretched copy), likewise near black. Content in
# one image against white in the other stays: that is a difference. A cell is compared only if
# at least CELL_COVERAGE of it is inside the overlap and informative.
WHITE = 250
CLIPPED_FROM = 180  # a bright pixel that an edit of ×1.3–1.5 would clip to white
BLACK = 5
CLIPPED_FROM_DARK = 60
MIN_CELLS = 32  # fewer comparable cells (an 8th of the grid): no photometric evidence
# A semi-transparent overlay (`overlay` share): in a cell it explains, at most OVERLAY_AGAINST
# of the pixels moved by more than OVERLAY_TOLERANCE grey levels away from the overlay's colour
# (JPEG noise), at least OVERLAY_CHANGED moved towards it (the strokes), and at least
# OVERLAY_UNCHANGED did not move (between the strokes): a cell moved all over is a different
# cell, or a brightness change the gain fit should have taken. One colour per pair, white or
# black, whichever explains more cells.
OVERLAY_TOLERANCE = 12.0
OVERLAY_AGAINST = 0.05
OVERLAY_CHANGED = 0.1
OVERLAY_UNCHANGED = 0.2
# Re-matching under the fitted transform: among each query keypoint's two nearest stored
# descriptors (the ratio test's own candidates), a pair counts if the transform puts the two
# keypoints within GUIDED_TOLERANCE canonical pixels and their descriptors differ in at most
# REMATCH_DISTANCE of 256 bits; closest first, one to one. Corpus, keypoint pairs a copy's
# transform puts together: median 28 bits for crop_90 (87 % within 64), 47 for the
# combination (68 %); random pairs of descriptors from different photos: median 124, 0.6 %
# within 64. A transform fitted on fewer than REMATCH_MIN_INLIERS inliers is not trusted to
# guide: with 4–5 chance inliers, two sprites on white (referee1 / cassy-jumping) re-matched 12
# keypoints and agreed on every cell (measured with a search of every keypoint within reach,
# not only the two nearest descriptors).
REMATCH_DISTANCE = 64
REMATCH_MIN_INLIERS = 6
# Global alignment: a ratio-test match counts when the stored keypoint lies within this many
# canonical pixels of where the alignment puts the query keypoint (twice as far for keypoints
# found on the 128 px thumbnails).
GUIDED_TOLERANCE = 4.0
# Small uploads: when the query itself is no larger than the stored thumbnail (long side ≤
# NATIVE_SIDE), every pixel it has can be compared, so the global alignment is also checked
# pixel by pixel at the query's own size (`residual`): the stored thumbnail, warped and
# area-averaged down to it, against the query's thumbnail averaged back to it. Pixels white
# (or black) in both say nothing and are left out; no gain or offset is fitted, so only a
# copy with its tones unchanged comes close.
NATIVE_SIDE = 128
# Evidence for people (the desk's keypoint lines): at most this many inlier pairs travel back
# from the pool with a transform, spread over all of them.
GEOMETRY_PAIRS = 100


def _thumbnail_orb() -> cv2.ORB:
    # The thumbnails are 128 px: a smaller patch and pyramid than on the canonical image.
    return cv2.ORB.create(nfeatures=200, scaleFactor=1.25, nlevels=4, edgeThreshold=10,
                          patchSize=21)


@dataclass(frozen=True)
class Geometry:
    """Where the query sits in the stored image: what stage 2 fitted, kept to show people.

    Continuous canonical coordinates (origin at the top-left corner, pixel centres at +0.5):
    `transform` (2×3) maps the query's canonical image onto the stored one's; `pairs` (n×4,
    float32) holds inlier keypoint pairs (query x, y, stored x, y); sizes are (width, height).
    Held as a tuple and bytes, which cross the process pool for a fraction of what arrays cost.
    """

    model: str  # "similarity" (keypoints, RANSAC) or "aligned" (a PDQ code pair's frames)
    matrix: tuple[float, ...]  # the 2×3 transform, row by row
    pair_bytes: bytes  # the pairs, float32
    query_size: tuple[int, int]
    stored_size: tuple[int, int]

    @property
    def transform(self) -> np.ndarray:
        return np.array(self.matrix, np.float64).reshape(2, 3)

    @property
    def pairs(self) -> np.ndarray:
        return np.frombuffer(self.pair_bytes, np.float32).reshape(-1, 4)

    def outline(self) -> np.ndarray:
        """The query's corners (top-left, top-right, bottom-right, bottom-left) in the stored
        image's coordinates, 4×2."""
        w, h = self.query_size
        corners = np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]])
        out: np.ndarray = corners @ self.transform[:, :2].T + self.transform[:, 2]
        return out

    def covered(self) -> float:
        """Share of the stored image the query's outline covers."""
        w, h = self.stored_size
        frame = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        outline = self.outline().astype(np.float32)
        if cv2.contourArea(outline, oriented=True) < 0:  # a mirror turns the corners around
            outline = outline[::-1].copy()
        area, _ = cv2.intersectConvexConvex(outline, frame)
        return float(area) / (w * h) if w * h else 0.0

    def rotation(self) -> float:
        """Degrees the query is turned against the stored image, counter-clockwise as seen
        (after undoing a left-right mirror, if any)."""
        m = self.matrix
        sign = -1.0 if self.mirrored() else 1.0
        return math.degrees(math.atan2(sign * m[3], sign * m[0]))

    def scale(self) -> float:
        """Stored pixels per query pixel (geometric mean of the two axes)."""
        return math.sqrt(abs(float(np.linalg.det(self.transform[:, :2]))))

    def mirrored(self) -> bool:
        return float(np.linalg.det(self.transform[:, :2])) < 0


def _geometry(model: str, transform: np.ndarray, query_xy: np.ndarray, stored_xy: np.ndarray,
              query: LocalFeatures, stored: LocalFeatures) -> Geometry:
    """A Geometry from arrays stage 2 already holds (continuous coordinates)."""
    step = max(1, -(-len(query_xy) // GEOMETRY_PAIRS))
    pairs = np.hstack([query_xy[::step], stored_xy[::step]]).astype(np.float32)
    return Geometry(model, tuple(np.asarray(transform, np.float64).ravel().tolist()),
                    pairs.tobytes(), (query.shape[1], query.shape[0]),
                    (stored.shape[1], stored.shape[0]))


@dataclass(frozen=True)
class Evidence:
    """What stage 2 found about one (query, stored) pair."""

    matches: int = 0  # ratio-test matches, one per stored keypoint
    inliers: int = 0  # matches consistent with the fitted similarity transform
    scale: float = 0.0  # stored size / query size of the shared content
    rotation: float = 0.0  # degrees
    agreement: float = 0.0  # share of thumbnail cells that agree under the keypoint alignment
    cells: int = 0  # thumbnail cells compared under the keypoint alignment
    global_agreement: float | None = None  # the same under the PDQ code pair's alignment
    global_inliers: int | None = None  # keypoint matches consistent with that alignment
    global_cells: int | None = None  # thumbnail cells compared under that alignment
    # For a small query (`residual`): the RMS grey difference under that alignment at its own
    # size, the pixels it was taken over, and the query's grey standard deviation over them
    global_residual: float | None = None
    global_pixels: int | None = None
    global_contrast: float | None = None
    rematched: int = 0  # keypoint pairs found again under the keypoint transform
    overlay: float = 0.0  # share of cells that agree or differ only by a white/black overlay
    # Where the query sits, under the keypoint transform and under the PDQ alignment (shown to
    # people, never part of the decision)
    geometry: Geometry | None = field(default=None, compare=False)
    global_geometry: Geometry | None = field(default=None, compare=False)
    # Geometry of the keypoint transform, for words only (no clause reads them): the share of
    # the stored image's area the query shows, and the query's pixel size relative to it.
    coverage: float | None = None
    resize: float | None = None

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "orb_matches": self.matches,
            "orb_inliers": self.inliers,
            "orb_scale": round(self.scale, 3),
            "orb_rotation": round(self.rotation, 2),
            "photo_agreement": round(self.agreement, 3),
            "photo_cells": self.cells,
        }
        if self.rematched:
            out["orb_rematched"] = self.rematched
        if self.cells:
            out["photo_overlay"] = round(self.overlay, 3)
        if self.coverage is not None:
            out["orb_coverage"] = round(self.coverage, 3)
        if self.resize is not None:
            out["orb_resize"] = round(self.resize, 3)
        if self.global_agreement is not None:
            out["global_agreement"] = round(self.global_agreement, 3)
        if self.global_inliers is not None:
            out["global_inliers"] = self.global_inliers
        if self.global_cells is not None:
            out["global_cells"] = self.global_cells
        if self.global_residual is not None:  # set with global_pixels and global_contrast
            out["global_residual"] = round(self.global_residual, 2)
            out["global_pixels"] = self.global_pixels or 0
            out["global_contrast"] = round(self.global_contrast or 0.0, 2)
        return out


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


Nearest = tuple[np.ndarray, np.ndarray]  # (distances, stored indices), (n, 2) int32 each


def _nearest(query: np.ndarray, stored: np.ndarray) -> Nearest:
    """Each query descriptor's two nearest stored descriptors, the nearer first: the kernel
    OpenCV's brute-force matcher runs (`knnMatch`, k=2), as arrays instead of DMatch objects."""
    if len(query) < 2 or len(stored) < 2:
        return np.zeros((0, 2), np.int32), np.zeros((0, 2), np.int32)
    distance, index = cv2.batchDistance(query, stored, cv2.CV_32S, normType=cv2.NORM_HAMMING,
                                        K=2)
    return distance, index


def _ratio_matches(query: np.ndarray, stored: np.ndarray,
                   nearest: Nearest | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, stored indices) of Lowe ratio-test matches, one per stored keypoint: its
    closest query keypoint (the first on a tie), in the order the stored keypoints are first
    met going through the query's."""
    distance, index = _nearest(query, stored) if nearest is None else nearest
    rows = np.flatnonzero(distance[:, 0] < RATIO * distance[:, 1])
    if not len(rows):
        return rows, rows.astype(np.intp)
    target, closest = index[rows, 0], distance[rows, 0]
    order = np.lexsort((rows, closest, target))  # by stored keypoint, closest, first
    starts = np.flatnonzero(np.concatenate(([True], target[order[1:]] != target[order[:-1]])))
    # Each stored keypoint's winner, and where it was first met (`rows` ascend: its least
    # position), ordered by the latter.
    chosen = order[starts][np.argsort(np.minimum.reduceat(order, starts))]
    return rows[chosen], target[chosen].astype(np.intp)


def _thumbnail_keypoints(image: np.ndarray, shape: tuple[int, int],
                         mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    """ORB on a thumbnail: (continuous canonical coordinates, descriptors)."""
    th, tw = image.shape
    if mirror:
        image = np.ascontiguousarray(image[:, ::-1])
    keypoints, descriptors = _thumbnail_orb().detectAndCompute(image, None)
    if descriptors is None:
        return np.zeros((0, 2)), np.zeros((0, 32), np.uint8)
    xy = np.array([k.pt for k in keypoints], np.float64) + 0.5
    if mirror:
        xy[:, 0] = tw - xy[:, 0]
    return xy * np.array([shape[1] / tw, shape[0] / th]), descriptors


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
    qi, si = _ratio_matches(qd, sd)
    if not len(qi):
        return 0, np.zeros((0, 2)), np.zeros((0, 2))
    predicted = qxy[qi] @ transform[:, :2].T + transform[:, 2]
    near = np.linalg.norm(predicted - sxy[si], axis=1) <= tolerance
    return int(near.sum()), qxy[qi[near]], sxy[si[near]]


def _keypoint_evidence(query: LocalFeatures, stored: LocalFeatures) -> Evidence:
    # (1): nothing to match
    if len(query) < MIN_MATCHES or len(stored) < MIN_MATCHES:
        return Evidence()
    # (2): ratio-test matches, at most one query keypoint per stored keypoint
    nearest = _nearest(query.descriptors, stored.descriptors)
    qi, si = _ratio_matches(query.descriptors, stored.descriptors, nearest)
    matches = len(qi)
    if matches < MIN_MATCHES:
        return Evidence(matches=matches)
    src, dst = query.xy[qi], stored.xy[si]
    # (3): a similarity transform query → stored, fitted with RANSAC
    transform, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD,
        maxIters=2000, confidence=0.995, refineIters=10,
    )
    if transform is None or inliers is None:
        return Evidence(matches=matches)
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
        return Evidence(matches, count, scale, rotation, rematched=rematched,
                        geometry=geometry)
    # (5): how much of the overlap looks the same once aligned
    share, cells, overlay = agreement(query, stored, continuous)
    return Evidence(matches, count, scale, rotation, share, cells, rematched=rematched,
                    overlay=overlay, geometry=geometry, coverage=geometry.covered(),
                    resize=_resize(query, stored, scale))


def _resize(query: LocalFeatures, stored: LocalFeatures, scale: float) -> float | None:
    """The query's pixels per stored pixel of the shared content (< 1: shrunk), from both
    uploads' own sizes; None for blobs stored without them."""
    if query.source is None or stored.source is None or scale <= 0:
        return None
    query_px = query.source[1] / query.shape[1]  # upload pixels per canonical pixel
    stored_px = stored.source[1] / stored.shape[1]
    return float(query_px / (scale * stored_px))


def _rematch(query: LocalFeatures, stored: LocalFeatures, transform: np.ndarray,
             nearest: Nearest) -> int:
    """One-to-one pairs among each query keypoint's two nearest descriptors that `transform`
    (index coordinates, query → stored) puts within GUIDED_TOLERANCE of each other, at most
    REMATCH_DISTANCE bits apart: the ratio test's rejects that the geometry vouches for."""
    distance, index = nearest
    near = np.flatnonzero(distance.ravel() <= REMATCH_DISTANCE)  # row by row, nearer first
    d, qi, si = distance.ravel()[near], near // 2, index.ravel()[near].astype(np.intp)
    offsets = query.xy[qi] @ transform[:, :2].T + transform[:, 2] - stored.xy[si]
    near = np.flatnonzero((offsets * offsets).sum(axis=1) <= GUIDED_TOLERANCE ** 2)
    ranked = near[np.argsort(d[near], kind="stable")]
    ranked = ranked[np.unique(qi[ranked], return_index=True)[1]]
    return len(np.unique(si[ranked]))


def _box(features: LocalFeatures) -> tuple[float, float, float, float]:
    """The content box in continuous canonical coordinates (whole image if none)."""
    height, width = features.shape
    box = content_box(features.thumbnail)
    if box is None:
        return 0.0, 0.0, float(width), float(height)
    th, tw = features.thumbnail.shape
    sx, sy = width / tw, height / th
    return box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy


def global_transform(query: LocalFeatures, stored: LocalFeatures, query_code: str,
                     stored_code: str) -> np.ndarray:
    """The 2×3 map, continuous canonical coordinates query → stored, a PDQ code pair implies.

    `query_code` is "pdq", "pdq_trim" or "pdq_mirror" (the whole image mirrored left–right);
    `stored_code` is "pdq" or "pdq_trim". Each code hashes its region squeezed to a square, so
    the regions map onto each other axis by axis.
    """
    h, w = query.shape
    qx0, qy0, qx1, qy1 = _box(query) if query_code == "pdq_trim" else (0.0, 0.0, w, h)
    hs, ws = stored.shape
    sx0, sy0, sx1, sy1 = _box(stored) if stored_code == "pdq_trim" else (0.0, 0.0, ws, hs)
    ax, ay = (sx1 - sx0) / (qx1 - qx0), (sy1 - sy0) / (qy1 - qy0)
    if query_code == "pdq_mirror":
        return np.array([[-ax, 0.0, sx0 + ax * qx1], [0.0, ay, sy0 - ay * qy0]])
    return np.array([[ax, 0.0, sx0 - ax * qx0], [0.0, ay, sy0 - ay * qy0]])


def _uninformative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    white = ((a >= WHITE) & (b >= CLIPPED_FROM)) | ((b >= WHITE) & (a >= CLIPPED_FROM))
    black = ((a <= BLACK) & (b <= CLIPPED_FROM_DARK)) | ((b <= BLACK) & (a <= CLIPPED_FROM_DARK))
    return white | black


def _warp(query: LocalFeatures, stored: LocalFeatures,
          transform: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query thumbnail, stored thumbnail warped onto it, mask of the pixels it covers), float32
    grey, with `transform` in continuous canonical coordinates."""
    qa, sb = query.thumbnail.astype(np.float32), stored.thumbnail.astype(np.float32)
    # thumbnail scale per axis: continuous thumbnail coordinate = k × canonical coordinate
    kq = np.array([qa.shape[1] / query.shape[1], qa.shape[0] / query.shape[0]])
    ks = np.array([sb.shape[1] / stored.shape[1], sb.shape[0] / stored.shape[0]])
    a = (ks[:, None] * transform[:, :2]) / kq[None, :]
    b = ks * transform[:, 2]
    # index coordinates: i = u − 0.5 on both sides
    m = np.hstack([a, (a @ np.array([0.5, 0.5]) + b - 0.5)[:, None]])
    size = (qa.shape[1], qa.shape[0])
    flags = cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(sb, m, size, flags=cv2.INTER_LINEAR | flags, borderValue=0.0)
    inside = cv2.warpAffine(np.ones_like(sb), m, size, flags=cv2.INTER_NEAREST | flags,
                            borderValue=0.0) > 0.5
    return qa, warped, inside


def agreement(query: LocalFeatures, stored: LocalFeatures,
              transform: np.ndarray) -> tuple[float, int, float]:
    """(share of agreeing cells, cells compared, share that agree or differ only by an overlay)
    with `transform` in continuous coordinates."""
    qa, warped, inside = _warp(query, stored, transform)
    inside &= ~_uninformative(qa, warped)
    if inside.sum() < 64:
        return 0.0, 0, 0.0
    # Brightness and contrast edits: fit warped ≈ gain·query + offset over the overlap first.
    x, y = qa[inside], warped[inside]
    if x.std() > 1.0:
        gain, offset = np.polyfit(x, y, 1)
        qa = qa * gain + offset
    return _cell_agreement(qa, warped, inside)


def residual(query: LocalFeatures, stored: LocalFeatures,
             transform: np.ndarray) -> tuple[float, int, float] | None:
    """(RMS grey difference, pixels compared, standard deviation of the query's grey over
    them) at the query's own size under `transform`, for a query no larger than NATIVE_SIDE;
    None for a larger one or one of unknown size."""
    if query.source is None or max(query.source) > NATIVE_SIDE:
        return None
    qa, warped, inside = _warp(query, stored, transform)
    size = (query.source[1], query.source[0])
    qa, warped = (cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (qa, warped))
    # A pixel counts where the stored image covers all of it.
    covered = cv2.resize(inside.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.999
    blank = ((qa >= WHITE) & (warped >= WHITE)) | ((qa <= BLACK) & (warped <= BLACK))
    keep = covered & ~blank
    pixels = int(keep.sum())
    if not pixels:
        return None
    difference = (qa - warped)[keep]
    return float(np.sqrt(np.mean(difference * difference))), pixels, float(qa[keep].std())


def _cell_sums(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sum of `values` over every grid cell (cells between consecutive row/column bounds)."""
    at = cv2.integral(values, sdepth=cv2.CV_64F)[np.ix_(rows, cols)]
    out: np.ndarray = at[1:, 1:] - at[:-1, 1:] - at[1:, :-1] + at[:-1, :-1]
    return out


def _cell_agreement(qa: np.ndarray, warped: np.ndarray,
                    inside: np.ndarray) -> tuple[float, int, float]:
    """(share of agreeing cells, cells compared, share that agree or are explained by an
    overlay) over the GRID × GRID cells of the query."""
    height, width = qa.shape
    rows = np.arange(GRID + 1) * height // GRID
    cols = np.arange(GRID + 1) * width // GRID
    m = inside.astype(np.float64)
    u, v = qa.astype(np.float64) * m, warped.astype(np.float64) * m
    n = _cell_sums(m, rows, cols)
    area = np.diff(rows)[:, None] * np.diff(cols)[None, :]
    compared = (area > 0) & (n >= CELL_COVERAGE * np.maximum(area, 1))
    count = np.maximum(n, 1)
    mu, mv = _cell_sums(u, rows, cols) / count, _cell_sums(v, rows, cols) / count
    su = np.sqrt(np.maximum(_cell_sums(u * u, rows, cols) / count - mu * mu, 0))
    sv = np.sqrt(np.maximum(_cell_sums(v * v, rows, cols) / count - mv * mv, 0))
    covariance = _cell_sums(u * v, rows, cols) / count - mu * mv
    flat = (su < FLAT_STD) & (sv < FLAT_STD)
    textured = ~flat & (su > 1e-3) & (sv > 1e-3)
    correlation = covariance / np.where(textured, su * sv, 1.0)
    agree = compared & ((flat & (np.abs(mu - mv) < FLAT_DIFFERENCE))
                        | (textured & (correlation > CELL_CORRELATION)))
    cells = int(compared.sum())
    if cells < MIN_CELLS:
        return 0.0, cells, 0.0
    # Pixels that moved up or down by more than the tolerance, per cell: a white overlay moves
    # them up, a black one down, so the two sums serve both colours.
    up, down = (_cell_sums((mask & inside).astype(np.float64), rows, cols)
                for mask in (qa - warped > OVERLAY_TOLERANCE, qa - warped < -OVERLAY_TOLERANCE))
    explained = max(int((agree | (compared & _overlaid(towards, away, count))).sum())
                    for towards, away in ((up, down), (down, up)))
    return float(agree.sum()) / cells, cells, explained / cells


def _overlaid(towards: np.ndarray, away: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Cells a semi-transparent overlay explains, from the per-cell counts of pixels moved
    towards its colour and away from it among `count` (module docstring)."""
    out: np.ndarray = ((away / count <= OVERLAY_AGAINST)
                       & (towards / count >= OVERLAY_CHANGED)
                       & ((count - towards - away) / count >= OVERLAY_UNCHANGED))
    return out
