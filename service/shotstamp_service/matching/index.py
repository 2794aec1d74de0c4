"""In-memory indexes over registered fingerprints, rebuilt from the store at start.

Two indexes, both updated on every registration and both answering without a Python loop
over stored items:

`HammingIndex` — exact range search over 256-bit codes (PDQ): every stored code within the
radius is returned, none beyond it. Multi-index hashing (Norouzi, Punjani & Fleet, 2012): the
code is cut into m chunks; by the pigeonhole principle a code within distance r of the query
agrees with it, in at least one chunk, to within ⌊r / m⌋ bits, so probing each chunk's table
with the query's chunk value and every value within ⌊r / m⌋ bits of it yields a superset of
the answer, which is then checked with exact popcounts. Chunks are ⌈log2 n⌉ + 2 bits, between
16 (16 chunks, 17 probes each at r = 31) and 24 (11 chunks, 277 probes each), so that a bucket
holds well under one code and random candidates stay few. The tables are
positions sorted by chunk value and the offsets of each value's run (counting sort), rebuilt
when the unindexed tail of recent additions exceeds `TAIL_LIMIT`; the tail is scanned by
brute force meanwhile.

`WordIndex` — an inverted file of visual words (see `local_features.words`): for each word,
the registrations whose strongest keypoints produced it, each posting with its keypoint's
binary signature. A query votes with all its words; a vote counts only where the query
keypoint's signature is within a Hamming distance of the posting's (Hamming embedding, Jégou,
Douze & Schmid, 2008: a 20-bit word collides by chance once per million keypoints, far too
often at millions of registrations, and the signature's other bits tell a chance collision
from a correspondence); a registration's score is the idf-weighted, distance-weighted count of
agreeing words whose keypoint orientations differ by the same angle (weak geometric
consistency, from the same paper): a copy turns all its keypoints by one angle, chance
agreements by any. Postings live in immutable
segments (sorted by word, with dense offsets) plus a small mutable tail; segments merge in
tiers, like a log-structured merge tree, so that a lookup touches few segments.

Both keep their large rebuilds off the event loop: a rebuild or merge runs in a thread on a
snapshot and is swapped in by the next call that sees it finished.

Discarding is cheap for recent additions (the registry reserves a ref for every upload and
discards it a few milliseconds later) and a scan for old ones.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from shotstamp_service.matching import kernels

__all__ = ["Frozen", "HammingIndex", "Hit", "WordIndex", "WordQuery", "WordScore", "build_frozen",
           "pack_postings", "packed_view", "stored_signatures", "word_segments"]

CODE_BYTES = 32
CODE_BITS = 256
# Chunk width of the multi-index tables, by table size: ⌈log2 n⌉ + 2 bits, so that a bucket
# holds well under one code and random candidates stay few — at millions of codes each
# candidate costs a cache miss or two, and those misses are the lookup's cost, while the
# number of probes hardly changes with the width (fewer, wider chunks). Between 16 bits (16
# chunks, one flipped bit per probe at radius 31) and 24 (11 chunks, two flipped bits, 277
# probes a chunk, 0.7 GB of offsets). bench/index.py, three query codes: 15 M codes with
# 22-bit chunks 7.5–10.9 ms, with 24-bit 2.7 ms; 1.5 M codes with 20-bit 3.7 ms, 22-bit 1.2–1.5.
MIN_CHUNK_BITS = 16
MAX_CHUNK_BITS = 24
EXTRA_CHUNK_BITS = 2
# Recent additions are scanned by brute force until there are this many; then the tables are
# rebuilt (in a thread) over everything. A full tail costs ~1 ms per query code
# (bench/index.py's tail rows).
TAIL_LIMIT = 65_536
# Rebuilds of fewer entries than this run inline (they take milliseconds).
INLINE_REBUILD = 262_144


def _as_words(codes: np.ndarray) -> np.ndarray:
    """(n, 32) uint8 → (n, 4) uint64 for popcounts (byte order is irrelevant to distances)."""
    return codes.view(np.uint64).reshape(-1, 4)


def _keep_best(best: dict[int, Hit], refs: np.ndarray, tags: np.ndarray,
               positions: np.ndarray, query: np.ndarray, distance: np.ndarray) -> None:
    """Fold `kernels.pdq_hits`' hits of one part (its `refs` and `tags`) into `best`: each ref's
    closest pair (ties: query index, then tag), new refs in the order they were first hit."""
    from shotstamp_service.matching import kernels

    hit_refs, hit_tags = refs[positions], tags[positions]
    chosen = kernels.best_per_ref(hit_refs, distance, query, hit_tags)
    for ref, d, qi, tag in zip(hit_refs[chosen].tolist(), distance[chosen].tolist(),
                               query[chosen].tolist(), hit_tags[chosen].tolist(), strict=True):
        hit = Hit(d, qi, tag)
        if ref not in best or hit < best[ref]:
            best[ref] = hit


def _flip_masks(bits: int, max_flips: int) -> np.ndarray:
    """All `bits`-bit masks with at most `max_flips` bits set (the probes of one chunk)."""
    masks = [0]
    frontier = [0]
    for _ in range(max_flips):
        frontier = sorted({m | (1 << b) for m in frontier for b in range(bits) if not m >> b & 1})
        masks.extend(frontier)
    return np.array(masks, dtype=np.uint32)


@dataclass(frozen=True)
class _Layout:
    """How a 256-bit code is cut into chunks, and how far each chunk is probed.

    Pigeonhole: with `m` chunks, a code within distance r differs in at most ⌊r/m⌋ bits in
    some chunk (`flips` = ⌊max_radius/m⌋). Tighter, as Norouzi, Punjani & Fleet's
    Proposition 2 (r = s·m + a: some chunk of a + 1 chosen ones is within s bits, or some
    other chunk within s − 1): probing chunk c with every value within `chunk_flips[c]`
    bits of the query's finds every code within `max_radius` as long as
    Σ (chunk_flips[c] + 1) > max_radius — were every chunk c farther than chunk_flips[c],
    the code would differ in more bits than that. `chunk_flips` spends exactly
    max_radius + 1, as evenly as it goes, the extra flip on the narrowest chunks (each flip
    costs the fewest probes there): 12 chunks at radius 31 probe 8 chunks 2 bits out and 4
    chunks 1 bit out, 1,948 probes a query code instead of 2,872 (docs/index.md).
    """

    starts: tuple[int, ...]  # first bit of each chunk, MSB-first over the 32 bytes
    widths: tuple[int, ...]
    flips: int  # ⌊max_radius/m⌋, the uniform bound (benches probe older code with it)
    chunk_flips: tuple[int, ...]  # per chunk, the bits its probes flip; -1: not probed

    @functools.cached_property
    def masks(self) -> list[np.ndarray]:
        """Per chunk, the probe masks (`chunk_flips[c]` bits at most; none for -1)."""
        return [_flip_masks(w, f) if f >= 0 else np.zeros(0, np.uint32)
                for w, f in zip(self.widths, self.chunk_flips, strict=True)]

    @classmethod
    def for_size(cls, size: int, max_radius: int, chunk_bits: int | None = None) -> _Layout:
        natural = max(1, size - 1).bit_length() + EXTRA_CHUNK_BITS  # ⌈log2 size⌉ + 2
        bits = chunk_bits or min(MAX_CHUNK_BITS, max(MIN_CHUNK_BITS, natural))
        return _layout(bits, max_radius)

    def values(self, codes: np.ndarray) -> list[np.ndarray]:
        """(n, 32) uint8 codes → one uint32 array of chunk values per chunk."""
        words = codes.view(">u8").reshape(-1, 4)
        out = []
        for start, width in zip(self.starts, self.widths, strict=True):
            k, offset = divmod(start, 64)
            if offset + width <= 64:
                v = words[:, k] >> np.uint64(64 - offset - width)
            else:  # the chunk straddles two 64-bit words
                low = offset + width - 64
                v = (words[:, k] << np.uint64(low)) | (words[:, k + 1] >> np.uint64(64 - low))
            out.append((v & np.uint64((1 << width) - 1)).astype(np.uint32))
        return out


@functools.lru_cache(maxsize=64)
def _layout(bits: int, max_radius: int) -> _Layout:
    """`_Layout.for_size`'s layout for chunks of about `bits` bits (immutable, so shared:
    each scratch matcher of `Matcher.look_again` made its own, ~20 µs an index)."""
    m = -(-CODE_BITS // bits)
    base, extra = divmod(CODE_BITS, m)
    widths = tuple(base + 1 if c < extra else base for c in range(m))
    starts = tuple(int(x) for x in np.cumsum((0, *widths[:-1])))
    return _Layout(starts, widths, max_radius // m, _chunk_flips(widths, max_radius))


def _chunk_flips(widths: tuple[int, ...], max_radius: int) -> tuple[int, ...]:
    """Flips per chunk with Σ (flips + 1) = max_radius + 1 (`_Layout`): each chunk
    ⌊(max_radius + 1)/m⌋ − 1, and one more on the (max_radius + 1) mod m narrowest."""
    each, extra = divmod(max_radius + 1, len(widths))
    flips = [each - 1] * len(widths)
    for c in sorted(range(len(widths)), key=lambda c: (widths[c], c))[:extra]:
        flips[c] += 1
    return tuple(flips)


class Hit(NamedTuple):
    """The closest code pair of one ref: distance, which query code, the stored code's tag."""

    distance: int
    query: int  # index into the query codes
    tag: int  # the tag given to the stored code at `add`


