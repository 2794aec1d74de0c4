"""Fingerprints of an uploaded photo: a digest of its bytes, perceptual hashes of its pixels.

Pure and picklable: the service runs `fingerprint` in a process pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import imagehash

# Decoding (format allowlist, bomb guards, normalisation) lives in decode.py;
# its names are re-exported here so existing imports keep working.
from .decode import ALLOWED_FORMATS, DecodeLimits, ImageRejected, open_image

__all__ = [
    "ALLOWED_FORMATS",
    "DecodeLimits",
    "Fingerprint",
    "ImageRejected",
    "fingerprint",
]

_DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class Fingerprint:
    sha256: str
    hashes: Mapping[str, bytes]
    width: int
    height: int
    format: str
    quality: int | None = None
    features: bytes | None = field(default=None, repr=False)

    def perceptual(self) -> dict[str, str]:
        return {name: value.hex() for name, value in sorted(self.hashes.items())}

    def to_store(self) -> tuple[dict[str, str], bytes | None]:
        return self.perceptual(), self.features

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
        return cls(sha256, hashes, width, height, "", None, features)


def fingerprint(data: bytes, limits: DecodeLimits = _DEFAULT_LIMITS) -> Fingerprint:
    """Digest the bytes, decode the first frame upright, and hash its pixels.

    Raises `ImageRejected` (with the HTTP status to answer) for anything
    `decode.open_image` refuses.
    """
    digest = hashlib.sha256(data).hexdigest()
    # A reduced-size decode: pHash looks at a 32×32 thumbnail anyway.
    decoded = open_image(data, limits, draft=(256, 256), mode="L")
    phash = imagehash.phash(decoded.image)
    return Fingerprint(
        sha256=digest,
        hashes={"phash": bytes.fromhex(str(phash))},
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
    )
