"""Persisted index segments: the index as immutable, memory-mapped files (docs/index.md).

A segment holds everything the matcher needs of the registrations with store sequence
numbers in (after, through]: the PDQ codes with their multi-index tables (both quality
classes), the word postings with their signatures, the pHash-only codes, and which seller
owns each ref — flat numpy arrays in `.npy` files, opened with `mmap_mode="r"`, so every
process on the machine that maps them shares one copy of the pages.

A directory of segments is described by `manifest.json`: the segments in sequence order,
contiguous from 0, each with its files' sizes and CRC-32s. Segments are written to a
temporary name, fsynced, renamed, and only then listed in a new manifest (itself written to
a temporary name, fsynced, renamed), so a crash leaves either the old manifest or the new one.
The store stays the source of truth: a segment found missing or damaged at start is dropped
with every later one, and what they covered is read from the store again and rewritten.

Writers take an exclusive `flock` on `lock`; readers need no lock (a manifest names only
complete segments, and a merge never deletes a file another process still maps: on Linux
the pages live until unmapped). Every `FANOUT` consecutive segments of one tier are merged
into one of the next tier (log-structured, tiered): PDQ tables are rebuilt over the union so a
lookup probes few tables, word postings merge up to `index.MAX_SEGMENT_POSTINGS` per part
(larger parts are linked into the merged segment unchanged).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import shutil
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shotstamp_service.matching.engine import PDQ_CANDIDATE, Columns
from shotstamp_service.matching.index import (
    FINAL_TIER,
    MAX_SEGMENT_POSTINGS,
    OFFSET_BLOCK_BITS,
    Frozen,
    PackedOffsets,
    _Layout,
    _merge,
    _Segment,
    _Tables,
    build_frozen,
    pack_postings,
    packed_view,
    word_segments,
)

# np.load parses each file's header with ast.literal_eval, and CPython 3.11's AST constructor
# keeps one recursion counter per interpreter: two threads opening segments at once (two
# registries, or a start beside the segment keeper) raised "AST constructor recursion depth
# mismatch" in CI (python/cpython#106905). Opening is rare; one header at a time.
_HEADER_PARSE = threading.Lock()

__all__ = ["FANOUT", "Damaged", "Segment", "SegmentDir"]

log = logging.getLogger(__name__)

# /5 keeps the registration map's and the word parts' refs (store seqs) in 4 bytes and
# sellers in 2 (`_narrow_refs`, `_narrow_sellers`): 0.10 GB less at 10 M.
# /4 packs the PDQ tables' run starts (`index.PackedOffsets`: {prefix}.{base,step,wide_blocks,
# wide} instead of int32 {prefix}.offsets) and their order (3 bytes a position, uint8 {prefix}.order
# instead of int32, `index.pack_order`); /3 keeps 16-bit signatures (`index.stored_signatures`:
# 5 bytes a posting) and int32 PDQ refs; /2 packed word postings in 3 bytes
# (`index.pack_postings`) beside 32-bit signatures, /1 did not. Older segments are read as they
# are (their signatures truncate when compared; their int32 run starts are searched as such).
FORMAT = "shotstamp-index/5"
_READABLE = (FORMAT, "shotstamp-index/4", "shotstamp-index/3", "shotstamp-index/2",
             "shotstamp-index/1")
MANIFEST = "manifest.json"
LOCK = "lock"
# Consecutive segments of one tier merged into one of the next.
FANOUT = 8
_CRC_BLOCK = 1 << 24


class Damaged(Exception):
    """A segment file is missing, truncated or fails its checksum."""


@dataclass(frozen=True)
class Segment:
    """One persisted segment, its arrays memory-mapped (read-only)."""

    name: str
    after: int  # covers store seqs in (after, through]
    through: int
    tier: int
    refs: np.ndarray  # (r,) int32 (int64 before /5): every registration it holds, ascending
    sellers: np.ndarray  # (r,) uint16 (int32 before /5, or past 65,536 names): into `names`
    names: tuple[str, ...]
    pdq: Frozen  # codes of quality >= PDQ_MIN_QUALITY
    pdq_low: Frozen  # the others
    words: tuple[_Segment, ...]
    legacy: tuple[tuple[int, bytes], ...]  # (ref, pHash) of pHash-only registrations

    @property
    def nbytes(self) -> int:
        return (self.refs.nbytes + self.sellers.nbytes + self.pdq.nbytes + self.pdq_low.nbytes
                + sum(w.nbytes for w in self.words))


def _narrow_refs(refs: np.ndarray) -> np.ndarray:
    """Refs as written: store seqs fit 4 bytes (int64 only past 2**31, e.g. in tests)."""
    refs = np.asarray(refs)
    if not len(refs) or (int(refs.min()) >= 0 and int(refs.max()) < 1 << 31):
        return refs.astype(np.int32)
    return refs.astype(np.int64)


def _narrow_sellers(sellers: np.ndarray, names: int) -> np.ndarray:
    """Seller codes as written: 2 bytes while a segment has at most 65,536 sellers."""
    return np.asarray(sellers).astype(np.uint16 if names <= 1 << 16 else np.int32)


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(_CRC_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _frozen_arrays(prefix: str, part: Frozen) -> dict[str, np.ndarray]:
    t = part.tables
    refs = part.refs
    if len(refs) and int(refs.max()) < 1 << 31:  # store seqs: 4 bytes, not 8
        refs = refs.astype(np.int32)
    arrays = {f"{prefix}.codes": part.codes, f"{prefix}.refs": refs,
              f"{prefix}.tags": part.tags, f"{prefix}.order": t.order}
    o = t.offsets
    if isinstance(o, list):  # empty tables (build_frozen packs the others)
        o = PackedOffsets.pack(o, t.size) if o else PackedOffsets(
            (), np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int64),
            np.zeros((0, 1 << OFFSET_BLOCK_BITS), np.int32))
    arrays.update({f"{prefix}.base": o.base, f"{prefix}.step": o.step,
                   f"{prefix}.wide_blocks": o.wide_blocks, f"{prefix}.wide": o.wide})
    return arrays


def _word_arrays(k: int, part: _Segment) -> dict[str, np.ndarray]:
    return {f"words{k}.refs": _narrow_refs(part.refs), f"words{k}.offsets": part.offsets,
            f"words{k}.postings": pack_postings(part.postings),
            f"words{k}.signatures": part.signatures}


class SegmentDir:
    """A directory of segments shared by the processes of one machine.

    `verify`: check every file's CRC-32 when it is opened (reads every page once); without
    it only sizes are checked at open and `verify_all` can run later, off the start path.
    """

    def __init__(self, path: Path, *, verify: bool = False) -> None:
        self.path = Path(path)
        self.verify = verify

    # -- the manifest ---------------------------------------------------------------------

    def manifest(self) -> list[dict[str, Any]]:
        """The listed segments' entries, in sequence order ([] when there is none yet)."""
        try:
            data = json.loads((self.path / MANIFEST).read_text())
        except FileNotFoundError:
            return []
        except ValueError:  # unreadable: start over from the store
            log.warning("index manifest %s is damaged; the index is rebuilt from the store",
                        self.path / MANIFEST)
            return []
        if data.get("format") not in _READABLE:
            log.warning("index manifest %s has format %r, not %r; the index is rebuilt",
                        self.path / MANIFEST, data.get("format"), FORMAT)
            return []
        entries: list[dict[str, Any]] = data["segments"]
        return entries

    def _write_manifest(self, entries: list[dict[str, Any]]) -> None:
        tmp = self.path / f".{MANIFEST}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"format": FORMAT, "segments": entries}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / MANIFEST)
        _fsync_dir(self.path)

    def stamp(self) -> tuple[int, int, int] | None:
        """The manifest's (inode, mtime, size): it changes with every manifest written
        (each is a new file renamed into place). None when there is no manifest."""
        try:
            st = (self.path / MANIFEST).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The writers' lock (one process builds or merges at a time)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @property
    def through(self) -> int:
        entries = self.manifest()
        return int(entries[-1]["through"]) if entries else 0

    # -- opening --------------------------------------------------------------------------

    def open(self) -> list[Segment]:
        """Map the listed segments, contiguous from seq 0. The first damaged or missing one
        is dropped from the manifest with every later one (the store still has them)."""
        for _ in range(3):  # a merge by another process may replace what was listed
            entries = self.manifest()
            opened: list[Segment] = []
            for i, entry in enumerate(entries):
                expected = opened[-1].through if opened else 0
                try:
                    if int(entry["after"]) != expected:
                        raise Damaged(f"covers seqs after {entry['after']}, expected "
                                      f"{expected}")
                    opened.append(self._open(entry, verify=self.verify))
                except (Damaged, OSError, ValueError, KeyError) as exc:
                    with self.lock():
                        current = self.manifest()
                        if current != entries:
                            break  # changed meanwhile: open the new one
                        log.warning("index segment %s is unusable (%s): it and %d later "
                                    "segment(s) are rebuilt from the store", entry.get("name"),
                                    exc, len(entries) - i - 1)
                        self._write_manifest(current[:i])
                    return opened
            else:
                return opened
        return opened

    def _open(self, entry: dict[str, Any], *, verify: bool) -> Segment:
        root = self.path / entry["name"]
        files: dict[str, list[int]] = entry["files"]

        def load(name: str) -> np.ndarray:
            path = root / f"{name}.npy"
            size, crc = files[f"{name}.npy"]
            try:
                actual = path.stat().st_size
            except FileNotFoundError:
                raise Damaged(f"{path} is missing") from None
            if actual != size:
                raise Damaged(f"{path} has {actual} bytes, the manifest says {size}")
            if verify and _crc(path) != crc:
                raise Damaged(f"{path} fails its checksum")
            # A plain ndarray view of the np.memmap (it keeps the mapping alive): indexing a
            # memmap runs Python code each time, ≈ 250 times a word vote at 10 M.
            with _HEADER_PARSE:
                array: np.ndarray = np.load(path, mmap_mode="r",
                                            allow_pickle=False).view(np.ndarray)
            return array

        def frozen(prefix: str) -> Frozen:
            codes, order = load(f"{prefix}.codes"), load(f"{prefix}.order")
            size = len(codes)
            layout = _Layout.for_size(size, PDQ_CANDIDATE, int(entry["chunk_bits"][prefix]))
            lengths = [(1 << width) + 1 for width in layout.widths] if size else []
            masks = layout.masks if size else []
            offsets: list[np.ndarray] | PackedOffsets
            if f"{prefix}.offsets.npy" in files:  # formats /1–/3: int32 run starts
                flat = load(f"{prefix}.offsets")
                starts = np.cumsum([0, *lengths])
                offsets = [flat[a:b] for a, b in itertools.pairwise(starts)]
                total = int(starts[-1])
            else:
                step = load(f"{prefix}.step")
                base, wide_blocks = load(f"{prefix}.base"), load(f"{prefix}.wide_blocks")
                wide = load(f"{prefix}.wide")
                offsets = PackedOffsets(tuple(int(x) for x in np.cumsum([0, *lengths[:-1]])),
                                        base, step, wide_blocks, wide)
                flat = step
                total = sum(lengths)
                if len(base) != -(-total // (1 << OFFSET_BLOCK_BITS)) or (
                        wide.shape != (len(wide_blocks), 1 << OFFSET_BLOCK_BITS)):
                    raise Damaged(f"{prefix} run starts do not match its layout")
            if total != len(flat):
                raise Damaged(f"{prefix} offsets do not match its layout")
            if order.dtype == np.uint8 and len(order) != 3 * len(lengths) * size + 1:
                raise Damaged(f"{prefix} order does not match its layout")
            return Frozen(codes, load(f"{prefix}.refs"), load(f"{prefix}.tags"),
                          _Tables(size, layout, order, offsets, masks))

        def word_part(k: int) -> _Segment:
            postings = load(f"words{k}.postings")
            packed = postings.dtype == np.uint8  # else uint32, as format /1 wrote them
            return _Segment(load(f"words{k}.refs"), load(f"words{k}.offsets"),
                            packed_view(postings) if packed else postings,
                            load(f"words{k}.signatures"), FINAL_TIER, persisted=True,
                            packed=packed)

        words = tuple(word_part(k) for k in range(int(entry["word_parts"])))
        legacy_refs, legacy_codes = load("legacy.refs"), load("legacy.codes")
        return Segment(
            name=entry["name"], after=int(entry["after"]), through=int(entry["through"]),
            tier=int(entry["tier"]), refs=load("refs"), sellers=load("sellers"),
            names=tuple(str(n) for n in load("names").tolist()),
            pdq=frozen("pdq"), pdq_low=frozen("low"), words=words,
            legacy=tuple(zip(legacy_refs.tolist(),
                             (bytes(c) for c in np.asarray(legacy_codes)), strict=True)))

    def verify_all(self) -> list[str]:
        """Check every listed segment's checksums; the names of those that fail."""
        bad = []
        for entry in self.manifest():
            try:
                self._open(entry, verify=True)
            except (Damaged, OSError, ValueError, KeyError):
                bad.append(entry["name"])
        return bad

    # -- writing --------------------------------------------------------------------------

    def add(self, columns: Columns, sellers: list[str], after: int, through: int) -> bool:
        """Write the registrations of `columns` (seqs in (after, through], `sellers[i]` owns
        `columns.refs[i]`) as a new segment, then merge tiers; `open` maps the result. False
        if the manifest no longer ends at `after` (another process wrote that range first)."""
        return self.add_arrays(np.array(columns.refs, np.int64), sellers, columns.codes("good"),
                               columns.codes("low"), columns.words(), columns.legacy(),
                               after, through)

    def add_arrays(self, refs: np.ndarray, sellers: list[str],
                   pdq: tuple[np.ndarray, np.ndarray, np.ndarray],
                   pdq_low: tuple[np.ndarray, np.ndarray, np.ndarray],
                   words: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                   legacy: list[tuple[int, bytes]], after: int, through: int) -> bool:
        """`add` from the arrays of `Columns.codes`, `Columns.words` and `Columns.legacy`."""
        names = sorted(set(sellers))
        code = {n: i for i, n in enumerate(names)}
        seller_codes = _narrow_sellers(np.array([code[s] for s in sellers], np.int32),
                                       len(names))
        arrays: dict[str, np.ndarray] = {"refs": _narrow_refs(refs), "sellers": seller_codes,
                                         "names": np.array(names, dtype=str)}
        chunk_bits = {}
        for prefix, (code_refs, codes, tags) in (("pdq", pdq), ("low", pdq_low)):
            part = build_frozen(codes, code_refs, tags, PDQ_CANDIDATE)
            arrays.update(_frozen_arrays(prefix, part))
            chunk_bits[prefix] = max(part.tables.layout.widths)
        parts = list(word_segments(*words))
        for k, w in enumerate(parts):
            arrays.update(_word_arrays(k, w))
        arrays["legacy.refs"] = np.array([r for r, _ in legacy], np.int64)
        arrays["legacy.codes"] = np.frombuffer(b"".join(c for _, c in legacy),
                                               np.uint8).reshape(-1, 8)
        with self.lock():
            entries = self.manifest()
            if (int(entries[-1]["through"]) if entries else 0) != after:
                return False
            entry = self._write_segment(arrays, after, through, 0, chunk_bits, len(parts),
                                        len(refs))
            entries.append(entry)
            self._write_manifest(entries)
            self._merge_tiers()
            return True

    def _write_segment(self, arrays: dict[str, np.ndarray], after: int, through: int,
                       tier: int, chunk_bits: dict[str, int], word_parts: int,
                       registrations: int,
                       links: dict[str, Path] | None = None) -> dict[str, Any]:
        name = f"seg-{after + 1:012d}-{through:012d}-t{tier}"
        tmp = self.path / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        files: dict[str, list[int]] = {}
        for key, array in arrays.items():
            path = tmp / f"{key}.npy"
            with open(path, "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            files[path.name] = [path.stat().st_size, _crc(path)]
        for key, source in (links or {}).items():  # unchanged word parts of a merge
            path = tmp / f"{key}.npy"
            os.link(source, path)
            files[path.name] = [path.stat().st_size, _crc(path)]
        _fsync_dir(tmp)
        final = self.path / name
        shutil.rmtree(final, ignore_errors=True)  # a leftover no manifest lists
        os.rename(tmp, final)
        _fsync_dir(self.path)
        return {"name": name, "after": after, "through": through, "tier": tier,
                "registrations": registrations, "chunk_bits": chunk_bits,
                "word_parts": word_parts, "files": files}

    def _merge_tiers(self) -> None:
        """Merge the last FANOUT segments while they share a tier (caller holds the lock)."""
        while True:
            entries = self.manifest()
            tail = entries[-FANOUT:]
            if len(tail) < FANOUT or len({e["tier"] for e in tail}) != 1:
                return
            segments = [self._open(e, verify=False) for e in tail]
            entry = self._merged(segments, int(tail[0]["tier"]) + 1)
            self._write_manifest([*entries[:-FANOUT], entry])
            log.info("index segments %s..%s merged into %s", tail[0]["name"], tail[-1]["name"],
                     entry["name"])
            for e in tail:
                shutil.rmtree(self.path / e["name"], ignore_errors=True)

    def _merged(self, segments: list[Segment], tier: int) -> dict[str, Any]:
        names = sorted({n for s in segments for n in s.names})
        code = {n: i for i, n in enumerate(names)}
        sellers = np.concatenate([np.array([code[n] for n in s.names], np.int32)[s.sellers]
                                  if len(s.names) else np.zeros(0, np.int32)
                                  for s in segments])
        arrays: dict[str, np.ndarray] = {
            "refs": _narrow_refs(np.concatenate([s.refs for s in segments])),
            "sellers": _narrow_sellers(sellers, len(names)),
            "names": np.array(names, dtype=str)}
        chunk_bits = {}
        for prefix in ("pdq", "low"):
            parts = [getattr(s, "pdq" if prefix == "pdq" else "pdq_low") for s in segments]
            part = build_frozen(np.concatenate([p.codes for p in parts]),
                                np.concatenate([p.refs for p in parts]),
                                np.concatenate([p.tags for p in parts]), PDQ_CANDIDATE)
            arrays.update(_frozen_arrays(prefix, part))
            chunk_bits[prefix] = max(part.tables.layout.widths)
        # Word parts: packed into as few parts of at most MAX_SEGMENT_POSTINGS as first-fit
        # decreasing finds (a lookup reads every part: at 10 M, 18 instead of the 32 that
        # merging only neighbours left, each input segment's short last part standing
        # alone); a part that stays alone is hard-linked unchanged. A registration's postings
        # are all in one part, so parts may hold registrations in any order.
        links: dict[str, Path] = {}
        inputs = [(s, k) for s in segments for k in range(len(s.words))]
        sizes = [len(s.words[k].postings) for s, k in inputs]
        groups: list[list[int]] = []
        room: list[int] = []
        for i in sorted(range(len(inputs)), key=lambda i: -sizes[i]):
            fit = next((g for g, left in enumerate(room) if sizes[i] <= left), None)
            if fit is None:
                groups.append([])
                room.append(MAX_SEGMENT_POSTINGS)
                fit = len(groups) - 1
            groups[fit].append(i)
            room[fit] -= sizes[i]
        ordered = sorted((sorted(g) for g in groups), key=lambda g: g[0])
        for k, group in enumerate([[inputs[i] for i in g] for g in ordered]):
            if len(group) == 1:
                s, j = group[0]
                for field in ("refs", "offsets", "postings", "signatures"):
                    links[f"words{k}.{field}"] = (self.path / s.name / f"words{j}.{field}.npy")
            else:
                merged = _merge([s.words[j] for s, j in group], set(), 0)
                arrays.update(_word_arrays(k, merged))
        arrays["legacy.refs"] = np.array([r for s in segments for r, _ in s.legacy], np.int64)
        arrays["legacy.codes"] = np.frombuffer(
            b"".join(c for s in segments for _, c in s.legacy), np.uint8).reshape(-1, 8)
        return self._write_segment(arrays, segments[0].after, segments[-1].through, tier,
                                   chunk_bits, len(groups), len(arrays["refs"]), links)

