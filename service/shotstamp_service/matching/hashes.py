"""Global perceptual hashes of the canonical image, and the content box they are also taken of.

    >>> a = PerceptualHash.from_hex("f0" * 32)
    >>> b = PerceptualHash.from_hex("f1" * 32)
    >>> a - b
    32
    >>> str(a) == "f0" * 32
    True

- PDQ (Meta's 256-bit DCT hash, via the `pdqhash` package; Dalins et al. and the
  ThreatExchange "PDQ" hashing write-up) with its quality score, which drops on flat, blank
  and low-contrast images where the hash bits are mostly noise: the low-information gate.
- pHash (64-bit DCT hash, `imagehash.phash`): the first release's hash, kept in the signed leaf
  and as the baseline the benchmark compares against.

Both are computed from the canonical image (see `decode`) squeezed to a `HASH_SIDE` square: PDQ
reduces to 64×64 and pHash to 32×32 internally, so a larger input only costs time.

`content_box` finds the box inside a uniform border (a product on white, a padded or framed
copy). The PDQ of the box is stored beside the PDQ of the whole image: padding moves the whole
image's hash by ~116 of 256 bits (median, corpus) but the box's by ~12.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "HASH_SIDE",
    "PerceptualHash",
    "content_box",
    "pdq",
    "phash",
]

HASH_SIDE = 128
# PDQ's own working size (its 64×64 block): `pdq` hands it this half of the square.
_PDQ_SIDE = 64
assert HASH_SIDE == 2 * _PDQ_SIDE  # `pdq` reads odd rows and columns

# Content box: a pixel is content when it differs from the border's median by more than this
# (JPEG q30 ringing on white stays within ~10 grey levels).
TRIM_TOLERANCE = 24
# A row or column belongs to the content when more than this fraction of it is content, so
# isolated specks and JPEG noise in the border do not stop the trim.
TRIM_MIN_FRACTION = 0.01
# The border is "uniform" only if most of it sits within the tolerance of its median.
TRIM_UNIFORM_BORDER = 0.9
# Boxes covering nearly the whole image are not worth a second hash; boxes that are tiny are a
# near-blank image, where a hash of the box would only hash noise.
TRIM_MIN_GAIN = 0.04
TRIM_MIN_SIDE = 16


@dataclass(frozen=True)
class PerceptualHash:
    """A binary perceptual hash; `a - b` is the Hamming distance, `str` is lowercase hex."""

    bits: bytes

    def __sub__(self, other: object) -> int:
        if not isinstance(other, PerceptualHash):
            raise TypeError(f"cannot subtract {type(other).__name__} from PerceptualHash")
        if len(other.bits) != len(self.bits):
            raise TypeError(
                f"hash sizes differ: {len(self.bits) * 8} bits and {len(other.bits) * 8} bits"
            )
        x = int.from_bytes(self.bits, "big") ^ int.from_bytes(other.bits, "big")
        return x.bit_count()

    def __str__(self) -> str:
        return self.bits.hex()

    def __len__(self) -> int:
        return len(self.bits) * 8

    @classmethod
    def from_hex(cls, text: str) -> PerceptualHash:
        return cls(bytes.fromhex(text))


def _square(grey: np.ndarray) -> np.ndarray:
    if grey.shape == (HASH_SIDE, HASH_SIDE):
        return grey
    interpolation = cv2.INTER_AREA if min(grey.shape) >= HASH_SIDE else cv2.INTER_LINEAR
    return cv2.resize(grey, (HASH_SIDE, HASH_SIDE), interpolation=interpolation)


def pdq(grey: np.ndarray, *, mirror: bool = False) -> tuple[bytes, int]:
    """PDQ hash (32 bytes) and quality (0–100) of `grey`'s `HASH_SIDE` square, mirrored
    left–right if asked.

    Bit for bit PDQ of the square, computed from the `_PDQ_SIDE` square of its odd rows and
    columns (the mirror's are the square's even columns, reversed). PDQ reduces its input to
    64×64 by two passes of box filters of width (128 + 127) // 128 = 1 (Jarosz), then samples
    pixel ((i + 0.5) · 128 / 64) = 2i + 1 of each row and column; a 64×64 input gets width-1
    filters and sample i. A grey plane's luma is an integer (0.299 + 0.587 + 0.114 of a
    byte, exact in float32: `tests/unit/matching/test_matching_pdq.py`), so the width-1
    filters' running sums are exact and change no pixel: both inputs reach the same 64×64
    block. The 128 px input cost ~0.2 ms a hash, the 64 px one ~0.08.
    """
    import pdqhash  # heavy: imported where used, as imagehash does

    square = _square(grey)
    half = np.ascontiguousarray(square[1::2, 0::2][:, ::-1] if mirror else square[1::2, 1::2])
    # The binding wants RGB; a broadcast view of the grey plane costs no copy.
    bits, quality = pdqhash.compute(np.broadcast_to(half[:, :, None], (*half.shape, 3)))
    return np.packbits(bits.astype(np.uint8)).tobytes(), int(quality)


def phash(grey: np.ndarray) -> bytes:
    """64-bit pHash: imagehash's algorithm (LANCZOS to 32×32, DCT, 8×8 low frequencies against
    their median), bit for bit, of the `HASH_SIDE` square.

    The 32×32 DCT is only needed at its 8×8 lowest frequencies: two small matrix products
    instead of scipy's full transform, and no PIL round trip of the input (~0.1 ms against
    ~1 ms for `imagehash.phash` of the ~250 px decode it used to take).
    """
    from PIL import Image

    small = Image.fromarray(_square(grey)).resize((_PHASH_SIDE, _PHASH_SIDE),
                                                  Image.Resampling.LANCZOS)
    low = _PHASH_DCT @ np.asarray(small, np.float64) @ _PHASH_DCT.T
    return np.packbits(low > np.median(low)).tobytes()


# Rows 0–7 of scipy.fftpack's unnormalised DCT-II for 32 samples: 2·cos(πk(2n+1)/64).
_PHASH_SIDE = 32
_PHASH_DCT = 2 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(_PHASH_SIDE)[None, :] + 1)
                        / (2 * _PHASH_SIDE))


def content_box(grey: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the content inside a uniform border, or None if there is none."""
    height, width = grey.shape
    if height < 3 or width < 3:
        return None
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]]).astype(np.int16)
    background = int(np.median(border))
    if np.mean(np.abs(border - background) <= TRIM_TOLERANCE) < TRIM_UNIFORM_BORDER:
        return None
    content = np.abs(grey.astype(np.int16) - background) > TRIM_TOLERANCE
    rows = np.flatnonzero(content.sum(axis=1) > TRIM_MIN_FRACTION * width)
    cols = np.flatnonzero(content.sum(axis=0) > TRIM_MIN_FRACTION * height)
    if len(rows) == 0 or len(cols) == 0:
        return None
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    if x1 - x0 < TRIM_MIN_SIDE or y1 - y0 < TRIM_MIN_SIDE:
        return None
    if (x1 - x0) >= (1 - TRIM_MIN_GAIN) * width and (y1 - y0) >= (1 - TRIM_MIN_GAIN) * height:
        return None
    return x0, y0, x1, y1