# Run starts kept as one uint8 step a bucket from an int64 base per block (format /4).
OFFSET_BLOCK_BITS = 6


@dataclass(frozen=True)
class PackedOffsets:
    """Every chunk's run starts (2**width + 1 each) in one flat sequence, chunk c's raised by
    c * size so that it stays ascending: `base` per block of 2**OFFSET_BLOCK_BITS entries plus
    a uint8 `step` each; a block spanning more than 255 codes (clustered codes) keeps int32
    steps in `wide` instead, its id in `wide_blocks`. ≈ 1.1 bytes a bucket, not 4."""

    chunk_starts: tuple[int, ...]  # first flat entry of each chunk
    base: np.ndarray  # (blocks,) int64
    step: np.ndarray  # (entries,) uint8; 0 in wide blocks
    wide_blocks: np.ndarray  # (w,) int64, ascending
    wide: np.ndarray  # (w, 2**OFFSET_BLOCK_BITS) int32

    @property
    def nbytes(self) -> int:
        return self.base.nbytes + self.step.nbytes + self.wide_blocks.nbytes + self.wide.nbytes

    @classmethod
    def pack(cls, offsets: list[np.ndarray], size: int) -> PackedOffsets:
        widths = [len(o) for o in offsets]
        chunk_starts = tuple(int(x) for x in np.cumsum([0, *widths[:-1]]))
        flat = np.concatenate([o.astype(np.int64) + c * size for c, o in enumerate(offsets)])
        block = 1 << OFFSET_BLOCK_BITS
        padded = np.concatenate([flat, np.full(-len(flat) % block, flat[-1], np.int64)])
        blocks = padded.reshape(-1, block)
        base = blocks[:, 0].copy()
        rel = blocks - base[:, None]
        wide_blocks = np.flatnonzero(rel[:, -1] > 0xFF)
        wide = rel[wide_blocks].astype(np.int32)
        rel[wide_blocks] = 0
        step = rel.astype(np.uint8).reshape(-1)[: len(flat)]
        return cls(chunk_starts, base, step, wide_blocks.astype(np.int64), wide)

    def at(self, c: int, probes: np.ndarray) -> np.ndarray:
        """Chunk c's run starts at `probes` (int64 values), plus c * size."""
        return self.flat(probes + self.chunk_starts[c])

    def flat(self, i: np.ndarray) -> np.ndarray:
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


