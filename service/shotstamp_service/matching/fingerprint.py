"""The fingerprint of an uploaded photo: what the matching engine knows about it.

    >>> fp = fingerprint(open("photo.jpg", "rb").read())
    >>> fp.perceptual()                   # goes into the signed leaf and the API
    {'pdq': '…64 hex…', 'pdq_trim': '…', 'phash': '…16 hex…'}
    >>> fp - other_fp                      # PDQ Hamming distance, the rule's first test
    12

Pure and picklable: the service runs `fingerprint` (or `thumbnail.fingerprint_and_thumbnail`:
the same from the same decode, plus the staff thumbnail) in a process pool. The upload is
decoded once by `decode.open_image` (allowlist, bomb guards, first frame, upright, transparency
on white), reduced in the decoder to about 256 px a side (`decode.draft_side`: up to 3 % short,
then enlarged), and everything is computed from its `decode.canonical_grey` (luminance, long
side 256):

- `sha256` of the uploaded bytes (not of the pixels), so anyone holding the file can check it;
- `hashes`: `pdq` of the whole image, `pdq_trim` of its content box when it has a uniform
  border (product on white, padded copies), `phash` (64-bit, the first release's hash, by
  imagehash's algorithm of the same square PDQ reads, `hashes.phash`, so that registrations
  stored before the engine, which carry only `phash`, are still matched by the global-hash
  rule: `rule.PHASH_COPY_DISTANCE`. The first release hashed the ~250 px decode instead; the
  two differ by 0 bits at the median and at most 4 over 400 corpus photos and product shots,
  and the square costs ~0.1 ms instead of ~1 ms);
- `pdq_black` (transparent uploads only): PDQ of the same pixels composited onto black, so a
  copy flattened onto black (or an opaque black-background original of a later transparent
  upload) is found by its hash like any re-encoding; stored and queried like `pdq`;
- `variants`: query-only hashes never stored — `pdq_mirror`, the PDQ of the left–right mirror;
- `quality`, `trim_quality`, `black_quality`: PDQ quality of the whole image, of the box and of
  the black composite (0–100). Below
  `matching.PDQ_MIN_QUALITY` the hash cannot tell photos apart and does not decide alone;
- `features`: ORB keypoints, descriptors and a 128 px thumbnail (`local_features`), up to
  ~22 KB, for the second stage. Stored in the database (its lean form, `to_store`, ~11 KB),
  never in the leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image

from shotstamp_service.matching import hashes as _hashes
from shotstamp_service.matching.decode import (
    ALLOWED_FORMATS,
    CANONICAL_SIDE,
    DecodedImage,
    DecodeLimits,
    ImageRejected,
    canonical_grey,
    draft_side,
    open_image,
)
from shotstamp_service.matching.features import STORED_KEYPOINTS, LocalFeatures, extract
from shotstamp_service.matching.hashes import PerceptualHash

__all__ = [
    "ALLOWED_FORMATS",
    "CANONICAL_SIDE",
    "DecodeLimits",
    "Fingerprint",
    "ImageRejected",
    "fingerprint",
    "fingerprint_decoded",
]

# Names of the stored global hashes whose distances the rule compares (PDQ family).
PDQ_NAMES = ("pdq", "pdq_trim", "pdq_black")


@dataclass(frozen=True)
class Fingerprint:
    """Hashes and features of one image. `a - b` is the PDQ distance the rule uses."""

    sha256: str
    hashes: Mapping[str, bytes]
    width: int
    height: int
    format: str
    quality: int | None = None
    features: bytes | None = field(default=None, repr=False)
    trim_quality: int | None = None
    variants: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    black_quality: int | None = None
    # The stored form of `features` (`to_store`), made in the fingerprint worker so that the
    # serving process, the busiest one, does not make it; None: made when asked.
    stored_features: bytes | None = field(default=None, repr=False)

    def perceptual(self) -> dict[str, str]:
        """name → lowercase hex of the stored hashes: the leaf's `perceptual` object."""
        return {name: value.hex() for name, value in sorted(self.hashes.items())}

    def to_store(self) -> tuple[dict[str, str], bytes | None]:
        """Everything the index needs to be rebuilt at start: (perceptual hex, feature blob).

        The blob is the stored form (`LocalFeatures.stored`): the strongest keypoints and
        every one the index keeps, so a start indexes exactly what the live upload indexed.
        """
        if self.stored_features is not None:
            return self.perceptual(), self.stored_features
        return self.perceptual(), None if self.local is None else _stored_blob(self.local,
                                                                              self.features)

    @classmethod
    def from_store(
        cls,
        sha256: str,
        perceptual: Mapping[str, str],
        features: bytes | None,
        width: int,
        height: int,
    ) -> Fingerprint:
        hashes = {name: bytes.fromhex(value) for name, value in perceptual.items()}
        quality = trim_quality = black_quality = None
        local = None
        if features is not None:
            try:
                local = LocalFeatures.from_bytes(features)
            except ValueError:  # not an engine blob: index the hashes, verify nothing
                features = None
            else:
                quality = local.quality
                trim_quality = None if local.trim_quality == 255 else local.trim_quality
                black_quality = None if local.black_quality == 255 else local.black_quality
        fp = cls(sha256, hashes, width, height, "", quality, features, trim_quality,
                 black_quality=black_quality)
        if local is not None:
            fp.__dict__["local"] = local  # `local`'s cached value: indexing it parses no blob again
        return fp

    def code(self, name: str) -> PerceptualHash:
        return PerceptualHash(self.hashes[name] if name in self.hashes else self.variants[name])

    def pdq_codes(self, *, query: bool = False) -> list[tuple[str, bytes, int | None]]:
        """(name, 32-byte code, quality) for each PDQ code; with `query`, the mirror too."""
        out: list[tuple[str, bytes, int | None]] = []
        if "pdq" in self.hashes:
            out.append(("pdq", self.hashes["pdq"], self.quality))
        if "pdq_trim" in self.hashes:
            out.append(("pdq_trim", self.hashes["pdq_trim"], self.trim_quality))
        if "pdq_black" in self.hashes:
            out.append(("pdq_black", self.hashes["pdq_black"], self.black_quality))
        if query and "pdq_mirror" in self.variants:
            out.append(("pdq_mirror", self.variants["pdq_mirror"], self.quality))
        return out

    @cached_property
    def local(self) -> LocalFeatures | None:
        """The parsed local features (parsed once; `features` is what travels and is stored)."""
        return None if self.features is None else LocalFeatures.from_bytes(self.features)

    def __sub__(self, other: object) -> int:
        """Smallest PDQ distance between any code of `self` and any code of `other`."""
        if not isinstance(other, Fingerprint):
            raise TypeError(f"cannot subtract {type(other).__name__} from Fingerprint")
        mine, theirs = self.pdq_codes(query=True), other.pdq_codes()
        if not mine or not theirs:
            raise TypeError("both fingerprints need a PDQ hash to be compared")
        return min(PerceptualHash(a) - PerceptualHash(b) for _, a, _ in mine for _, b, _ in theirs)


