"""Small JPEG thumbnails of registered photos, for staff on the dispute desk.

A thumbnail is a convenience, not evidence: the log commits to the file's
SHA-256 and perceptual hashes, never to this picture. So a photo whose
thumbnail cannot be made is still registered, just without one.

Pure and picklable like `fingerprint`: `fingerprint_and_thumbnail` is what a
fingerprint worker process runs for an upload, so the upload's bytes cross to
the worker once and the thumbnail costs one extra, reduced-size decode there.
"""

from __future__ import annotations

import io
import logging

from PIL import Image

from .decode import open_image
from .fingerprint import DecodeLimits, Fingerprint, fingerprint

__all__ = ["JPEG_QUALITY", "fingerprint_and_thumbnail", "make_thumbnail"]

log = logging.getLogger(__name__)

_DEFAULT_LIMITS = DecodeLimits()

# Plenty for a 256 px preview (~10 KB); the desk shows it beside the suspect image.
JPEG_QUALITY = 80


def make_thumbnail(data: bytes, size: int, limits: DecodeLimits = _DEFAULT_LIMITS) -> bytes:
    """A JPEG whose longer side is at most `size` pixels, upright, without metadata.

    Decoded by `decode.open_image`, as the fingerprint is: the same format
    allowlist and limits, EXIF orientation, transparency on white (as a shop
    page shows a cut-out), CMYK and 16-bit converted. Raises `ImageRejected`
    for what it refuses.
    """
    # JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 scale, still at least `size`.
    image = open_image(data, limits, draft=(size, size), mode="RGB").image
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def fingerprint_and_thumbnail(
    data: bytes, limits: DecodeLimits, size: int
) -> tuple[Fingerprint, bytes | None]:
    """`fingerprint(data, limits)` and, if the image allows it, its thumbnail.

    Rejections come from `fingerprint` alone (same errors as without
    thumbnails); a failed thumbnail is logged and returned as None.
    """
    fp = fingerprint(data, limits)
    try:
        return fp, make_thumbnail(data, size, limits)
    except Exception as exc:  # best effort by design (module docstring)
        log.warning("no thumbnail for an upload with sha256 %s: %s", fp.sha256, exc)
        return fp, None
