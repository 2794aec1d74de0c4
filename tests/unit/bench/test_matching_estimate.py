"""bench/matching.py's estimate at scale: the Poisson tail it is built on stays a probability
for every shortlist size it prints (16 to 64), however far past its rate an original is."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import poisson

from bench.matching import SHORTLIST_SIZES, _fewer_than


@pytest.mark.parametrize("keep", [3, *SHORTLIST_SIZES])
@pytest.mark.parametrize("expected", [0.0, 0.5, 3.0, 40.0, 700.0, 5e4, 2e5, 1e7])
def test_fewer_than_is_the_poisson_cdf(keep: int, expected: float) -> None:
    got = _fewer_than(keep, np.float64(expected))  # rates come in as numpy floats
    assert not math.isnan(got)
    assert got == pytest.approx(poisson.cdf(keep - 1, expected), abs=1e-12)
