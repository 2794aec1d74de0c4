"""Local features for the second stage: ORB keypoints, their binary words, a thumbnail.

Global hashes (PDQ, pHash) see the whole frame, so a crop, a rotation of a few degrees or a
large watermark moves them as far as a different photo (PDQ: a centre crop to 90 % moves it by
~86 of 256 bits, median over the corpus). Local features survive those edits: ORB keypoints
(OpenCV, Rublee et al. 2011) of the canonical image, each with a 256-bit rBRIEF descriptor.

- `words(features, keep)`: each keypoint's descriptor sampled at `WORD_BITS` fixed bit
  positions gives a visual word (bit-sampling LSH, Indyk–Motwani), and at `SIGNATURE_BITS`
  other positions a binary signature (Hamming embedding, Jégou, Douze & Schmid 2008); the
  index keeps the words of some of each registration's keypoints (`matching.index_keypoints`)
  with their signatures and votes with the query's words, a vote counting only where the
  signatures are close (`index.WordIndex`).
- `verification.verify_pair(query, stored)` matches the keypoints of a candidate pair and
  compares the thumbnails once aligned.

The stored form (`LocalFeatures.stored(...).to_bytes()`, ~11 KB on average) lives in the
database and is fetched by registration only for candidates, never held for all of them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import cv2
import numpy as np

__all__ = [
    "SIGNATURE_BITS",
    "WORD_BITS",
    "KeypointLayout",
    "KeypointLayouts",
    "LocalFeatures",
    "VisualWords",
    "extract",
    "keypoint_layout",
    "keypoint_layouts",
    "word_ids",
    "words",
]

# ORB on the canonical image (long side 256): up to 500 keypoints over 9 levels of a 1.12
# pyramid. A copy cropped to 90 % is the original enlarged 1.11×, halfway between the levels
# of the 1.25 pyramid used before (300 keypoints, 5 levels), where descriptors differ most;
# 1.12 ≈ √1.25 puts a level there, and its even levels are the old ones (within 0.4 %), so
# features stored before still meet new ones at their scales. More levels share the
# keypoints more thinly, so 300 → 500 keeps the finest level as full as before. Corpus
# (bench/matching.py, same rule): crop_90 92.0 → 97.0 % (10 M estimate 23 → 74 %),
# combination 75.0 → 87.0 %, watermark_text 95.6 → 96.2 %, all edits 96.8 → 98.0 %, no false
# match; 300 over 9 levels: 97.5 % but watermarks 94.4 %; 300 over 7 levels of 1.18: 97.5 %.
# Cost: ORB ~0.8 → ~1.3 ms per image, one verification ~1.3 → ~2.5 ms (more descriptors).
ORB_FEATURES = 500
ORB_LEVELS = 9
ORB_SCALE = 1.12
# Keypoints may come to 15 px of the border (default 31): at 256 px the default would leave
# a quarter of the image without keypoints, and crops cut exactly there.
ORB_EDGE = 15
# Narrower canonical images than this get no keypoints (see `extract`).
MIN_ORB_SIDE = 2 * ORB_EDGE + 1

# Stored thumbnail for the photometric check: long side in pixels and JPEG quality.
THUMB_SIDE = 128
THUMB_QUALITY = 85
# A registration stores its STORED_KEYPOINTS strongest keypoints (and the ones the index
# keeps, `LocalFeatures.stored`); a query keeps all ORB_FEATURES. Descriptors are 32 bytes of
# near-random bits each: what a stored registration weighs is mostly how many it keeps
# (docs/storage.md, "What a registration stores"). Corpus subset, every edit family: 224 and
# 256 lose no copy against storing all 500 (bench/RESULTS.md, "Fingerprint workers").
STORED_KEYPOINTS = 224

# Visual words: descriptor bits sampled at these fixed positions (drawn once with
# numpy.random.default_rng(0x5107); written out so that no library version can change them).
WORD_POSITIONS = (19, 29, 73, 74, 75, 82, 83, 89, 100, 116, 120, 121, 127, 149, 161, 166, 173,
                  235, 247, 252)
WORD_BITS = len(WORD_POSITIONS)
# Hamming-embedding signatures: 32 more descriptor bits, disjoint from the word's (drawn once,
# the first 32 of numpy.random.default_rng(0x5108).permutation of the other 236 positions;
# written out for the same reason). Two keypoints with one word agree on its 20 bits by
# construction; the signature tells a correspondence from a chance collision by the bits it
# did not sample. Corpus (400 crop_90 queries against their original and 7 unrelated
# originals, keypoint pairs sharing a word): 82 % of the pairs with the original lie within 6
# of 32 bits, 27 % of the pairs with unrelated photos (median 10: ORB bits are correlated, so
# a shared word already means a similar patch). 64 bits at 12 would keep 83 % / 20 % for 1.5×
# the memory of the index; all 236 other bits at 42, 80 % / 15 %.
SIGNATURE_POSITIONS = (11, 21, 27, 38, 42, 53, 69, 90, 91, 94, 99, 101, 108, 111, 126, 128, 133,
                       136, 140, 142, 171, 184, 188, 192, 197, 200, 208, 219, 220, 237, 241, 255)
SIGNATURE_BITS = len(SIGNATURE_POSITIONS)
assert not set(SIGNATURE_POSITIONS) & set(WORD_POSITIONS)
# Orientation bins for weak geometric consistency: a copy's matched keypoints all turn by the
# same angle, chance matches by any angle.
ANGLE_BINS = 16


# One thread: the service runs one fingerprint per core in a process pool, and OpenCV's own
# threads would only contend with it on a small machine.
cv2.setNumThreads(1)

# SSF2 added the black composite's PDQ quality, SSF3 the upload's own size; blobs stored
# before either still parse.
_HEADERS = {b"SSF1": struct.Struct("<4sHHHHHBB"), b"SSF2": struct.Struct("<4sHHHHHBBB"),
            b"SSF3": struct.Struct("<4sHHHHHBBBHH")}
_MAGIC = b"SSF3"


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """ORB keypoints (strongest first) of a canonical image, and its thumbnail."""

    shape: tuple[int, int]  # canonical (height, width)
    xy: np.ndarray  # (n, 2) float32, canonical pixels
    angle: np.ndarray  # (n,) uint8, 256 steps per turn
    octave: np.ndarray  # (n,) uint8, pyramid level
    descriptors: np.ndarray  # (n, 32) uint8
    thumbnail_jpeg: bytes  # long side THUMB_SIDE, JPEG
    thumbnail_shape: tuple[int, int]  # its (height, width)
    quality: int = 0  # PDQ quality of the whole image, carried for the index's gate
    trim_quality: int = 255  # PDQ quality of the content box; 255 = no content box
    black_quality: int = 255  # PDQ quality of the transparent image on black; 255 = opaque
    # (height, width) of the upload the canonical image was made from, capped at 65535; None
    # in blobs stored before it was kept. A small upload's canonical image is an enlargement.
    source: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.descriptors)

    @cached_property
    def thumbnail(self) -> np.ndarray:
        """The decoded thumbnail; decoded only when a pair is verified, never at indexing."""
        thumb = cv2.imdecode(np.frombuffer(self.thumbnail_jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
        if thumb is None or thumb.shape != self.thumbnail_shape:
            raise ValueError("feature blob thumbnail is damaged")
        return thumb

    def subset(self, keep: np.ndarray) -> LocalFeatures:
        """The same image with only the keypoints `keep` (indices, in the order given)."""
        return LocalFeatures(self.shape, self.xy[keep], self.angle[keep], self.octave[keep],
                             np.ascontiguousarray(self.descriptors[keep]), self.thumbnail_jpeg,
                             self.thumbnail_shape, self.quality, self.trim_quality,
                             self.black_quality, self.source)

    def stored(self, indexed: np.ndarray, limit: int = STORED_KEYPOINTS) -> LocalFeatures:
        """What a registration stores: its `limit` strongest keypoints and those `indexed`.

        Strength order is kept, so the stored form selects the same `indexed` keypoints again.
        """
        if len(self) <= limit:
            return self
        keep = np.zeros(len(self), bool)
        keep[:limit] = True
        keep[indexed] = True
        return self.subset(np.flatnonzero(keep))

    def to_bytes(self) -> bytes:
        n = len(self)
        th, tw = self.thumbnail_shape
        sh, sw = (0, 0) if self.source is None else (min(v, 65535) for v in self.source)
        header = _HEADERS[_MAGIC].pack(_MAGIC, self.shape[0], self.shape[1], n, th, tw,
                                       self.quality, self.trim_quality, self.black_quality,
                                       sh, sw)
        # Sub-pixel positions in 1/8 px: 2 bytes each for a 256 px canonical image.
        xy = np.clip(np.round(self.xy * 8), 0, 65535).astype("<u2")
        return b"".join([header, xy.tobytes(), self.angle.tobytes(), self.octave.tobytes(),
                         self.descriptors.tobytes(), self.thumbnail_jpeg])

    @classmethod
    def from_bytes(cls, blob: bytes | memoryview) -> LocalFeatures:
        """Parse a stored blob: views into it, no copies and no image decoding."""
        header = _HEADERS.get(bytes(blob[:4]))
        if header is None:
            raise ValueError(f"not a shotstamp feature blob (magic {bytes(blob[:4])!r})")
        if len(blob) < header.size:
            raise ValueError(f"feature blob too short ({len(blob)} bytes)")
        _, height, width, n, th, tw, quality, trim_quality, *rest = header.unpack_from(blob)
        black_quality = rest[0] if rest else 255
        source = (rest[1], rest[2]) if len(rest) == 3 and rest[1] and rest[2] else None
        if len(blob) < header.size + 38 * n:
            raise ValueError(f"feature blob truncated: {len(blob)} bytes for {n} keypoints")
        at = header.size
        xy = np.frombuffer(blob, "<u2", 2 * n, at).reshape(n, 2).astype(np.float32) / 8
        at += 4 * n
        angle = np.frombuffer(blob, np.uint8, n, at)
        at += n
        octave = np.frombuffer(blob, np.uint8, n, at)
        at += n
        descriptors = np.frombuffer(blob, np.uint8, 32 * n, at).reshape(n, 32)
        at += 32 * n
        # bytes also from a memoryview (the pool's out-of-band blobs): a thumbnail is kept
        return cls((height, width), xy, angle, octave, descriptors, bytes(blob[at:]), (th, tw),
                   quality, trim_quality, black_quality, source)


def _orb() -> cv2.ORB:
    return cv2.ORB.create(nfeatures=ORB_FEATURES, scaleFactor=ORB_SCALE, nlevels=ORB_LEVELS,
                          edgeThreshold=ORB_EDGE, patchSize=31)


def thumbnail(grey: np.ndarray) -> np.ndarray:
    height, width = grey.shape
    scale = THUMB_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(grey, size, interpolation=interpolation)


def extract(grey: np.ndarray, quality: int = 0, trim_quality: int = 255,
            black_quality: int = 255, source: tuple[int, int] | None = None) -> LocalFeatures:
    """ORB keypoints of the canonical image, strongest first, and its thumbnail.

    `source`: (height, width) of the upload `grey` was made from, if known.
    """
    keypoints: Sequence[cv2.KeyPoint] = ()
    descriptors: np.ndarray | None = None
    # A sliver (aspect ratio past ~8:1) is narrower than ORB's patch: no keypoints there, and
    # OpenCV's pyramid would fail on it.
    if min(grey.shape) >= MIN_ORB_SIDE:
        keypoints, descriptors = _orb().detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        n = 0
        xy = np.zeros((0, 2), np.float32)
        angle = octave = np.zeros(0, np.uint8)
        descriptors = np.zeros((0, 32), np.uint8)
    else:
        # One pass over the keypoint objects; numpy's round is half-to-even like Python's.
        n = len(keypoints)
        fields = np.array([(k.response, k.angle, k.octave, *k.pt) for k in keypoints],
                          np.float64).reshape(n, 5)
        order = np.argsort(-fields[:, 0], kind="stable")
        fields = fields[order]
        descriptors = descriptors[order]
        xy = fields[:, 3:5].astype(np.float32)
        angle = (np.round(fields[:, 1] * 256 / 360) % 256).astype(np.uint8)
        octave = fields[:, 2].astype(np.uint8)
    thumb = thumbnail(grey)
    ok, jpeg = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any non-empty uint8 image
        raise ValueError("thumbnail could not be encoded")
    return LocalFeatures(grey.shape, xy, angle, octave, np.ascontiguousarray(descriptors),
                         jpeg.tobytes(), thumb.shape, quality, trim_quality, black_quality, source)


class VisualWords(NamedTuple):
    """One entry per keypoint, strongest first."""

    ids: np.ndarray  # uint32 < 2**WORD_BITS
    angles: np.ndarray  # uint8 orientation bins < ANGLE_BINS
    signatures: np.ndarray  # uint32: the SIGNATURE_POSITIONS bits


@dataclass(frozen=True)
class _BitSampler:
    """Descriptor bits at fixed positions as an integer, the first position the top bit."""

    byte: np.ndarray
    shift: np.ndarray
    weight: np.ndarray

    @classmethod
    def at(cls, positions: tuple[int, ...]) -> _BitSampler:
        return cls(np.array([p // 8 for p in positions]),
                   # numpy.unpackbits order; uint8 keeps each intermediate a byte (bench/ranking.py)
                   np.array([7 - p % 8 for p in positions], np.uint8),
                   (1 << np.arange(len(positions) - 1, -1, -1, dtype=np.uint64)).astype(np.uint32))

    def __call__(self, descriptors: np.ndarray) -> np.ndarray:
        bits = (descriptors[:, self.byte] >> self.shift) & 1
        out: np.ndarray = (bits.astype(np.uint32) * self.weight).sum(axis=1, dtype=np.uint32)
        return out


_WORD = _BitSampler.at(WORD_POSITIONS)
_SIGNATURE = _BitSampler.at(SIGNATURE_POSITIONS)


def word_ids(descriptors: np.ndarray) -> np.ndarray:
    """The visual words (uint32 < 2**WORD_BITS) of these (n, 32) descriptors."""
    return _WORD(descriptors)


def words(features: LocalFeatures, keep: np.ndarray | None = None) -> VisualWords:
    """The words, angle bins and signatures of the keypoints `keep` (indices; all if None)."""
    descriptors = features.descriptors if keep is None else features.descriptors[keep]
    angles = features.angle if keep is None else features.angle[keep]
    return VisualWords(_WORD(descriptors), (angles // (256 // ANGLE_BINS)).astype(np.uint8),
                       _SIGNATURE(descriptors))


class KeypointLayout(NamedTuple):
    """Where a stored blob's keypoints lie: `keypoints` of them (n) from byte `offset`, as
    [xy: 4n][angle: n][octave: n][descriptors: 32n]."""

    shape: tuple[int, int]  # canonical (height, width)
    keypoints: int
    offset: int


def keypoint_layout(blob: bytes | memoryview) -> KeypointLayout:
    """A stored blob's header alone, for readers of a few keypoint fields of many blobs
    (`ranking.StoredKeypoints`); raises ValueError where `LocalFeatures.from_bytes` would."""
    header = _HEADERS.get(bytes(blob[:4]))
    if header is None:
        raise ValueError(f"not a shotstamp feature blob (magic {bytes(blob[:4])!r})")
    if len(blob) < header.size:
        raise ValueError(f"feature blob too short ({len(blob)} bytes)")
    _, height, width, n, *_ = header.unpack_from(blob)
    if len(blob) < header.size + 38 * n:
        raise ValueError(f"feature blob truncated: {len(blob)} bytes for {n} keypoints")
    return KeypointLayout((height, width), n, header.size)


class KeypointLayouts(NamedTuple):
    """Many blobs joined into one buffer and where each one's keypoints lie in it
    (`keypoint_layouts`)."""

    buffer: np.ndarray  # uint8, the blobs one after another
    offset: np.ndarray  # int64, each blob's keypoint section in `buffer`
    keypoints: np.ndarray  # int64, n of each
    height: np.ndarray  # int64, canonical
    width: np.ndarray  # int64


# Each header's size by the last byte of its magic (b"SSF1"...: 0 for any other byte)
_HEADER_SIZES = np.zeros(256, np.int64)
for _magic, _header in _HEADERS.items():
    _HEADER_SIZES[_magic[3]] = _header.size


def keypoint_layouts(blobs: Sequence[bytes | memoryview]) -> KeypointLayouts:
    """`keypoint_layout` of many blobs at once: one join and a few array reads of the headers
    instead of a Python parse of each (a shortlist reads 64); raises the ValueError
    `keypoint_layout` raises for the first damaged blob."""
    lengths = np.fromiter(map(len, blobs), np.int64, len(blobs))
    # a bytearray: the kernels that read it take writable arrays (`ranking._ready`)
    buffer = np.frombuffer(bytearray().join(blobs), np.uint8)
    starts = np.cumsum(lengths) - lengths
    # every header field read below lies in a blob's first 10 bytes
    short = lengths < 10
    head = buffer[np.where(short, 0, starts)[:, None] + np.arange(10)] if len(buffer) >= 10 \
        else np.zeros((len(blobs), 10), np.uint8)
    size = np.where((head[:, 0] == ord("S")) & (head[:, 1] == ord("S")) & (head[:, 2] == ord("F")),
                    _HEADER_SIZES[head[:, 3]], 0)
    # little-endian uint16s after the magic: height, width, n
    height, width, n = (head[:, 4 + 2 * k].astype(np.int64) | head[:, 5 + 2 * k].astype(np.int64)
                        << 8 for k in range(3))
    if (short | (size == 0) | (lengths < size + 38 * n)).any():
        bad = short | (size == 0) | (lengths < size + 38 * n)
        keypoint_layout(blobs[int(np.argmax(bad))])  # raises its error
        raise AssertionError("keypoint_layouts disagrees with keypoint_layout")
    return KeypointLayouts(buffer, starts + size, n, height, width)
