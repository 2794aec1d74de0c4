"""Stage 2's pieces tested directly: the photometric grid and the keypoints the index keeps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shotstamp_service.matching import engine as rule
from shotstamp_service.matching import verification
from shotstamp_service.matching.engine import index_keypoints
from shotstamp_service.matching.features import LocalFeatures, extract


def _overlaid_cell(u: np.ndarray, v: np.ndarray, sign: float) -> bool:
    """A cell's pixels (query u, stored v) as a semi-transparent white (1) or black (−1)
    overlay leaves them: some moved towards its colour, some not at all, none away."""
    towards = sign * (u - v)
    tolerance = verification.OVERLAY_TOLERANCE
    return bool(np.mean(towards < -tolerance) <= verification.OVERLAY_AGAINST
                and np.mean(towards > tolerance) >= verification.OVERLAY_CHANGED
                and np.mean(np.abs(towards) <= tolerance) >= verification.OVERLAY_UNCHANGED)


def _reference_cells(qa: np.ndarray, warped: np.ndarray,
                     inside: np.ndarray) -> tuple[float, int, float]:
    """The photometric comparison written cell by cell, as the module describes it."""
    grid = verification.GRID
    height, width = qa.shape
    agree = compared = 0
    explained = {1.0: 0, -1.0: 0}
    for i in range(grid):
        for j in range(grid):
            rows = slice(i * height // grid, (i + 1) * height // grid)
            cols = slice(j * width // grid, (j + 1) * width // grid)
            mask = inside[rows, cols]
            if mask.size == 0 or mask.mean() < verification.CELL_COVERAGE:
                continue
            u, v = qa[rows, cols][mask].astype(float), warped[rows, cols][mask].astype(float)
            compared += 1
            su, sv = u.std(), v.std()
            agrees = False
            if su < verification.FLAT_STD and sv < verification.FLAT_STD:
                agrees = abs(u.mean() - v.mean()) < verification.FLAT_DIFFERENCE
            elif su > 1e-3 and sv > 1e-3:
                correlation = np.mean((u - u.mean()) * (v - v.mean())) / (su * sv)
                agrees = correlation > verification.CELL_CORRELATION
            agree += agrees
            for sign in explained:
                explained[sign] += agrees or _overlaid_cell(u, v, sign)
    if compared < verification.MIN_CELLS:
        return 0.0, compared, 0.0
    return agree / compared, compared, max(explained.values()) / compared


@pytest.mark.parametrize("shape", [(128, 96), (128, 128), (37, 128), (9, 128), (128, 20)])
@pytest.mark.parametrize("seed", range(3))
def test_cell_agreement_equals_the_cell_by_cell_comparison(shape: tuple[int, int],
                                                           seed: int) -> None:
    rng = np.random.default_rng(seed)
    qa = rng.integers(0, 256, shape).astype(np.float32)
    # some cells a copy (noise), some different, some flat, some masked out
    warped = qa + rng.normal(0, 8, shape).astype(np.float32)
    warped[: shape[0] // 3] = rng.integers(0, 256, (shape[0] // 3, shape[1]))
    qa[:, : shape[1] // 4] = 200
    warped[:, : shape[1] // 4] = 200 + rng.normal(0, 1, (shape[0], shape[1] // 4))
    inside = rng.random(shape) > 0.1
    inside[shape[0] // 2 :, shape[1] // 2 :] = False
    # a white overlay over some rows of the copy: stroke pixels brightened, others not
    strokes = rng.random(shape) < 0.3
    rows = slice(shape[0] // 3, shape[0] // 2)
    qa[rows] = np.where(strokes[rows], qa[rows] + 0.5 * (255 - qa[rows]), qa[rows])
    share, cells, overlay = verification._cell_agreement(qa, warped, inside)
    expected_share, expected_cells, expected_overlay = _reference_cells(qa, warped, inside)
    assert cells == expected_cells
    assert share == pytest.approx(expected_share, abs=1e-12)
    assert overlay == pytest.approx(expected_overlay, abs=1e-12)


def test_a_copy_agrees_and_another_picture_does_not() -> None:
    rng = np.random.default_rng(5)
    picture = np.clip(rng.normal(128, 40, (96, 128)), 0, 255).astype(np.float32)
    picture = np.cumsum(picture, axis=1) / np.arange(1, 129)  # some texture at every scale
    inside = np.ones(picture.shape, bool)
    copy = picture * 0.8 + 20 + rng.normal(0, 1, picture.shape)  # darker, less contrast
    other = np.clip(rng.normal(128, 40, picture.shape), 0, 255)
    assert verification._cell_agreement(picture, copy, inside)[0] > 0.95
    assert verification._cell_agreement(picture, other, inside)[0] < 0.2
    assert verification._cell_agreement(picture, other, inside)[2] < 0.2


def _textured(seed: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(128, 60, shape).astype(np.float32), (0, 0), 1.2)
    return np.clip(noise, 0, 255)


@pytest.mark.parametrize("colour", [255.0, 0.0])
def test_a_semi_transparent_overlay_is_explained_and_a_shift_is_not(colour: float) -> None:
    picture = _textured(7)
    inside = np.ones(picture.shape, bool)
    # thick strokes of 45 % opacity across the middle, as a text watermark leaves them
    strokes = np.zeros(picture.shape, np.uint8)
    for x in range(8, 120, 12):
        cv2.line(strokes, (x, 30), (x + 6, 66), 1, 3)
    alpha = 0.45 * strokes
    marked = picture * (1 - alpha) + colour * alpha
    share, cells, overlay = verification._cell_agreement(marked, picture, inside)
    assert cells == verification.GRID ** 2
    assert share < 0.85 <= overlay
    # the same scene two pixels over (a stereo pair's parallax) is no overlay
    shifted = np.roll(picture, 2, axis=1)
    share, _, overlay = verification._cell_agreement(shifted, picture, inside)
    assert share <= overlay < 0.5
    # nor is a flat band brightened as a whole: every pixel moved, none stayed
    flat = np.full(picture.shape, 100.0, np.float32)
    brighter = flat.copy()
    brighter[30:66] = 160 if colour else 40
    share, _, overlay = verification._cell_agreement(brighter, flat, inside)
    assert overlay == share == pytest.approx(1 - 36 / 96)


def test_rematch_pairs_keypoints_the_transform_brings_together() -> None:
    image = (_textured(3, (200, 256)) * 0.9).astype(np.uint8)
    original = extract(image)
    # the copy: 80 % of the size; keypoint x' = 0.8 x, so query → stored is ×1.25
    copy = extract(cv2.resize(image, (205, 160), interpolation=cv2.INTER_AREA))
    nearest = verification._nearest(copy.descriptors, original.descriptors)
    true = np.array([[1.25, 0.0, 0.0], [0.0, 1.25, 0.0]])
    found = verification._rematch(copy, original, true, nearest)
    ratio = len(verification._ratio_matches(copy.descriptors, original.descriptors, nearest))
    assert found >= 50 and found >= ratio // 2
    # a transform that puts the keypoints elsewhere finds almost none
    wrong = np.array([[1.25, 0.0, 40.0], [0.0, 1.25, -30.0]])
    assert verification._rematch(copy, original, wrong, nearest) <= 3


def _features(xy: list[tuple[float, float]], shape: tuple[int, int] = (200, 100)) -> LocalFeatures:
    n = len(xy)
    return LocalFeatures(shape, np.array(xy, np.float32).reshape(n, 2), np.zeros(n, np.uint8),
                         np.zeros(n, np.uint8), np.zeros((n, 32), np.uint8), b"", (1, 1))


def test_index_keeps_central_keypoints_first_in_strength_order() -> None:
    height, width = 200, 100
    # strongest first; (x, y) in canonical pixels of a 100 × 200 image
    xy = [(2, 100), (50, 100), (98, 5), (50, 10), (80, 150), (20, 60), (50, 199)]
    limit_x = (0.5 + rule.INDEX_CENTRE) * width
    central = [i for i, (x, y) in enumerate(xy)
               if abs((x + 0.5) / width - 0.5) <= rule.INDEX_CENTRE
               and abs((y + 0.5) / height - 0.5) <= rule.INDEX_CENTRE]
    assert central == [1, 4, 5] and limit_x > 80  # the example means what it says
    chosen = index_keypoints(_features(xy, (height, width)), limit=5)
    assert list(chosen) == [1, 4, 5, 0, 2]
    assert list(index_keypoints(_features(xy, (height, width)), limit=2)) == [1, 4]
    assert len(index_keypoints(_features([], (height, width)))) == 0
