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
import warnings

from PIL import Image, ImageOps

from .fingerprint import DecodeLimits, Fingerprint, fingerprint

__all__ = ["JPEG_QUALITY", "fingerprint_and_thumbnail", "make_thumbnail"]

log = logging.getLogger(__name__)

# Plenty for a 256 px preview (~10 KB); the desk shows it beside the suspect image.
JPEG_QUALITY = 80


def make_thumbnail(data: bytes, size: int) -> bytes:
    """A JPEG whose longer side is at most `size` pixels, upright, without metadata.

    Only call this on bytes `fingerprint` accepted: the decode limits were
    checked there. Raises what Pillow raises for an image it cannot decode.
    """
    with warnings.catch_warnings():
        # `fingerprint` already enforced the configured pixel limit, which may be
        # above Pillow's own warning threshold.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        source = Image.open(io.BytesIO(data))
        # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale, still at least `size`.
        source.draft("RGB", (size, size))
        image: Image.Image = ImageOps.exif_transpose(source)
        image.load()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent product cut-outs: show them on white, as a shop page would.
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif image.mode != "RGB":
        image = image.convert("RGB")
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
        return fp, make_thumbnail(data, size)
    except Exception as exc:  # best effort by design (module docstring)
        log.warning("no thumbnail for an upload with sha256 %s: %s", fp.sha256, exc)
        return fp, None
