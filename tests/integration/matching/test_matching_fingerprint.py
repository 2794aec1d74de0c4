"""The canonical image pinned at four sizes up to 3000 px (the rest: tests/unit/matching/)."""

from __future__ import annotations

import numpy as np

from shotstamp_service.matching.decode import (
    CANONICAL_SIDE,
    canonical_grey,
    open_image,
)
from tests.kit.matching_helpers import fixture_image, jpeg


def test_canonical_image_is_pinned() -> None:
    for size in [(3000, 2000), (1000, 1000), (120, 300), (256, 10)]:
        decoded = open_image(jpeg(fixture_image(size)), draft=(CANONICAL_SIDE, CANONICAL_SIDE))
        grey = canonical_grey(decoded.image)
        assert max(grey.shape) == CANONICAL_SIDE
        assert grey.dtype == np.uint8
