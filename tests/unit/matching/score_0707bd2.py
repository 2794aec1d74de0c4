"""`WordIndex._score` as it was at commit 0707bd2 (numpy: a radix-sort `_unique` of the
votes' (registration, bin) keys, `np.bincount`, `np.lexsort`), kept verbatim as the reference
the compiled kernel (`matching/kernels.py`) must reproduce bit for bit
(test_matching_kernels.py, bench/vote_kernel.py). Not used by the service."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

import numpy as np

from shotstamp_service.matching.index import ANGLE_BINS, WordScore


def _unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`np.unique(values, return_inverse=True, return_counts=True)` of non-negative int64:
    below 2**32 by two passes of numpy's radix sort on 16-bit keys (as `_order_by_word`)
    instead of a comparison sort, ≈ 3 times faster on a lookup's 20,000 votes."""
    if not len(values) or int(values.max()) >= 1 << 32 or int(values.min()) < 0:
        uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        return uniq, inverse, counts
    low = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
    order = low[np.argsort((values[low] >> 16).astype(np.uint16), kind="stable")]
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, len(values)])
    inverse = np.empty(len(values), np.int64)
    inverse[order] = np.repeat(np.arange(len(starts)), counts)
    return ordered[starts], inverse, counts


def score(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
          min_votes: int, keep: int) -> list[WordScore]:
    """The `keep` best registrations (score, then ref) of the votes of every part
    (`_votes`), scored in one pass: a registration's votes all come from one part, so
    numbering the parts' registrations one after another scores each as alone, and in
    the same order (the same float sums), at one set of numpy calls a lookup instead
    of one a part (33 at 10 M)."""
    parts = [p for p in parts if len(p[1])]
    if not parts:
        return []
    sizes = np.array([len(p[0]) for p in parts], np.int64)
    bases = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    local = np.concatenate([p[1] + b for p, b in zip(parts, bases.tolist(), strict=True)])
    dangle = np.concatenate([p[2] for p in parts])
    weight = np.concatenate([p[3] for p in parts])
    # Cheap first cut: registrations with fewer raw votes than `min_votes` in all bins
    # together cannot reach it in one bin pair. Most registrations get one chance vote, so
    # this cut leaves little for the exact scoring below.
    total = int(sizes.sum())
    if 8 * len(local) >= total:
        counts = np.bincount(local, minlength=total)
        hopeful = counts[local] >= min_votes
    else:  # a few votes into large parts: sorting them is cheaper than counting all
        _, inverse, few = _unique(local)
        hopeful = few[inverse] >= min_votes
    if not hopeful.any():
        return []
    local, dangle, weight = local[hopeful], dangle[hopeful], weight[hopeful]
    # Each vote counts in its angle bin and the next, so a copy whose turn falls on a bin
    # boundary is not split in two.
    key = np.concatenate([local * ANGLE_BINS + dangle,
                          local * ANGLE_BINS + (dangle + 1) % ANGLE_BINS])
    w2 = np.concatenate([weight, weight])
    keys, inv, votes = _unique(key)
    score = np.bincount(inv, weights=w2)
    reg = keys // ANGLE_BINS
    # Keys are sorted, so each registration is a run; put its best bin first in the run:
    # most votes (the consistent matches, whatever their weights), then the highest score,
    # then the lowest bin.
    order = np.lexsort((-score, -votes, reg))
    reg, score, votes = reg[order], score[order], votes[order]
    first = np.flatnonzero(np.r_[True, reg[1:] != reg[:-1]])
    reg, score, votes = reg[first], score[first], votes[first]
    enough = votes >= min_votes
    reg, score, votes = reg[enough], score[enough], votes[enough]
    part = np.searchsorted(bases, reg, side="right") - 1
    refs = np.empty(len(reg), np.int64)
    for k in np.unique(part).tolist():
        at = part == k
        refs[at] = parts[k][0][reg[at] - bases[k]]
    chosen = refs != -1
    refs, score, votes = refs[chosen], score[chosen], votes[chosen]
    # the `keep` best, in the order `search` ranks them (score, then ref)
    best = np.lexsort((refs, -score))[:keep]
    return [WordScore(int(r), float(s), int(v))
            for r, s, v in zip(refs[best].tolist(), score[best].tolist(),
                               votes[best].tolist(), strict=True)]
