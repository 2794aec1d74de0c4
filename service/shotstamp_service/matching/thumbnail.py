"""Small JPEG thumbnails of registered photos, for staff on the dispute desk.

A thumbnail is a convenience, not evidence: the log commits to the file's
SHA-256 and perceptual hashes, never to this picture. So a photo whose
thumbnail cannot be made is still registered, just without one.

Pure and picklable like `fingerprint`: `fingerprint_and_thumbnail` is what a
fingerprint worker process runs for an upload. It decodes the upload ONCE, RGB
at draft size (libjpeg's 1/2, 1/4, 1/8 scaling), makes the thumbnail from that
and fingerprints its grey canonical image: a second decode would cost as much
as the whole fingerprint of a typical product JPEG.
"""

from __future__ import annotations

import hashlib
import io
import logging

from PIL import Image

from shotstamp_service.matching.decode import CANONICAL_SIDE, draft_side, open_image
from shotstamp_service.matching.fingerprint import DecodeLimits, Fingerprint, fingerprint_decoded

__all__ = ["JPEG_QUALITY", "fingerprint_and_thumbnail", "make_thumbnail", "thumbnail_jpeg"]

log = logging.getLogger(__name__)

_DEFAULT_LIMITS = DecodeLimits()

# The desk shows it 260 px high beside the suspect image: at 256 px, quality 50 with
# optimised Huffman tables is ~5.1 KB of a real photo where quality 80 was ~8.7 KB
# (docs/storage.md, "What a registration stores").
JPEG_QUALITY = 50


def thumbnail_jpeg(image: Image.Image, size: int) -> bytes:
    """A JPEG of a decoded image whose longer side is at most `size` pixels, without metadata."""
    small = image
    if max(image.size) > size:  # a draft decode is often already small enough: no copy then
        small = image.copy()
        # BOX (area average) from a decode already reduced to at most about twice `size`.
        small.thumbnail((size, size), Image.Resampling.BOX)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def make_thumbnail(data: bytes, size: int, limits: DecodeLimits = _DEFAULT_LIMITS) -> bytes:
    """A JPEG whose longer side is at most `size` pixels, upright, without metadata.

    Decoded by `decode.open_image`, as the fingerprint is: the same format
    allowlist and limits, EXIF orientation, transparency on white (as a shop
    page shows a cut-out), CMYK and 16-bit converted. Raises `ImageRejected`
    for what it refuses.
    """
    # JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 scale, still at least `size`.
    return thumbnail_jpeg(open_image(data, limits, draft=(size, size), mode="RGB").image, size)


def fingerprint_and_thumbnail(
    data: bytes, limits: DecodeLimits, size: int
) -> tuple[Fingerprint, bytes | None]:
    """`fingerprint(data, limits)` and, if the image allows it, its thumbnail, from one decode.

    Rejections come from the decode alone (same errors as without
    thumbnails); a failed thumbnail is logged and returned as None.
    """
    digest = hashlib.sha256(data).hexdigest()
    # About CANONICAL_SIDE for the hashes and `size` for the thumbnail, on each side: up to
    # 3 % short (decode.draft_side), so a 1000 px JPEG decodes at 1/4 scale, not 1/2, and a
    # 256 px thumbnail comes out 250 px.
    side = draft_side(max(CANONICAL_SIDE, size))
    decoded = open_image(data, limits, draft=(side, side), mode="RGB")
    fp = fingerprint_decoded(digest, decoded)
    try:
        return fp, thumbnail_jpeg(decoded.image, size)
    except Exception as exc:  # best effort by design (module docstring)
        log.warning("no thumbnail for an upload with sha256 %s: %s", fp.sha256, exc)
        return fp, None
