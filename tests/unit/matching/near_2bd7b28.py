"""`WordIndex._votes` as it was at main 2bd7b28 (numpy: `_near` gathers every posting index of
the query words' ranges, their signatures, XORs with the repeated query signatures, popcounts
and keeps the near ones; `_unpack` / `_Tail.fields` gather their postings), kept verbatim as
the reference the compiled `kernels.near_votes` must reproduce bit for bit
(test_matching_near.py, bench/vote_kernel.py). `votes(index, ...)` takes the `WordIndex` as
`self`, and so does `search_query(index, ...)`: `WordIndex.search_query` of 2bd7b28 reading
its votes from `votes` (and scoring them with the index's own `_score`). `_Tail.signatures`
and `_Tail.fields`, which only `_votes` read, are `tail_signatures` and `tail_fields` here.
Not used by the service."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from shotstamp_service.matching.index import (_LOCAL_BITS, _PACKED_LOCAL_BITS, _SIGNATURE_SCALE,
                                              _TAIL_ANGLE_SHIFT, _TAIL_LOCAL_SHIFT, _TAIL_LOCALS,
                                              ANGLE_BINS, SIGNATURE_BITS, _by_distance)


def _gather_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, e) for each (s, e), without a Python loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return shift + np.arange(total, dtype=np.int64)


def _unpack(post: np.ndarray, packed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(local index, angle bin) as int64 of postings in either layout (see `pack_postings`)."""
    if packed:
        v = post & np.uint32((1 << (_PACKED_LOCAL_BITS + 4)) - 1)
        return ((v & np.uint32((1 << _PACKED_LOCAL_BITS) - 1)).astype(np.int64),
                (v >> _PACKED_LOCAL_BITS).astype(np.int64))
    return ((post & ((1 << _LOCAL_BITS) - 1)).astype(np.int64),
            (post >> _LOCAL_BITS).astype(np.int64))


def _near(stored: np.ndarray, starts: np.ndarray, ends: np.ndarray, signatures: np.ndarray,
          max_distance: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """Of the postings in the ranges `[starts, ends)` (one a query word), those whose stored
    signature is within `max_distance` (over SIGNATURE_BITS) of their query word's:
    (positions among those read, query word of each, posting index, distance); `None` first
    when the ranges are empty."""
    idx = _gather_ranges(starts, ends)
    if len(idx) == 0:
        return None, idx, idx, idx
    # (uint32 signatures of older files truncate to the 16 bits kept)
    xor = stored[idx].astype(np.uint16, copy=False)
    xor ^= np.repeat(signatures, ends - starts)
    bits = np.bitwise_count(xor)
    # Only the few postings within the distance get their query word (a search over the
    # lists' ends), index and weight: not every posting read.
    near = np.flatnonzero(bits <= max_distance // _SIGNATURE_SCALE)
    which = np.searchsorted(np.cumsum(ends - starts), near, side="right")
    return near, which, idx[near], _SIGNATURE_SCALE * bits[near]


def tail_signatures(tail) -> np.ndarray:
    """(p,) uint16 view of the postings' signatures (their low 16 bits), no copy."""
    return tail.packed.view("<u2")[::4]


def tail_fields(tail, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tail index, angle bin) as int64 of the postings at `idx`."""
    p = tail.packed[idx]
    return (((p >> _TAIL_LOCAL_SHIFT) & np.uint64(_TAIL_LOCALS - 1)).astype(np.int64),
            ((p >> _TAIL_ANGLE_SHIFT) & np.uint64(ANGLE_BINS - 1)).astype(np.int64))


def votes(self, words: np.ndarray, angles: np.ndarray, signatures: np.ndarray,
          idf: np.ndarray, max_distance: int, by_distance: np.ndarray,
          ranges: list[tuple[np.ndarray, np.ndarray] | None],
          ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per segment (and the tail): (refs, local index, angle difference, weight) arrays of
    the postings whose signature is within `max_distance` of the query word's. `ranges`:
    `_frequencies`' of these words (None: read them from the segment's offsets)."""
    w64 = words.astype(np.int64)
    for seg, known in zip(self._segments, ranges, strict=False):
        starts, ends = (seg.offsets[w64], seg.offsets[w64 + 1]) if known is None else known
        near, which, idx, distance = _near(seg.signatures, starts, ends, signatures,
                                           max_distance)
        if near is None:
            continue
        locals_, angle = _unpack(seg.postings[idx], seg.packed)
        dangle = (angles[which] - angle) % ANGLE_BINS
        yield seg.refs, locals_, dangle, idf[which] * by_distance[distance]
    tail, known_tail = self._tail, ranges[-1]
    if len(tail) and known_tail is not None:  # (the tail's are always known)
        starts, ends = known_tail
        near, which, idx, distance = _near(tail_signatures(tail), starts, ends, signatures,
                                           max_distance)
        if near is not None and len(idx):
            locals_, angle = tail_fields(tail, idx)
            yield (self._tail_ref_array, locals_, (angles[which] - angle) % ANGLE_BINS,
                   idf[which] * by_distance[distance])


def search_query(self, query, *, limit: int, min_votes: int,
                 max_distance: int = SIGNATURE_BITS, sigma: float | None = None,
                 max_df: float = 0.02, max_postings: int | None = None,
                 max_probe_postings: int | None = None) -> list:
    """`search` with the query side made already (`WordQuery.of`): an upload's several
    looks (`Matcher.look`, `look_again`'s scratch index) share it."""
    self._finish_merge()
    total = max(1, self._registrations)
    df, ranges = self._frequencies(query.words)
    n = query.exact
    read = self._readable(df[:n], total, max_df, max_postings)
    if n < len(query.words):
        limits = [max_probe_postings]
        if max_postings is not None:
            limits.append(max_postings - int(df[read].sum()))
        left = min((x for x in limits if x is not None), default=None)
        read = np.concatenate([read, n + self._readable(df[n:], total, max_df, left)])
    df = df[read]
    ranges = [r if r is None else (r[0][read], r[1][read]) for r in ranges]
    idf = np.log((total + 1) / df)
    by_distance = _by_distance(sigma)
    # The best `keep` are enough: dead registrations may still be among them.
    keep = limit + len(self._dead)
    results = self._score(list(votes(self, query.words[read], query.angles[read],
                                     query.signatures[read], idf, max_distance,
                                     by_distance, ranges)), min_votes, keep)
    results = [r for r in results if r.ref not in self._dead]
    results.sort(key=lambda r: (-r.score, r.ref))
    return results[:limit]
