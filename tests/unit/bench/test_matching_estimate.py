"""bench/matching.py's estimate at scale: the Poisson tail it is built on stays a probability
for every shortlist size it prints (16 to 64), however far past its rate an original is; and
`estimate_in` on constructed pairs: a query's look-alikes are a fixed number whatever the
index's size, independent photos scale with it, a photo registered many times competes as
one cluster, and the estimate agrees with a simulated index drawn from the same pairs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import poisson

from bench.matching import (
    LOOKALIKE_SHARE,
    SHORTLIST_SIZES,
    Population,
    QueryResult,
    Unrelated,
    _below,
    _fewer_than,
    catalogue,
    estimate_at_scale,
    estimate_in,
)
from shotstamp_service.matching import engine as rule

KEEP = rule.MAX_CANDIDATES


@pytest.mark.parametrize("keep", [3, *SHORTLIST_SIZES])
@pytest.mark.parametrize("expected", [0.0, 0.5, 3.0, 40.0, 700.0, 5e4, 2e5, 1e7])
def test_fewer_than_is_the_poisson_cdf(keep: int, expected: float) -> None:
    got = _fewer_than(keep, np.float64(expected))  # rates come in as numpy floats
    assert not math.isnan(got)
    assert got == pytest.approx(poisson.cdf(keep - 1, expected), abs=1e-12)


def _query(true_words: float, others: list[tuple[float, float, bool]], lookalikes: int,
           true_consistent: int = 0) -> QueryResult:
    """A copy stage 2 confirms, found by words alone (not via PDQ)."""
    rows = np.array(others, np.float64).reshape(-1, 3)
    item: Any = None  # the estimate reads only the scores
    return QueryResult(item, 1, "copy-verified", [], 0, 0.0, 0.0, 3, 0.0, true_words, True,
                       False, true_consistent, 0.0, 3, rows, lookalikes)


def _unrelated(independent: list[tuple[float, float]], pairs: int,
               lookalike: list[tuple[float, float]], lookalike_pairs: int) -> Unrelated:
    ind = np.array(independent, np.float64).reshape(-1, 2)
    ind = ind[np.argsort(-ind[:, 0], kind="stable")]
    look = np.array(lookalike, np.float64).reshape(-1, 2)
    scores = np.sort(np.concatenate([ind[:, 0], look[:, 0]]))
    return Unrelated(scores, pairs + lookalike_pairs, np.zeros((0, 2)), ind, pairs, look,
                     lookalike_pairs)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_a_family_of_lookalikes_does_not_scale_with_n(k: int) -> None:
    # k look-alikes outscore the original; no independent pair among 10^12 comes close
    r = _query(10.0, [(20.0, 0, True)] * k, lookalikes=6)
    un = _unrelated([(1.0, 0)] * 100, 10**12, [(20.0, 0)] * k, 6)
    got = [estimate_in(r, un, Population(((n, 1),)), words_only=True)
           for n in (1_000, 1_000_000, 10_000_000)]
    # fewer than MAX_CANDIDATES look-alikes ahead: found at every size; as many: at none
    assert got == pytest.approx([1.0 if k < KEEP else 0.0] * 3, abs=1e-4)
    # the linear estimate counts them as a rate (k in 663 registrations of each of 100
    # queries): at 10 M they are thousands
    corpus = _unrelated([(1.0, 0)] * 100, 66_300 - 600, [(20.0, 0)] * k, 600)
    if k:
        assert estimate_at_scale(r, corpus, 10_000_000, words_only=True) < 1e-6


@pytest.mark.parametrize("above", [1, 7, 40])
@pytest.mark.parametrize("n", [10_000, 1_000_000, 10_000_000])
def test_independent_pairs_scale_with_n(above: int, n: int) -> None:
    pairs = 3_000_000
    r = _query(10.0, [], lookalikes=0)
    un = _unrelated([(12.0, 0)] * above + [(5.0, 0)] * 1000, pairs, [], 0)
    got = estimate_in(r, un, Population(((n, 1),)), words_only=True)
    assert got == pytest.approx(poisson.cdf(KEEP - 1, above / pairs * n), abs=1e-9)


def test_a_photo_registered_many_times_competes_as_one_cluster() -> None:
    pairs, above, photos = 1_000_000, 50, 3107
    r = _query(10.0, [], lookalikes=0)
    un = _unrelated([(12.0, 0)] * above, pairs, [], 0)
    rate = above / pairs * photos
    # 322 copies each: the original survives only if no photo outscores it
    clustered = estimate_in(r, un, Population(((photos, 322),)), words_only=True)
    assert clustered == pytest.approx(math.exp(-rate), abs=1e-12)
    single = estimate_in(r, un, Population(((photos, 1),)), words_only=True)
    assert single == pytest.approx(poisson.cdf(KEEP - 1, rate), abs=1e-12)
    assert clustered < single


def test_a_catalogue_gives_each_photo_its_share_of_lookalikes() -> None:
    # 1 of its 4 corpus look-alikes outscores it: 10 look-alikes give Poisson(2.5) ahead
    r = _query(10.0, [(20.0, 0, True), (5.0, 0, True), (4.0, 0, True), (3.0, 0, True)],
               lookalikes=4)
    un = _unrelated([(1.0, 0)] * 10, 10**12, [(20.0, 0), (5.0, 0), (4.0, 0), (3.0, 0)], 4)
    got = estimate_in(r, un, Population(((10_000_000, 1),), 10), words_only=True)
    assert got == pytest.approx(poisson.cdf(KEEP - 1, 2.5), abs=1e-4)
    assert estimate_in(r, un, Population(((10_000_000, 1),), 0), words_only=True) == \
        pytest.approx(1.0, abs=1e-4)
    # a photo with no look-alike in the corpus takes the corpus's share (1 in 4 here too)
    lone = _query(10.0, [], lookalikes=0)
    assert estimate_in(lone, un, Population(((10_000_000, 1),), 10), words_only=True) == \
        pytest.approx(got, abs=1e-12)
    # a catalogue's look-alikes outrank with LOOKALIKE_SHARE, whatever the corpus shows
    for k in (0, 10, 100):
        assert estimate_in(lone, un, catalogue(10_000_000, k), words_only=True) == \
            pytest.approx(poisson.cdf(KEEP - 1, k * LOOKALIKE_SHARE[0]), abs=1e-4)


def test_the_shortlist_reads_the_lookalikes_consistency_share() -> None:
    # the original is 5th by words (4 look-alikes ahead, not more consistent): only the
    # shortlist finds it, and then as often as fewer than 3 look-alikes are as consistent
    r = _query(10.0, [], lookalikes=0, true_consistent=20)
    un = _unrelated([(1.0, 0)] * 10, 10**12, [], 0)
    for share in (0.0, 0.1, 0.5):
        got = estimate_in(r, un, Population(((1000, 1),), 10, (0.4, share)))
        words = poisson.cdf(KEEP - 1, 4.0)
        shortlisted = poisson.cdf(rule.SHORTLIST - 1, 4.0) * poisson.cdf(KEEP - 1, 10 * share)
        assert got == pytest.approx(max(words, shortlisted), abs=1e-4)


@pytest.mark.parametrize(("fixed", "look", "clusters"), [
    (0, 0.0, [(0.7, 1)]), (1, 0.8, [(0.3, 2), (1.5, 1)]), (2, 0.0, [(0.2, 5)]),
    (0, 2.0, [(0.4, 3), (0.1, 1)])])
def test_below_is_the_distribution_of_the_sum(fixed: int, look: float,
                                              clusters: list[tuple[float, int]]) -> None:
    keep = 6
    # the sum's pmf by brute force over every combination of counts below keep
    total = np.zeros(keep)
    ranges = [range(keep)] * (1 + len(clusters))
    for counts in np.array(np.meshgrid(*ranges)).T.reshape(-1, 1 + len(clusters)):
        value = fixed + counts[0] + sum(int(c) * size for c, (_, size) in
                                        zip(counts[1:], clusters, strict=True))
        if value < keep:
            p = poisson.pmf(counts[0], look) * math.prod(
                poisson.pmf(c, mean) for c, (mean, _) in zip(counts[1:], clusters, strict=True))
            total[value] += p
    assert _below(keep, fixed, look, clusters) == pytest.approx(total.sum(), abs=1e-12)


def test_the_estimate_agrees_with_a_simulated_index() -> None:
    """The validation case on constructed pairs: an index of n photos drawn from the
    independent pairs' scores plus the query's own look-alikes, ranked by word score, many
    times; the share of indexes where the original is among the MAX_CANDIDATES best."""
    rng = np.random.default_rng(5)
    pairs = 20_000
    pool = rng.exponential(2.0, pairs)  # the independent pairs' word scores
    mates = [(11.0, 0, True), (3.0, 0, True), (2.0, 0, True)]
    un = _unrelated([(s, 0) for s in pool], pairs, [(m[0], m[1]) for m in mates], 3)
    for true, n in ((14.0, 2_000), (12.0, 5_000), (16.0, 40_000)):
        r = _query(true, mates, lookalikes=3)
        trials = 4000
        draws = rng.choice(pool, (trials, n))
        ahead = (draws >= true).sum(axis=1) + sum(m[0] >= true for m in mates)
        simulated = float((ahead < KEEP).mean())
        got = estimate_in(r, un, Population(((n, 1),)), words_only=True)
        assert got == pytest.approx(simulated, abs=0.03), (true, n)
