"""`HammingIndex.search` as it was at commit 2bd7b28 (numpy: `_probe`'s broadcast probes, one
flat gather of the packed run starts, `_gather_ranges` of every candidate position, the
candidates' codes gathered and popcounted, `_keep_best`'s Python loop over every hit; the
tail's brute force a query code at a time), kept verbatim as the reference the compiled probe
(`matching/kernels.py`, `pdq_hits`) must reproduce: the same dict of ref → Hit, in the same
order (test_matching_pdq_kernel.py, bench/pdq_kernel.py). `search(index, codes, radius)` reads
a `HammingIndex`'s fields as the method did; `_flat` and `_runs` are `PackedOffsets.flat` and
`_Tables.runs` of that commit. Not used by the service."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from shotstamp_service.matching.index import (
    OFFSET_BLOCK_BITS,
    Hit,
    PackedOffsets,
    _as_words,
    _Tables,
    packed_view,
)


def _popcount_rows(xor: np.ndarray) -> np.ndarray:
    """Bits set in each row of an (n, 4) uint64 array: the Hamming distances of n pairs.

    Four column adds instead of `.sum(axis=1)`, whose reduction over a length-4 axis costs
    more than the popcounts themselves.
    """
    bits: np.ndarray = np.bitwise_count(xor)
    total: np.ndarray = bits[:, 0].astype(np.int16) + bits[:, 1] + bits[:, 2] + bits[:, 3]
    return total.astype(np.int64)


def _gather_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, e) for each (s, e), without a Python loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return shift + np.arange(total, dtype=np.int64)


def _keep_best(best: dict[int, Hit], refs: np.ndarray, distances: np.ndarray,
               owner: np.ndarray, tags: np.ndarray) -> None:
    """Fold code pairs into `best`: each ref's closest pair (ties: query index, then tag)."""
    for ref, distance, qi, tag in zip(refs.tolist(), distances.tolist(), owner.tolist(),
                                      tags.tolist(), strict=True):
        hit = Hit(distance, qi, tag)
        if ref not in best or hit < best[ref]:
            best[ref] = hit



def _flat(self: PackedOffsets, i: np.ndarray) -> np.ndarray:
        """The entries at flat positions `i` (int64: chunk c's value v at chunk_starts[c] + v)."""
        b = i >> OFFSET_BLOCK_BITS
        values: np.ndarray = self.base[b] + self.step[i]
        if len(self.wide_blocks):
            k = np.minimum(np.searchsorted(self.wide_blocks, b), len(self.wide_blocks) - 1)
            hit = np.flatnonzero(self.wide_blocks[k] == b)
            if len(hit):
                values[hit] = self.base[b[hit]] + self.wide[
                    k[hit], i[hit] & ((1 << OFFSET_BLOCK_BITS) - 1)]
        return values


def _runs(self: _Tables, c: int, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) in the flat `order` of chunk c's runs for the values `probes`."""
        if isinstance(self.offsets, PackedOffsets):
            return _flat(self.offsets, probes + self.offsets.chunk_starts[c]), _flat(self.offsets, probes + 1 + self.offsets.chunk_starts[c])
        offsets = self.offsets[c]
        return (offsets[probes].astype(np.int64) + c * self.size,
                offsets[probes + 1].astype(np.int64) + c * self.size)


def _probe(tables: _Tables, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, which query code) of the tables' candidates for query codes `q`: each
    chunk probed with its near values, for all query codes at once."""
    qvalues = tables.layout.values(q)
    probes = [(values[:, None] ^ masks[None, :]).ravel().astype(np.int64)
              for values, masks in zip(qvalues, tables.masks, strict=True)]
    which = np.concatenate([np.repeat(np.arange(len(q)), len(masks)) for masks in tables.masks])
    if isinstance(tables.offsets, PackedOffsets):
        # Every chunk's probes in one flat gather (with the next entry: where each run ends)
        # instead of four a chunk: the numpy calls, not the reads, were half of the cost.
        o = tables.offsets
        i = np.concatenate([p + start for p, start in zip(probes, o.chunk_starts, strict=True)])
        both = _flat(o, np.concatenate([i, i + 1]))
        starts_a, ends_a = both[: len(i)], both[len(i):]
    else:
        runs = [_runs(tables, c, p) for c, p in enumerate(probes)]
        starts_a = np.concatenate([r[0] for r in runs])
        ends_a = np.concatenate([r[1] for r in runs])
    owner = np.repeat(which, ends_a - starts_a)
    at = _gather_ranges(starts_a, ends_a)
    if tables.order.dtype == np.uint8:  # 3 bytes a position (`pack_order`)
        return (packed_view(tables.order)[at] & np.uint32(0xFFFFFF)).astype(np.int64), owner
    return tables.order.reshape(-1)[at].astype(np.int64), owner


def search(self, codes: Iterable[bytes], radius: int) -> dict[int, Hit]:
        """ref → its closest (query code, stored code) pair within `radius`."""
        if radius > self.max_radius:
            raise ValueError(f"radius {radius} exceeds this index's max_radius {self.max_radius}")
        self._finish_rebuild()
        queries = [np.frombuffer(c, np.uint8) for c in codes]
        best: dict[int, Hit] = {}
        if not queries or self._n + len(self._frozen) == 0:
            return best
        tables = self._tables
        stored = _as_words(self._codes)
        q = np.stack(queries)
        qwords = _as_words(q)
        for part in self._frozen:
            if part.tables.size:
                positions, owner = _probe(part.tables, q)
                distances = _popcount_rows(_as_words(part.codes)[positions] ^ qwords[owner])
                keep = distances <= radius
                _keep_best(best, part.refs[positions[keep]], distances[keep], owner[keep],
                           part.tags[positions[keep]])
        positions, owner = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if tables.size:
            # (1): candidates from the tables
            positions, owner = _probe(tables, q)
        # (2): exact distances of the tables' candidates (a gather: they are few)
        distances = _popcount_rows(stored[positions] ^ qwords[owner])
        # (3): plus the unindexed tail, by brute force over its contiguous rows, one query
        # code at a time: no gather and no index arrays the size of the tail
        tail = stored[tables.size:self._n]
        for qi in range(len(queries)):
            # A row's four popcounts (≤ 64 each) summed in one multiply of their uint32 view:
            # the top byte is the sum mod 256, so only a distance of exactly 256 wraps (to 0);
            # the few within the radius are then counted exactly. Half the passes of
            # `_popcount_rows` over the tail.
            counts = np.bitwise_count(tail ^ qwords[qi]).view(np.uint32).reshape(-1)
            near = np.flatnonzero((counts * np.uint32(0x01010101)) >> np.uint32(24) <= radius)
            tail_distances = _popcount_rows(tail[near] ^ qwords[qi])
            near = near[tail_distances <= radius]
            positions = np.concatenate([positions, near + tables.size])
            owner = np.concatenate([owner, np.full(len(near), qi, np.int64)])
            distances = np.concatenate([distances, tail_distances[tail_distances <= radius]])
        # (4): keep live codes within the radius
        keep = (distances <= radius) & self._live[positions]
        _keep_best(best, self._refs[positions[keep]], distances[keep], owner[keep],
                   self._tags[positions[keep]])
        return best
