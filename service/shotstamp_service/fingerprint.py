"""Fingerprints of an uploaded photo: a digest of its bytes, perceptual hashes of its pixels.

Pure and picklable: the service runs `fingerprint` in a process pool.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import imagehash
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ALLOWED_FORMATS",
    "DecodeLimits",
    "Fingerprint",
    "ImageRejected",
    "fingerprint",
]

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "TIFF", "MPO"})


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = 40_000_000  # declared width × height: the decompression-bomb guard
    max_frames: int = 1000  # animated images: only the first frame is hashed


class ImageRejected(Exception):
    """The upload cannot be fingerprinted; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[int, str, str]]:  # survive the process pool
        return (ImageRejected, (self.status, self.code, self.message))


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


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            415, "unsupported_format", "the upload is not an image in a supported format"
        ) from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageRejected(413, "image_too_large", str(exc)) from exc
    if image.format not in ALLOWED_FORMATS:
        raise ImageRejected(415, "unsupported_format", f"{image.format} images are not accepted")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageRejected(
            413,
            "image_too_large",
            f"image is {width}×{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels}",
        )
    if getattr(image, "n_frames", 1) > limits.max_frames:
        raise ImageRejected(
            413, "too_many_frames", f"image has more than {limits.max_frames} frames"
        )
    return image


def fingerprint(data: bytes, limits: DecodeLimits = DecodeLimits()) -> Fingerprint:
    """Digest the bytes, decode the first frame upright, and hash its pixels."""
    digest = hashlib.sha256(data).hexdigest()
    image = _open(data, limits)
    fmt = image.format or ""
    try:
        # A reduced-size JPEG decode: pHash looks at a 32×32 thumbnail anyway.
        image.draft("L", (256, 256))
        image = ImageOps.exif_transpose(image)
        width, height = image.size
        grey = image.convert("L")
        phash = imagehash.phash(grey)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageRejected(422, "corrupt_image", f"the image could not be decoded: {exc}") from exc
    return Fingerprint(
        sha256=digest,
        hashes={"phash": bytes.fromhex(str(phash))},
        width=width,
        height=height,
        format=fmt,
    )