@dataclass(frozen=True)
class _Tables:
    """Multi-index tables over positions [0, size) of a snapshot of the code array."""

    size: int
    layout: _Layout
    # (chunks, size) int32: positions sorted by chunk value; or packed, 3 bytes each (`pack_order`)
    order: np.ndarray
    # per chunk, (2**width + 1,) int32 run starts by value; or all of them packed
    offsets: list[np.ndarray] | PackedOffsets
    masks: list[np.ndarray]  # per chunk, the probe masks

    @property
    def nbytes(self) -> int:
        if isinstance(self.offsets, PackedOffsets):
            return self.order.nbytes + self.offsets.nbytes
        return self.order.nbytes + sum(o.nbytes for o in self.offsets)

    @functools.cached_property
    def kernel_view(self) -> kernels.ProbeTable:
        """These tables as the compiled probe reads them (made once: no copy of a mapped
        array, which numba reads in place)."""
        from shotstamp_service.matching import kernels

        ro = kernels.read_only
        widths = self.layout.widths
        masks = ro(np.concatenate(self.masks).astype(np.uint32, copy=False))
        mask_starts = ro(np.cumsum([0, *(len(m) for m in self.masks)]).astype(np.int64))
        if isinstance(self.offsets, PackedOffsets):
            o = self.offsets
            wide_bits = np.zeros(-(-len(o.base) // 8) if len(o.wide_blocks) else 0, np.uint8)
            np.bitwise_or.at(wide_bits, o.wide_blocks >> 3,
                             (1 << (o.wide_blocks & 7)).astype(np.uint8))
            packed = (True, ro(np.asarray(o.base, np.int64)), ro(np.asarray(o.step, np.uint8)),
                      ro(wide_bits), ro(np.asarray(o.wide_blocks, np.int64)),
                      ro(np.asarray(o.wide, np.int32).reshape(-1, 1 << OFFSET_BLOCK_BITS)),
                      kernels.EMPTY_TABLE.plain)
            entry_starts = ro(np.array(o.chunk_starts, np.int64))
        else:
            e = kernels.EMPTY_TABLE
            packed = (False, e.base, e.step, e.wide_bits, e.wide_blocks, e.wide,
                      ro(_back_to_back(self.offsets)))
            entry_starts = ro(np.cumsum([0, *(len(o) for o in self.offsets[:-1])]).astype(np.int64))
        if self.order.dtype == np.uint8:
            order = (True, ro(self.order), kernels.EMPTY_TABLE.order4)
        else:
            order = (False, kernels.EMPTY_TABLE.order3,
                     ro(np.ascontiguousarray(self.order, np.int32).reshape(-1)))
        return kernels.ProbeTable(ro(np.array(self.layout.starts, np.int64)),
                                  ro(np.array(widths, np.int64)), masks, mask_starts,
                                  entry_starts, self.size, *packed, *order)


def _back_to_back(parts: list[np.ndarray]) -> np.ndarray:
    """int32 run starts of every chunk as one flat array: the array `parts` are consecutive
    views of (as `_build_tables` and the segments of formats /1–/3 make them), else a copy."""
    flat = parts[0].base
    if (isinstance(flat, np.ndarray) and flat.dtype == np.int32 and flat.ndim == 1
            and flat.flags.c_contiguous and len(flat) == sum(len(p) for p in parts)):
        at = flat.__array_interface__["data"][0]
        for p in parts:
            if p.__array_interface__["data"][0] != at or not p.flags.c_contiguous:
                break
            at += p.nbytes
        else:
            return flat
    return np.concatenate(parts).astype(np.int32, copy=False)


def _stable_order(values: np.ndarray) -> np.ndarray:
    """Stable argsort of uint32 chunk values with numpy's radix sort on 16-bit keys."""
    low = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
    if int(values.max(initial=0)) < 1 << 16:
        return low
    high = (values[low] >> 16).astype(np.uint16)
    return low[np.argsort(high, kind="stable")]


def _build_tables(codes: np.ndarray, max_radius: int, chunk_bits: int | None) -> _Tables:
    size = len(codes)
    layout = _Layout.for_size(size, max_radius, chunk_bits)
    if size == 0:  # nothing to probe (search skips the tables): no 2**16 offsets per chunk,
        # which made every new index cost ~10 ms (Matcher.look_again builds small ones)
        return _Tables(0, layout, np.empty((len(layout.widths), 0), np.int32), [], [])
    order = np.empty((len(layout.widths), size), np.int32)
    # every chunk's run starts in one flat array (the compiled probe reads it whole)
    ends = np.cumsum([(1 << w) + 1 for w in layout.widths])
    flat = np.empty(int(ends[-1]), np.int32)
    offsets = [flat[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    for c, values in enumerate(layout.values(codes)):
        order[c] = _stable_order(values)
        offsets[c][0] = 0
        np.cumsum(np.bincount(values, minlength=1 << layout.widths[c]), out=offsets[c][1:])
    return _Tables(size, layout, order, offsets, layout.masks)


@dataclass(frozen=True)
class Frozen:
    """A persisted, immutable part of a `HammingIndex` (memory-mapped arrays, see
    `segments.py`): codes, their refs and tags, and multi-index tables over them."""

    codes: np.ndarray  # (n, 32) uint8
    refs: np.ndarray  # (n,) int64
    tags: np.ndarray  # (n,) uint8
    tables: _Tables

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.refs.nbytes + self.tags.nbytes + self.tables.nbytes


def build_frozen(codes: np.ndarray, refs: np.ndarray, tags: np.ndarray, max_radius: int,
                 chunk_bits: int | None = None, *, packed: bool = True) -> Frozen:
    """The tables over `codes`, as `HammingIndex` builds them, for a persisted part (run
    starts and order packed unless `packed` is False, as formats /1–/3 kept them)."""
    codes = np.ascontiguousarray(codes, np.uint8).reshape(-1, CODE_BYTES)
    tables = _build_tables(codes, max_radius, chunk_bits)
    if packed and tables.size and isinstance(tables.offsets, list):
        tables = replace(tables, order=pack_order(tables.order),
                         offsets=PackedOffsets.pack(tables.offsets, tables.size))
    return Frozen(codes, np.asarray(refs, np.int64), np.asarray(tags, np.uint8), tables)


def pack_order(order: np.ndarray) -> np.ndarray:
    """(chunks, size) int32 positions → 3 bytes each, little-endian, plus one padding byte
    (read with `packed_view`, as packed postings are); unchanged from 2**24 codes on."""
    if order.shape[1] >= 1 << 24:
        return order
    out = np.zeros(3 * order.size + 1, np.uint8)
    out[:-1] = order.astype("<u4").reshape(-1, 1).view(np.uint8)[:, :3].ravel()
    return out


@dataclass
class _Rebuild:
    thread: threading.Thread
    size: int  # positions [0, size) are in the snapshot
    result: tuple[np.ndarray, np.ndarray, np.ndarray, _Tables] | None = None  # codes, refs, tags


class HammingIndex:
    """Exact Hamming range search over 256-bit codes; several codes may share one ref.

    `search(codes, radius)` returns, for each ref with any stored code within `radius` of any
    query code, the closest pair as a `Hit` (ties: lowest query index, then lowest tag).
    `radius` may not exceed `max_radius`. `chunk_bits` fixes the chunk width (tests); by
    default it follows the table size (MIN_CHUNK_BITS to MAX_CHUNK_BITS).
    """

    def __init__(self, max_radius: int = 31, *, background: bool = True,
                 chunk_bits: int | None = None) -> None:
        if not 0 <= max_radius < CODE_BITS:
            raise ValueError(f"max_radius must be in [0, 256), got {max_radius}")
        self.max_radius = max_radius
        self._chunk_bits = chunk_bits
        self._background = background
        self._codes = np.zeros((1024, CODE_BYTES), np.uint8)
        self._refs = np.zeros(1024, np.int64)
        self._tags = np.zeros(1024, np.uint8)
        self._live = np.zeros(1024, bool)
        self._n = 0
        self._tables = _build_tables(self._codes[:0], max_radius, chunk_bits)
        self._tail: dict[int, list[int]] = {}  # ref → positions not covered by the tables
        self._rebuild: _Rebuild | None = None
        self._discarded_during_rebuild: list[int] = []
        self._live_count = 0
        self._frozen: list[Frozen] = []  # persisted parts: committed codes, never discarded

    def __len__(self) -> int:
        """Number of live codes."""
        return self._live_count

    @property
    def nbytes(self) -> int:
        t = self._tables
        return (self._codes.nbytes + self._refs.nbytes + self._tags.nbytes + self._live.nbytes
                + t.nbytes + sum(f.nbytes for f in self._frozen))

    def attach(self, part: Frozen) -> None:
        """Search `part` too (a persisted segment's codes; never discarded: they are
        committed registrations, and only reservations are ever discarded)."""
        self._frozen.append(part)
        self._live_count += len(part.codes)

    def replace_frozen(self, parts: list[Frozen], through: int) -> None:
        """Search exactly `parts` as persisted ones (a new manifest: new or merged segments)
        and forget the in-memory codes of refs up to `through`, which they now cover."""
        self.wait()
        n = self._n
        covered = self._live[:n] & (self._refs[:n] <= through)
        if covered.any():
            self._live[:n] &= ~covered
            background, self._background = self._background, False
            self._start_rebuild()  # compacts: the in-memory rows left are few
            self._background = background
        self._frozen = list(parts)
        self._live_count = int(self._live[: self._n].sum()) + sum(len(p.codes) for p in parts)

    def reserve(self, capacity: int) -> None:
        """Grow the arrays once to `capacity` codes (rebuilding at start avoids regrowth)."""
        if capacity > len(self._codes):
            self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        # Fresh arrays, never resized in place: a rebuild thread keeps reading its snapshot.
        codes = np.zeros((capacity, CODE_BYTES), np.uint8)
        refs = np.zeros(capacity, np.int64)
        tags = np.zeros(capacity, np.uint8)
        live = np.zeros(capacity, bool)
        codes[: self._n] = self._codes[: self._n]
        refs[: self._n] = self._refs[: self._n]
        tags[: self._n] = self._tags[: self._n]
        live[: self._n] = self._live[: self._n]
        self._codes, self._refs, self._tags, self._live = codes, refs, tags, live

    def add(self, ref: int, codes: Sequence[bytes], tags: Sequence[int] | None = None) -> None:
        """Store `codes` (32 bytes each) for `ref`, each with a small tag (0–255, default 0)."""
        self._finish_rebuild()
        tags = [0] * len(codes) if tags is None else tags
        if len(tags) != len(codes):
            raise ValueError(f"{len(codes)} codes but {len(tags)} tags")
        for code, tag in zip(codes, tags, strict=True):
            if len(code) != CODE_BYTES:
                raise ValueError(f"codes are {CODE_BYTES} bytes, got {len(code)}")
            if self._n == len(self._codes):
                self._grow(max(1024, len(self._codes) * 3 // 2))
            pos = self._n
            self._codes[pos] = np.frombuffer(code, np.uint8)
            self._refs[pos] = ref
            self._tags[pos] = tag
            self._live[pos] = True
            self._n += 1
            self._live_count += 1
            self._tail.setdefault(ref, []).append(pos)
        if self._n - self._tables.size >= TAIL_LIMIT and self._rebuild is None:
            self._start_rebuild()

    def add_many(self, refs: np.ndarray, codes: np.ndarray,
                 tags: np.ndarray | None = None) -> None:
        """Bulk load (rebuilding at start): `codes[i]` (32 bytes) belongs to `refs[i]`."""
        self.wait()
        codes = np.ascontiguousarray(codes, np.uint8).reshape(-1, CODE_BYTES)
        n = len(codes)
        self.reserve(self._n + n)
        self._codes[self._n : self._n + n] = codes
        self._refs[self._n : self._n + n] = refs
        self._tags[self._n : self._n + n] = 0 if tags is None else tags
        self._live[self._n : self._n + n] = True
        self._n += n
        self._live_count += n
        # Everything is indexed at once; nothing goes through the tail.
        background, self._background = self._background, False
        self._start_rebuild()
        self._background = background

    def discard(self, ref: int) -> None:
        self._finish_rebuild()
        positions = self._tail.pop(ref, None)
        if positions is None:
            positions = np.flatnonzero(self._refs[: self._tables.size] == ref).tolist()
        for pos in positions:
            if self._live[pos]:
                self._live[pos] = False
                self._live_count -= 1
        if self._rebuild is not None:
            self._discarded_during_rebuild.append(ref)

    def rekey(self, old: int, new: int) -> bool:
        """Store `old`'s codes under `new` instead, in place, when they are all in the tail
        and no rebuild holds a snapshot of them; False (nothing changed) otherwise: then
        `discard` and `add` do it. `new` holds no code here. `search` answers alike either
        way: a ref's hit is its closest pair wherever its codes sit."""
        self._finish_rebuild()
        if self._rebuild is not None or new in self._tail:
            return False
        positions = self._tail.pop(old, None)
        if positions is None:
            return False
        self._refs[positions] = new
        self._tail[new] = positions
        return True

    def search(self, codes: Iterable[bytes], radius: int) -> dict[int, Hit]:
        """ref → its closest (query code, stored code) pair within `radius`."""
        if radius > self.max_radius:
            raise ValueError(f"radius {radius} exceeds this index's max_radius {self.max_radius}")
        self._finish_rebuild()
        queries = [np.frombuffer(c, np.uint8) for c in codes]
        best: dict[int, Hit] = {}
        if not queries or self._n + len(self._frozen) == 0:
            return best
        # numba (≈ 0.2 s, 100+ MB mapped) only in processes that search, not the fingerprint workers
        from shotstamp_service.matching import kernels

        q = np.stack(queries)
        for part in self._frozen:
            if part.tables.size:
                _keep_best(best, part.refs, part.tags, *kernels.pdq_hits(
                    part.tables.kernel_view, q, radius, _as_words(part.codes)))
        # the in-memory tables' candidates, then the unindexed tail by brute force; live only
        tables = self._tables
        view = tables.kernel_view if tables.size else kernels.EMPTY_TABLE
        _keep_best(best, self._refs, self._tags, *kernels.pdq_hits(
            view, q, radius, _as_words(self._codes), self._live, (tables.size, self._n)))
        return best

    # -- rebuilding -----------------------------------------------------------------------

    def _start_rebuild(self) -> None:
        size = self._n
        codes, refs, tags = self._codes[:size], self._refs[:size], self._tags[:size]
        live = self._live[:size].copy()

        def work() -> None:
            keep = np.flatnonzero(live)
            kept_codes = codes[keep]
            rebuild.result = (kept_codes, refs[keep], tags[keep],
                              _build_tables(kept_codes, self.max_radius, self._chunk_bits))

        rebuild = _Rebuild(threading.Thread(target=work, name="hamming-rebuild", daemon=True),
                           size)
        self._rebuild = rebuild
        self._discarded_during_rebuild = []
        if self._background and size > INLINE_REBUILD:
            rebuild.thread.start()
        else:
            work()
        self._finish_rebuild()

    def _finish_rebuild(self) -> None:
        rebuild = self._rebuild
        if rebuild is None or rebuild.result is None:
            return
        if rebuild.thread.ident is not None:
            rebuild.thread.join()
        kept_codes, kept_refs, kept_tags, tables = rebuild.result
        size = rebuild.size
        # New arrays: the compacted snapshot, then everything added since it was taken.
        tail_n = self._n - size
        capacity = max(1024, (len(kept_codes) + tail_n) * 3 // 2)
        codes = np.zeros((capacity, CODE_BYTES), np.uint8)
        refs = np.zeros(capacity, np.int64)
        tags = np.zeros(capacity, np.uint8)
        live = np.zeros(capacity, bool)
        k = len(kept_codes)
        codes[:k], refs[:k], tags[:k], live[:k] = kept_codes, kept_refs, kept_tags, True
        codes[k : k + tail_n] = self._codes[size : self._n]
        refs[k : k + tail_n] = self._refs[size : self._n]
        tags[k : k + tail_n] = self._tags[size : self._n]
        live[k : k + tail_n] = self._live[size : self._n]
        # Discards that reached the snapshot while it was being built.
        late = set(self._discarded_during_rebuild)
        if late:
            live[:k] &= ~np.isin(refs[:k], np.fromiter(late, np.int64, len(late)))
        tail: dict[int, list[int]] = {}
        for i in range(k, k + tail_n):
            tail.setdefault(int(refs[i]), []).append(i)
        self._codes, self._refs, self._tags, self._live = codes, refs, tags, live
        self._n = k + tail_n
        self._live_count = int(live[: self._n].sum()) + sum(len(f.codes) for f in self._frozen)
        self._tables = tables
        self._tail = tail
        self._rebuild = None
        self._discarded_during_rebuild = []

    def wait(self) -> None:
        """Block until a rebuild in progress is swapped in (tests, benchmarks)."""
        if self._rebuild is not None:
            if self._rebuild.thread.ident is not None:
                self._rebuild.thread.join()
            self._finish_rebuild()


# -- the inverted file of visual words ------------------------------------------------------

WORD_BITS = 20
WORD_VALUES = 1 << WORD_BITS
ANGLE_BINS = 16
# A segment is frozen from the tail every this many postings (512 registrations of 128
# words); `FANOUT` segments of one tier merge into one of the next. History: docs/index.md,
# "The word vote on a small index".
SEGMENT_POSTINGS = 1 << 16
FANOUT = 8
# Segments this large are never merged again: a merge sorts its whole input, and at ten
# million registrations one segment of everything would need gigabytes of scratch space.
MAX_SEGMENT_POSTINGS = 1 << 26
FINAL_TIER = 1 << 30
# Merges of fewer postings than this run inline (tens of milliseconds).
INLINE_MERGE = 1 << 21
# Postings store the segment-local registration index with the angle bin in the top 4 bits.
_LOCAL_BITS = 28
# Persisted parts pack a posting's local index (< 2**20) and angle bin in 3 bytes, (p, 3)
# uint8: 7 bytes a posting with its signature instead of 8 (docs/index.md, memory at 10 M).
_PACKED_LOCAL_BITS = 20
# Signatures are the uint32 of `local_features.SIGNATURE_BITS` (32) descriptor bits.
SIGNATURE_BITS = 32
# The index keeps the low 16 of them (uint16: 5 bytes a persisted posting, not 7, which puts
# 10 M real-shaped registrations under 8 GB) and counts twice the distance over those 16 as
# the distance over 32: the bits are sampled descriptor positions, so half of them estimate
# the whole (docs/index.md, memory at 10 M; bench/RESULTS.md, index at 10 M).
STORED_SIGNATURE_BITS = 16
_SIGNATURE_SCALE = SIGNATURE_BITS // STORED_SIGNATURE_BITS


def stored_signatures(signatures: np.ndarray) -> np.ndarray:
    """The signatures as the index keeps them: their low STORED_SIGNATURE_BITS, uint16."""
    return np.asarray(signatures).astype(np.uint16)


@dataclass(frozen=True)
class _Segment:
    refs: np.ndarray  # (r,) int64: segment-local registration index → ref
    offsets: np.ndarray  # (WORD_VALUES + 1,) int32: word w's postings [offsets[w], offsets[w+1])
    postings: np.ndarray  # (p,) uint32: local index | angle bin << 28 (or `packed_view`)
    signatures: np.ndarray  # (p,) uint16: `stored_signatures` (uint32 in format /1-/2 files)
    tier: int
    persisted: bool = False  # memory-mapped from a segment file: committed refs only
    packed: bool = False  # postings are a `packed_view`: local | angle << 20 in 3 bytes

    @property
    def nbytes(self) -> int:
        postings = 3 * len(self.postings) + 1 if self.packed else self.postings.nbytes
        return self.refs.nbytes + self.offsets.nbytes + postings + self.signatures.nbytes


def pack_postings(postings: np.ndarray) -> np.ndarray:
    """(p,) uint32 postings → 3p + 1 bytes (local index | angle bin << 20, little-endian,
    one padding byte so the last can be read as 4), or unchanged when a local index does not
    fit in 20 bits. `packed_view` reads them back."""
    local = postings & np.uint32((1 << _LOCAL_BITS) - 1)
    if len(postings) and int(local.max()) >= 1 << _PACKED_LOCAL_BITS:
        return postings
    v = (local | ((postings >> _LOCAL_BITS) << _PACKED_LOCAL_BITS)).astype("<u4")
    out = np.zeros(3 * len(v) + 1, np.uint8)
    out[: 3 * len(v)] = v.view(np.uint8).reshape(-1, 4)[:, :3].ravel()
    return out


def packed_view(raw: np.ndarray) -> np.ndarray:
    """Packed postings as (p,) little-endian uint32 with a 3-byte stride, no copy: each
    element's top byte is the next posting's (`_unpack` masks it). A gather from it is a
    plain numpy gather, twice as fast as assembling the 3 bytes."""
    return np.ndarray(((len(raw) - 1) // 3,), "<u4", buffer=raw, strides=(3,))


def _unpack(post: np.ndarray, packed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(local index, angle bin) as int64 of postings in either layout (see `pack_postings`)."""
    if packed:
        v = post & np.uint32((1 << (_PACKED_LOCAL_BITS + 4)) - 1)
        return ((v & np.uint32((1 << _PACKED_LOCAL_BITS) - 1)).astype(np.int64),
                (v >> _PACKED_LOCAL_BITS).astype(np.int64))
    return ((post & ((1 << _LOCAL_BITS) - 1)).astype(np.int64),
            (post >> _LOCAL_BITS).astype(np.int64))


def _order_by_word(words: np.ndarray) -> np.ndarray:
    """Stable order of 20-bit words: two passes of numpy's radix sort on 16-bit keys."""
    low = np.argsort((words & 0xFFFF).astype(np.uint16), kind="stable")
    high = (words[low] >> 16).astype(np.uint16)
    return low[np.argsort(high, kind="stable")]


def _segment(refs: np.ndarray, reg_of_posting: np.ndarray, words: np.ndarray,
             angles: np.ndarray, signatures: np.ndarray, tier: int) -> _Segment:
    order = _order_by_word(words)
    offsets = np.zeros(WORD_VALUES + 1, np.int64)
    np.cumsum(np.bincount(words, minlength=WORD_VALUES), out=offsets[1:])
    # Segments hold under 2**31 postings (MAX_SEGMENT_POSTINGS): 4-byte offsets suffice.
    offsets = offsets.astype(np.int32)
    if len(words) >= MAX_SEGMENT_POSTINGS:
        tier = FINAL_TIER
    postings = (reg_of_posting[order].astype(np.uint32)
                | (angles[order].astype(np.uint32) << _LOCAL_BITS))
    return _Segment(refs, offsets, postings, stored_signatures(signatures)[order], tier)


def word_segments(refs: np.ndarray, counts: np.ndarray, words: np.ndarray,
                  angles: np.ndarray, signatures: np.ndarray) -> Iterator[_Segment]:
    """Segments of at most MAX_SEGMENT_POSTINGS postings over registrations given as in
    `WordIndex.add_many` (registration i has `counts[i]` consecutive words)."""
    refs = np.asarray(refs, np.int64)
    counts = np.asarray(counts, np.int64)
    ends = np.cumsum(counts)
    start_reg = 0
    while start_reg < len(refs):
        first = int(ends[start_reg - 1]) if start_reg else 0
        stop_reg = int(np.searchsorted(ends, first + MAX_SEGMENT_POSTINGS, side="right"))
        stop_reg = max(stop_reg, start_reg + 1)
        last = int(ends[stop_reg - 1])
        w = np.asarray(words[first:last], np.uint32)
        a = np.asarray(angles[first:last], np.uint8)
        g = stored_signatures(signatures[first:last])
        reg = np.repeat(np.arange(stop_reg - start_reg, dtype=np.int64),
                        counts[start_reg:stop_reg])
        # One vote per word per registration, as in `add`.
        key = reg * WORD_VALUES + w
        _, first_of = np.unique(key, return_index=True)
        first_of.sort()
        yield _segment(refs[start_reg:stop_reg].copy(), reg[first_of], w[first_of],
                       a[first_of], g[first_of], 0)
        start_reg = stop_reg


def _merge(segments: list[_Segment], dead: set[int], tier: int) -> _Segment:
    """One segment holding the live postings of `segments`."""
    refs_parts, reg_parts, word_parts, angle_parts, signature_parts = [], [], [], [], []
    base = 0
    dead_arr = np.fromiter(dead, np.int64, len(dead)) if dead else np.zeros(0, np.int64)
    for seg in segments:
        alive = ~np.isin(seg.refs, dead_arr)
        new_local = np.cumsum(alive) - 1 + base
        counts = np.diff(seg.offsets)
        word = np.repeat(np.arange(WORD_VALUES, dtype=np.uint32), counts)
        local, angle = _unpack(seg.postings, seg.packed)
        keep = alive[local]
        refs_parts.append(seg.refs[alive])
        reg_parts.append(new_local[local[keep]])
        word_parts.append(word[keep])
        angle_parts.append(angle[keep].astype(np.uint8))
        signature_parts.append(stored_signatures(seg.signatures[keep]))
        base += int(alive.sum())
    return _segment(np.concatenate(refs_parts), np.concatenate(reg_parts),
                    np.concatenate(word_parts), np.concatenate(angle_parts),
                    np.concatenate(signature_parts), tier)


# A tail posting is one little-endian uint64: word << 44 | tail index << 20 | angle bin << 16 |
# stored signature, so the sorted array is in word order, each word's postings in the order
# added, and adding or dropping a registration moves one array (bench/vote.py).
_TAIL_WORD_SHIFT = 44
_TAIL_LOCAL_SHIFT = 20
_TAIL_LOCALS = 1 << (_TAIL_WORD_SHIFT - _TAIL_LOCAL_SHIFT)
_TAIL_ANGLE_SHIFT = 16


@dataclass(frozen=True)
class _Tail:
    """The in-memory tail's live postings, sorted by word, each word's in the order added."""

    packed: np.ndarray  # (p,) <u8, see _TAIL_WORD_SHIFT

    @classmethod
    def empty(cls) -> _Tail:
        return cls(np.zeros(0, "<u8"))

    def __len__(self) -> int:
        return len(self.packed)

    def insert(self, local: int, words: np.ndarray, angles: np.ndarray,
               signatures: np.ndarray) -> _Tail:
        """With registration `local`'s postings (`words` sorted and distinct, uint32;
        `local` < _TAIL_LOCALS and above every tail index held)."""
        new = ((words.astype("<u8") << _TAIL_WORD_SHIFT)
               | np.uint64(local << _TAIL_LOCAL_SHIFT)
               | (angles.astype("<u8") << _TAIL_ANGLE_SHIFT) | signatures.astype("<u8"))
        return _Tail(np.insert(self.packed, np.searchsorted(self.packed, new), new))

    def without(self, local: int) -> _Tail:
        held = (self.packed >> _TAIL_LOCAL_SHIFT) & np.uint64(_TAIL_LOCALS - 1)
        return _Tail(self.packed[held != local])

    def ranges(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`[starts, ends)` of each of `words` (uint32) among the postings."""
        key = words.astype("<u8") << _TAIL_WORD_SHIFT
        return (np.searchsorted(self.packed, key, side="left"),
                np.searchsorted(self.packed, key | np.uint64((1 << _TAIL_WORD_SHIFT) - 1),
                                side="right"))


@dataclass(frozen=True)
class WordScore:
    ref: int
    score: float  # idf- and distance-weighted votes in the best orientation bin pair
    votes: int  # agreeing words in that bin pair: the most of any bin pair


@dataclass
class _Merge:
    inputs: list[_Segment]
    dead: set[int]
    tier: int
    thread: threading.Thread | None = None
    result: _Segment | None = None

    def run(self) -> None:
        self.result = _merge(self.inputs, self.dead, self.tier)


@functools.lru_cache(maxsize=8)
def _by_distance(sigma: float | None) -> np.ndarray:
    """A vote's weight by signature distance 0..SIGNATURE_BITS: exp(-(d / sigma)²), or 1."""
    distance = np.arange(SIGNATURE_BITS + 1, dtype=np.float64)
    out = np.ones_like(distance) if sigma is None else np.exp(-((distance / sigma) ** 2))
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class WordQuery:
    """The query side of a word lookup, which depends on the query alone: its distinct words
    (each with the angle bin and stored signature of its first keypoint) and the fresh
    probe words one bit away from those of the `probe` keypoints (each with its source
    keypoint's). Made once an upload and read by each of its looks (`WordIndex.search_query`)."""

    # (w + q,): the w distinct words, sorted, then the q probe words (sorted, none of those)
    words: np.ndarray  # uint32
    angles: np.ndarray  # int64 angle bins
    signatures: np.ndarray  # uint16: `stored_signatures`
    exact: int  # w

    @classmethod
    def of(cls, words: np.ndarray, angles: np.ndarray, signatures: np.ndarray,
           probe: np.ndarray | None = None) -> WordQuery:
        """From one entry per keypoint (as `WordIndex.add` takes them) and the indices of the
        keypoints to probe around (None: none)."""
        words = np.asarray(words, np.uint32)
        angles = np.asarray(angles, np.uint8).astype(np.int64)
        signatures = stored_signatures(signatures)
        unique, first = np.unique(words, return_index=True)
        if probe is None or not len(probe):
            return cls(unique, angles[first], signatures[first], len(unique))
        flips = np.uint32(1) << np.arange(WORD_BITS, dtype=np.uint32)
        probes, first_probe = np.unique((words[probe, None] ^ flips).ravel(), return_index=True)
        source = np.asarray(probe)[first_probe // WORD_BITS]
        fresh = ~np.isin(probes, unique, assume_unique=True)
        source = np.concatenate([first, source[fresh]])
        return cls(np.concatenate([unique, probes[fresh]]), angles[source], signatures[source],
                   len(unique))


class WordIndex:
    """Inverted file of visual words with Hamming-embedding signatures and
    orientation-consistent, idf-weighted voting."""

    def __init__(self, *, background: bool = True,
                 segment_postings: int = SEGMENT_POSTINGS) -> None:
        self._background = background
        self._segment_postings = segment_postings
        self._segments: list[_Segment] = []
        self._tail_refs: list[int] = []
        self._tail_local: dict[int, int] = {}  # ref → index in _tail_refs
        self._tail_words: list[np.ndarray] = []
        self._tail_angles: list[np.ndarray] = []
        self._tail_signatures: list[np.ndarray] = []
        self._tail_postings = 0
        # The tail's live postings sorted by word (each word's in the order added), searched
        # as a segment is, with `searchsorted` for offsets: a lookup's cost no longer grows
        # with the postings of its words in Python (bench/vote.py).
        self._tail = _Tail.empty()
        self._tail_ref_array = np.zeros(0, np.int64)  # tail idx → ref (-1: discarded)
        self._dead: set[int] = set()  # discarded refs still present in some segment
        self._registrations = 0
        self._merge: _Merge | None = None
        # Postings per word summed over the persisted (mapped) parts: a lookup's document
        # frequencies in one gather instead of two per part (32 parts at 10 M, a cache and
        # TLB miss each over their 134 MB of offsets). None while there are none (4 MB).
        self._mapped_df: np.ndarray | None = None

    def __len__(self) -> int:
        """Number of live registrations."""
        return self._registrations

    @property
    def nbytes(self) -> int:
        mapped_df = 0 if self._mapped_df is None else self._mapped_df.nbytes
        return sum(s.nbytes for s in self._segments) + 17 * self._tail_postings + mapped_df

    def _count_mapped(self, parts: Iterable[_Segment]) -> None:
        for seg in parts:
            if seg.persisted:
                if self._mapped_df is None:
                    self._mapped_df = np.zeros(WORD_VALUES, np.int32)
                self._mapped_df += np.diff(seg.offsets).astype(np.int32, copy=False)

    def add(self, ref: int, words: np.ndarray, angles: np.ndarray,
            signatures: np.ndarray) -> None:
        """Index registration `ref` by its words (uint32 < 2**20), angle bins (< 16) and
        signatures (uint32), one of each per keypoint, strongest first."""
        self._finish_merge()
        words = np.asarray(words, np.uint32)
        angles = np.asarray(angles, np.uint8)
        signatures = stored_signatures(signatures)
        # One vote per word per registration: keep the first (strongest) keypoint of each.
        words, first = np.unique(words, return_index=True)
        angles, signatures = angles[first], signatures[first]
        if len(self._tail_refs) >= _TAIL_LOCALS:
            self._freeze_tail()  # tail indexes fit their 24 bits (never, at the default size)
        local = len(self._tail_refs)
        self._tail_refs.append(ref)
        self._tail_local[ref] = local
        self._tail_words.append(words)
        self._tail_angles.append(angles)
        self._tail_signatures.append(signatures)
        self._tail = self._tail.insert(local, words, angles, signatures)
        self._tail_ref_array = np.append(self._tail_ref_array, np.int64(ref))
        self._tail_postings += len(words)
        self._registrations += 1
        if self._tail_postings >= self._segment_postings:
            self._freeze_tail()

    def add_many(self, refs: np.ndarray, counts: np.ndarray, words: np.ndarray,
                 angles: np.ndarray, signatures: np.ndarray) -> None:
        """Bulk load (rebuilding at start): registration i has `counts[i]` consecutive words.

        Builds segments directly, each of at most MAX_SEGMENT_POSTINGS postings, instead of
        going through the tail one registration at a time.
        """
        self._finish_merge()
        for segment in word_segments(refs, counts, words, angles, signatures):
            self._segments.append(segment)
            self._registrations += len(segment.refs)
        self._maybe_merge()

    def discard(self, ref: int) -> None:
        self._finish_merge()
        local = self._tail_local.pop(ref, None)
        if local is not None:
            # Drop its postings now: the tail stays exact.
            self._tail = self._tail.without(local)
            self._tail_refs[local] = -1
            self._tail_ref_array[local] = -1
            self._registrations -= 1
            return
        if ref not in self._dead and any(np.any(s.refs == ref) for s in self._segments
                                         if not s.persisted):
            self._dead.add(ref)
            self._registrations -= 1

    def rekey(self, old: int, new: int) -> bool:
        """Index `old`'s postings under `new` instead, in place, when `old` is in the tail;
        False (nothing changed) otherwise: then `discard` and `add` do it. `new` is not
        indexed here. The tail keeps counting the postings twice, as a discard and an add
        would (`discard` leaves `_tail_postings` as it is), so the tail is frozen after the
        same calls as before and every segment, document frequency and score is the same;
        only where the registration stands in the tail changes, which no answer reads
        (ranks tie on the ref first, and a registration's votes come in query-word order)."""
        self._finish_merge()
        local = self._tail_local.pop(old, None)
        if local is None:
            return False
        self._tail_refs[local] = new
        self._tail_local[new] = local
        self._tail_ref_array[local] = new
        self._tail_postings += len(self._tail_words[local])
        if self._tail_postings >= self._segment_postings:
            self._freeze_tail()
        return True

    def attach(self, segment: _Segment) -> None:
        """Search `segment` too (a persisted one, never merged here; see `segments.py`)."""
        self._finish_merge()
        self._segments.append(segment)
        self._registrations += len(segment.refs)
        self._count_mapped([segment])

    def replace_persisted(self, parts: list[_Segment], through: int) -> None:
        """Search exactly `parts` as persisted segments (a new manifest) and forget the
        in-memory postings of refs up to `through`, which they now cover."""
        self.wait()
        kept = []
        for seg in self._segments:
            if seg.persisted:
                continue
            covered = (seg.refs >= 0) & (seg.refs <= through)
            if not covered.any():
                kept.append(seg)
            elif not covered.all():
                kept.append(_merge([seg], set(seg.refs[covered].tolist()), seg.tier))
        for ref in [r for r in self._tail_local if r <= through]:
            self.discard(ref)  # exact in the tail
        self._segments = list(parts) + kept
        self._mapped_df = None
        self._count_mapped(self._segments)
        self._dead = {r for r in self._dead if r > through}
        self._registrations = (sum(len(s.refs) for s in self._segments) - len(self._dead)
                               + len(self._tail_local))

    def _freeze_tail(self) -> None:
        live = [i for i, r in enumerate(self._tail_refs) if r != -1]
        refs = np.array([self._tail_refs[i] for i in live], np.int64)
        words = [self._tail_words[i] for i in live]
        angles = [self._tail_angles[i] for i in live]
        signatures = [self._tail_signatures[i] for i in live]
        reg = np.repeat(np.arange(len(live), dtype=np.int64), [len(w) for w in words])
        segment = _segment(refs, reg, np.concatenate(words) if words else np.zeros(0, np.uint32),
                           np.concatenate(angles) if angles else np.zeros(0, np.uint8),
                           np.concatenate(signatures) if signatures else np.zeros(0, np.uint16),
                           0)
        self._segments.append(segment)
        self._tail_refs, self._tail_local = [], {}
        self._tail_words, self._tail_angles, self._tail_signatures = [], [], []
        self._tail, self._tail_postings = _Tail.empty(), 0
        self._tail_ref_array = np.zeros(0, np.int64)
        self._maybe_merge()

    def _maybe_merge(self) -> None:
        if self._merge is not None:
            return
        for tier in sorted({s.tier for s in self._segments} - {FINAL_TIER}):
            group = [s for s in self._segments if s.tier == tier]
            if len(group) < FANOUT:
                continue
            merge = _Merge(group, set(self._dead), tier + 1)
            self._merge = merge
            if self._background and sum(len(s.postings) for s in group) > INLINE_MERGE:
                merge.thread = threading.Thread(target=merge.run, name="word-merge", daemon=True)
                merge.thread.start()
            else:
                merge.run()
                self._finish_merge()
            return

    def _finish_merge(self) -> None:
        merge = self._merge
        if merge is None or merge.result is None:
            return
        merged = merge.result
        inputs = {id(s) for s in merge.inputs}
        self._segments = [s for s in self._segments if id(s) not in inputs] + [merged]
        # Refs the merge dropped are gone for good; refs discarded since are still dead.
        still_present = set()
        for ref in self._dead:
            if any(np.any(s.refs == ref) for s in self._segments if not s.persisted):
                still_present.add(ref)
        self._dead = still_present
        self._merge = None
        self._maybe_merge()

    def wait(self) -> None:
        """Block until merges in progress are swapped in (tests, benchmarks)."""
        while self._merge is not None:
            if self._merge.thread is not None:
                self._merge.thread.join()
            if self._merge.result is None:  # pragma: no cover - the thread always sets it
                break
            self._finish_merge()

    def search(self, words: np.ndarray, angles: np.ndarray, signatures: np.ndarray, *,
               limit: int, min_votes: int, max_distance: int = SIGNATURE_BITS,
               sigma: float | None = None, max_df: float = 0.02,
               max_postings: int | None = None, probe: np.ndarray | None = None,
               max_probe_postings: int | None = None, scale_probe_postings: int = 0,
               ) -> list[WordScore]:
        """The `limit` best-scoring registrations with at least `min_votes` consistent words.

        A query word votes for a posting only if their signatures differ in at most
        `max_distance` bits (`SIGNATURE_BITS`: every posting of the word votes); the vote
        weighs idf(word) · exp(-(d / `sigma`)²) at distance d (Jégou, Douze & Schmid's
        weighting of Hamming-embedding matches), or idf(word) alone when `sigma` is None.
        Distances are over SIGNATURE_BITS: twice those over the STORED_SIGNATURE_BITS kept.

        Words held by more than `max_df` of all registrations (and by more than 64 of them)
        are skipped: they carry almost no information (idf near zero) and cost the most. With
        `max_postings`, only the rarest query words whose postings fit that budget are read:
        the cost of a lookup stays bounded however large the index grows, and the words left
        out are the least informative.

        `probe` (indices into the query words): also read, for each of those words, the
        words one bit away from it (multi-probe LSH, Lv et al. 2007), with its angle and
        signature — after every exact word, and only within what `max_postings` leaves and
        `max_probe_postings` allows (rarest first). Where the exact words alone fill
        `max_postings` (at scale: past ~270 k registrations they always do, and no probe word
        was read), the probe words read up to `scale_probe_postings` (if more) beyond it.
        """
        return self.search_query(WordQuery.of(words, angles, signatures, probe), limit=limit,
                                 min_votes=min_votes, max_distance=max_distance, sigma=sigma,
                                 max_df=max_df, max_postings=max_postings,
                                 max_probe_postings=max_probe_postings,
                                 scale_probe_postings=scale_probe_postings)

    def search_query(self, query: WordQuery, *, limit: int, min_votes: int,
                     max_distance: int = SIGNATURE_BITS, sigma: float | None = None,
                     max_df: float = 0.02, max_postings: int | None = None,
                     max_probe_postings: int | None = None, scale_probe_postings: int = 0,
                     ) -> list[WordScore]:
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
            if scale_probe_postings and max_postings is not None \
                    and self._fill(df[:n], total, max_df, max_postings):
                # the exact words fill the budget: the probe words read their own
                left = max(left or 0, scale_probe_postings)
            read = np.concatenate([read, n + self._readable(df[n:], total, max_df, left)])
        df = df[read]
        ranges = [r if r is None else (r[0][read], r[1][read]) for r in ranges]
        idf = np.log((total + 1) / df)
        by_distance = _by_distance(sigma)
        # The best `keep` are enough: dead registrations may still be among them.
        keep = limit + len(self._dead)
        results = self._best(*self._votes(query.words[read], query.angles[read],
                                          query.signatures[read], idf, max_distance,
                                          by_distance, ranges), min_votes, keep)
        results = [r for r in results if r.ref not in self._dead]
        results.sort(key=lambda r: (-r.score, r.ref))
        return results[:limit]

    def _frequencies(self, words: np.ndarray,
                     ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray] | None]]:
        """The document frequency of each of `words`, and the `[starts, ends)` of each among
        the postings of every in-memory segment and of the tail (last), read once for all
        of a lookup's words; None for a mapped segment (its frequencies are summed in
        `_mapped_df`, and only the words read touch its offsets)."""
        w64 = words.astype(np.int64)
        df = (np.zeros(len(words), np.int64) if self._mapped_df is None
              else self._mapped_df[w64].astype(np.int64))
        ranges: list[tuple[np.ndarray, np.ndarray] | None] = []
        for seg in self._segments:
            if seg.persisted:
                ranges.append(None)
                continue
            starts, ends = seg.offsets[w64], seg.offsets[w64 + 1]
            df += ends - starts
            ranges.append((starts, ends))
        starts, ends = self._tail.ranges(words)
        df += ends - starts
        ranges.append((starts, ends))
        return df, ranges

    @staticmethod
    def _useful(df: np.ndarray, total: int, max_df: float) -> np.ndarray:
        """Which of the words with document frequencies `df` are worth reading at all (see
        `search`): a mask."""
        return (df > 0) & ~((df > 64) & (df > max_df * total))

    @staticmethod
    def _fill(df: np.ndarray, total: int, max_df: float, budget: int) -> bool:
        """Whether the words worth reading (`_useful`) hold `budget` postings or more."""
        return int(df[WordIndex._useful(df, total, max_df)].sum()) >= budget

    @staticmethod
    def _readable(df: np.ndarray, total: int, max_df: float, budget: int | None,
                  ) -> np.ndarray:
        """Which of the query words with document frequencies `df` are worth reading (see
        `search`), rarest first within `budget` postings: their positions, in order."""
        useful = WordIndex._useful(df, total, max_df)
        if budget is not None and int(df[useful].sum()) > budget:
            candidates = np.flatnonzero(useful)
            rarest = candidates[np.argsort(df[candidates], kind="stable")]
            useful = np.zeros(len(df), bool)
            useful[rarest[np.cumsum(df[rarest]) <= budget]] = True
        return np.flatnonzero(useful)

    def _votes(self, words: np.ndarray, angles: np.ndarray, signatures: np.ndarray,
               idf: np.ndarray, max_distance: int, by_distance: np.ndarray,
               ranges: list[tuple[np.ndarray, np.ndarray] | None],
               ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The votes of the postings whose signature is within `max_distance` of the query
        word's, segment after segment, then the tail: (each part's refs, local index, angle
        difference, weight, vote_starts) as `kernels.best_bins` takes them, read and filtered
        by the compiled `kernels.near_votes` (bit-identical to the numpy `_near` it replaced,
        kept in tests/unit/matching/near_2bd7b28.py). `ranges`: `_frequencies`' of these
        words (None: read them from the segment's offsets)."""
        from shotstamp_service.matching import kernels

        w64 = words.astype(np.int64)
        parts = []
        for seg, known in zip(self._segments, ranges, strict=False):
            starts, ends = (seg.offsets[w64], seg.offsets[w64 + 1]) if known is None else known
            local_bits = _PACKED_LOCAL_BITS if seg.packed else _LOCAL_BITS
            parts.append(kernels.NearPart(seg.refs, seg.postings, seg.signatures, starts, ends,
                                          0, (1 << local_bits) - 1, local_bits))
        tail, known_tail = self._tail, ranges[-1]
        if len(tail) and known_tail is not None:  # (the tail's are always known)
            parts.append(kernels.NearPart(self._tail_ref_array, tail.packed, tail.packed,
                                          *known_tail, _TAIL_LOCAL_SHIFT, _TAIL_LOCALS - 1,
                                          _TAIL_ANGLE_SHIFT))
        local, dangle, weight, vote_starts = kernels.near_votes(
            parts, angles, signatures, idf, by_distance, max_distance // _SIGNATURE_SCALE,
            _SIGNATURE_SCALE)
        return [p.refs for p in parts], local, dangle, weight, vote_starts

    @staticmethod
    def _score(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
               min_votes: int, keep: int) -> list[WordScore]:
        """`_best` of votes given as one (refs, local index, angle difference, weight) tuple a
        part (the form `_votes` yielded until 2bd7b28; tests and benches score such parts)."""
        vote_starts = np.zeros(len(parts) + 1, np.int64)
        np.cumsum([len(p[1]) for p in parts], out=vote_starts[1:])
        if not parts:
            return []
        return WordIndex._best(
            [p[0] for p in parts],
            np.concatenate([p[1] for p in parts]).astype(np.int64, copy=False),
            np.concatenate([p[2] for p in parts]).astype(np.int64, copy=False),
            np.concatenate([p[3] for p in parts]), vote_starts, min_votes, keep)

    @staticmethod
    def _best(refs_of: list[np.ndarray], local: np.ndarray, dangle: np.ndarray,
              weight: np.ndarray, vote_starts: np.ndarray, min_votes: int, keep: int,
              ) -> list[WordScore]:
        """The `keep` best registrations (score, then ref) of the votes of every part
        (`_votes`; part p's are `[vote_starts[p], vote_starts[p + 1])`, its local indexes
        into `refs_of[p]`): per registration its best angle bin pair, counted by the compiled
        `kernels.best_bins` (bit-identical to the numpy scoring it replaced, kept as the
        reference in tests/unit/matching/test_matching_kernels.py)."""
        # numba (≈ 0.2 s, 100+ MB mapped) only in processes that vote, not the fingerprint workers
        from shotstamp_service.matching import kernels

        voted = np.flatnonzero(np.diff(vote_starts))
        if not len(voted):
            return []
        part, local, score, votes = kernels.best_bins(
            local, dangle, weight, vote_starts, max(len(refs_of[k]) for k in voted.tolist()),
            min_votes)
        refs = np.empty(len(local), np.int64)
        bounds = np.searchsorted(part, np.arange(len(refs_of) + 1))  # parts come in order
        for k in voted.tolist():
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            refs[lo:hi] = refs_of[k][local[lo:hi]]
        chosen = refs != -1
        part, local, refs = part[chosen], local[chosen], refs[chosen]
        score, votes = score[chosen], votes[chosen]
        # the `keep` best, in the order `search` ranks them (score, then ref, then where the
        # registration stands among the parts, as before); only those scoring at least the
        # keep-th best score are sorted (≈ 6,000 registrations score at 1 M, 64 + dead kept)
        if 0 < keep < len(score):
            floor = -np.partition(-score, keep - 1)[keep - 1]
            top = np.flatnonzero(score >= floor)
            best = top[np.lexsort((local[top], part[top], refs[top], -score[top]))][:keep]
        else:
            best = np.lexsort((local, part, refs, -score))[:keep]
        return [WordScore(int(r), float(s), int(v))
                for r, s, v in zip(refs[best].tolist(), score[best].tolist(),
                                   votes[best].tolist(), strict=True)]
