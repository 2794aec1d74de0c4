"""Stage 2's pieces tested directly: the photometric grid and the keypoints the index keeps."""

from __future__ import annotations

import numpy as np
import pytest

from shotstamp_service import matching as rule
from shotstamp_service import verification
from shotstamp_service.local_features import LocalFeatures
from shotstamp_service.matching import index_keypoints


def _reference_cells(qa: np.ndarray, warped: np.ndarray, inside: np.ndarray) -> tuple[float, int]:
    """The photometric comparison written cell by cell, as the module describes it."""
    grid = verification.GRID
    height, width = qa.shape
    agree = compared = 0
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
            if su < verification.FLAT_STD and sv < verification.FLAT_STD:
                agree += abs(u.mean() - v.mean()) < verification.FLAT_DIFFERENCE
            elif su > 1e-3 and sv > 1e-3:
                correlation = np.mean((u - u.mean()) * (v - v.mean())) / (su * sv)
                agree += correlation > verification.CELL_CORRELATION
    if compared < verification.MIN_CELLS:
        return 0.0, compared
    return agree / compared, compared


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
    share, cells = verification._cell_agreement(qa, warped, inside)
    expected_share, expected_cells = _reference_cells(qa, warped, inside)
    assert cells == expected_cells
    assert share == pytest.approx(expected_share, abs=1e-12)


def test_a_copy_agrees_and_another_picture_does_not() -> None:
    rng = np.random.default_rng(5)
    picture = np.clip(rng.normal(128, 40, (96, 128)), 0, 255).astype(np.float32)
    picture = np.cumsum(picture, axis=1) / np.arange(1, 129)  # some texture at every scale
    inside = np.ones(picture.shape, bool)
    copy = picture * 0.8 + 20 + rng.normal(0, 1, picture.shape)  # darker, less contrast
    other = np.clip(rng.normal(128, 40, picture.shape), 0, 255)
    assert verification._cell_agreement(picture, copy, inside)[0] > 0.95
    assert verification._cell_agreement(picture, other, inside)[0] < 0.2


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