_DEFAULT_LIMITS = DecodeLimits()


def fingerprint(data: bytes, limits: DecodeLimits = _DEFAULT_LIMITS) -> Fingerprint:
    """Fingerprint the upload `data`; raise `ImageRejected` if it is not a usable image.

    Decoded RGB at draft size, as `thumbnail.fingerprint_and_thumbnail` decodes
    for the thumbnail too: an image fingerprints the same either way.
    """
    digest = hashlib.sha256(data).hexdigest()
    side = draft_side(CANONICAL_SIDE)
    decoded = open_image(data, limits, draft=(side, side), mode="RGB")
    return fingerprint_decoded(digest, decoded)


def fingerprint_decoded(digest: str, decoded: DecodedImage) -> Fingerprint:
    """The fingerprint of an upload whose SHA-256 is `digest`, from its reduced decode."""
    reduced_grey = decoded.image.convert("L")
    grey = canonical_grey(reduced_grey)
    pdq, quality = _hashes.pdq(grey)
    mirror, _ = _hashes.pdq(grey, mirror=True)
    hashes = {"pdq": pdq, "phash": _hashes.phash(grey)}
    trim_quality = None
    box = _hashes.content_box(grey)
    if box is not None:
        x0, y0, x1, y1 = box
        hashes["pdq_trim"], trim_quality = _hashes.pdq(grey[y0:y1, x0:x1])
    black_quality = None
    if decoded.alpha is not None:
        hashes["pdq_black"], black_quality = _hashes.pdq(_on_black(reduced_grey, decoded.alpha))
    features = extract(grey, quality, 255 if trim_quality is None else trim_quality,
                       255 if black_quality is None else black_quality,
                       (decoded.height, decoded.width)).to_bytes()
    return Fingerprint(
        sha256=digest,
        hashes=hashes,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        quality=quality,
        features=features,
        trim_quality=trim_quality,
        variants={"pdq_mirror": mirror},
        black_quality=black_quality,
        # From the parsed blob, as the index will see it (positions rounded to 1/8 px).
        stored_features=_stored_blob(LocalFeatures.from_bytes(features), features),
    )


def _stored_blob(local: LocalFeatures, blob: bytes | None) -> bytes | None:
    """The stored form of the parsed feature blob `blob`: see `LocalFeatures.stored`."""
    if len(local) <= STORED_KEYPOINTS:
        return blob
    from shotstamp_service.matching.engine import index_keypoints  # engine imports us

    return local.stored(index_keypoints(local)).to_bytes()


def _on_black(on_white: Image.Image, alpha: Image.Image) -> np.ndarray:
    """The canonical grey of the image composited onto black, from its composite onto white.

    Luminance is linear in the channels, so on black = on white − (255 − alpha) per pixel.
    """
    white = np.asarray(on_white, np.int16)
    black = np.clip(white - (255 - np.asarray(alpha, np.int16)), 0, 255).astype(np.uint8)
    return canonical_grey(Image.fromarray(black))
