"""Decoding untrusted uploads into pixels, within limits: the one door images come in by.

`open_image(data, limits)` is pure (no I/O, no state beyond Pillow's own) and
picklable, so it runs in the fingerprinting pool. Whatever the bytes, it
either returns a `DecodedImage` or raises `ImageRejected` carrying a `Rejection`
(the HTTP layer maps each to a status, `http.errors`):

- `unsupported_format`: not one of `ALLOWED_FORMATS`. Pillow is only
  allowed to try those plugins, so no other decoder ever sees the bytes.
- `image_too_large` / `too_many_frames`: the declared size, a side, a TIFF
  tile, or the frame count is over the limits. All are read from headers,
  before a single pixel is allocated, and frames are counted with a cap rather
  than by walking the whole file.
- `image_too_costly`: a progressive JPEG with more scans than
  `max_scans` (libjpeg walks every block of the image once per scan, so a
  small file of thousands of empty scans costs tens of seconds of CPU).
  Counted by walking the JPEG's markers, before decoding.
- `corrupt_image`: the decoder failed (truncated, corrupt). Pillow's
  `LOAD_TRUNCATED_IMAGES` stays False: a truncated upload is refused, not
  grey-filled and hashed.

What comes out is the first frame, upright (EXIF orientation applied once),
8-bit `RGB` or `L`, transparency composited onto white, CMYK and other colour
spaces converted, 16-bit samples scaled (not clipped) to 8 bits.

`canonical_grey(image)` turns what `open_image` returns into the one image
the matching engine hashes: 8-bit luminance, long side `CANONICAL_SIDE`. The
fingerprint worker decodes an upload once (RGB, at draft size), makes the
thumbnail from that decode and hashes its canonical grey.

Memory: at most about `max_pixels` × 4 bytes for the decoded frame plus a
converted copy; with `draft=` a JPEG is decoded at 1/2, 1/4 or 1/8 scale by
libjpeg itself and other formats are box-reduced right after decoding, so the
colour conversions run on the small image.
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ALLOWED_FORMATS",
    "CANONICAL_SIDE",
    "HEIF_SUPPORTED",
    "DecodeLimits",
    "DecodedImage",
    "ImageRejected",
    "Rejection",
    "canonical_grey",
    "draft_side",
    "open_image",
]

# The pinned hashing resolution: long side of the canonical image every hash and
# local feature is computed from, so a copy's fingerprint does not depend on the
# size the thief saved it at (PDQ moves by several bits between a 1000 px and a
# 500 px input). 256 keeps a 1000×1000 product JPEG decodable at 1/4 scale (see
# DRAFT_SLACK) and gives ORB up to 500 keypoints over nine pyramid levels.
CANONICAL_SIDE = 256
# How far below the side it is asked for a reduced decode may come out, to be enlarged back
# (`draft_side`). libjpeg only scales by 1/2, 1/4, 1/8: asked for at least 256 px, a
# 1000×1000 JPEG (the typical product photo) decodes at 1/2 = 500 px, a third of a worker's
# time per upload, then is shrunk to 256; allowed 3 %, it decodes at 1/4 = 250 px and is
# enlarged by 2.4 %. Measured (bench/fingerprint.py): PDQ moves by ~3 bits on average
# against the 1/2 decode, less than the 1/2 decode itself moves against a full decode; the
# worker's time per upload drops by a fifth. bench/matching.py: 595 misses of 13,280 copies
# instead of 591 (each edit within 0.6 points), still no false match, same 42-bit margin —
# a trade made for throughput (DESIGN.md, "Matching engine").
DRAFT_SLACK = 0.03

try:  # HEIC from phones; optional because its wheels do not exist everywhere.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the platform
    HEIF_SUPPORTED = False

# Pillow plugin ids tried on an upload, nothing else. JPEG includes MPO (the
# multi-picture JPEGs phones write), which Pillow reports as format "MPO".
_PLUGINS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "AVIF")
if HEIF_SUPPORTED:
    _PLUGINS += ("HEIF",)
ALLOWED_FORMATS = frozenset({*_PLUGINS, "MPO"})
_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, TIFF, AVIF" + (", HEIC" if HEIF_SUPPORTED else "")

# EXIF orientation → the transposition that makes the image upright.
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_WHITE = 255

# What decoders raise on hostile input. Pillow's plugins and C codecs do not
# keep to OSError: struct and index errors escape from header parsers, and
# fuzzing (tests/service/test_decode_fuzz.py) found the rest of this list.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    RuntimeError,  # libavif: "Decoding of color planes failed"; also RecursionError
)


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = 40_000_000  # declared width × height: the decompression-bomb guard
    # Either side: Pillow keeps a pointer and a padded allocation per row, so a 1×39,999,999
    # PNG under the pixel cap took a worker to 1.1 GB; 20,000 keeps panoramas.
    max_side: int = 20_000
    max_frames: int = 1000  # animated images: only the first frame is decoded
    # Progressive JPEG scans: encoders write about 10; libjpeg-turbo's tools cap with -maxscans.
    max_scans: int = 100


class Rejection(StrEnum):
    """Why an upload is refused; the value is the error code on the wire."""

    UNSUPPORTED_FORMAT = "unsupported_format"
    IMAGE_TOO_LARGE = "image_too_large"
    TOO_MANY_FRAMES = "too_many_frames"
    CORRUPT_IMAGE = "corrupt_image"
    TOO_COSTLY = "image_too_costly"  # more decode work (JPEG scans, CPU seconds) than allowed
    NOT_PROCESSED = "image_rejected"  # the worker decoding it died (memory, killed)


class ImageRejected(Exception):
    """The upload cannot be decoded, for `reason`."""

    def __init__(self, reason: Rejection | str, message: str) -> None:
        super().__init__(message)
        self.reason = Rejection(reason)
        self.message = message

    @property
    def code(self) -> str:
        return self.reason.value

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # survive the process pool
        return (ImageRejected, (self.reason.value, self.message))


@dataclass(frozen=True)
class DecodedImage:
    """The first frame, upright, as 8-bit `RGB` or `L`.

    `width`/`height` are the upright full-resolution dimensions; `image.size`
    is smaller when a reduced decode was asked for.
    """

    image: Image.Image
    format: str
    width: int
    height: int
    frames: int
    # The alpha plane (`L`, the size of `image`) when some pixel is transparent: `image` is
    # composited onto white, and the fingerprint also hashes the same pixels on black.
    alpha: Image.Image | None = None


def open_image(
    data: bytes,
    limits: DecodeLimits = DecodeLimits(),
    *,
    draft: tuple[int, int] | None = None,
    mode: Literal["RGB", "L"] | None = None,
) -> DecodedImage:
    """Decode an upload's first frame within `limits`, or raise `ImageRejected`.

    **Parameters:**

    * **draft** - the smallest size the caller needs: the image may come back
      reduced by an integer factor, never below this in either dimension.
    * **mode** - `"L"` or `"RGB"` to force one; by default grey images stay
      `L` and everything else becomes `RGB`.
    """
    # Process-wide, but every call in a process uses the same limits; it makes
    # Pillow's own header check agree with ours (it warns above the limit).
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # corrupt EXIF and the like are not our concern
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _identify(data)
        frames = _check_limits(image, data, limits)
        try:
            return _decode(image, frames, draft, mode)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large() from exc  # a later GIF frame larger than the screen
        except MemoryError as exc:
            raise ImageRejected(
                Rejection.IMAGE_TOO_LARGE, "the image needs more memory to decode than allowed"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise ImageRejected(
                Rejection.CORRUPT_IMAGE, f"the image could not be decoded: {_reason(exc)}"
            ) from exc


# -- (1) identify: only allowlisted plugins, headers only ----------------------
def _too_large() -> ImageRejected:
    return ImageRejected(
        Rejection.IMAGE_TOO_LARGE,
        f"the image declares more than {Image.MAX_IMAGE_PIXELS} pixels, the limit",
    )


def _identify(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=_PLUGINS)
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            Rejection.UNSUPPORTED_FORMAT,
            f"the upload is not an image in a supported format ({_FORMAT_NAMES})",
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large() from exc
    except _DECODE_ERRORS as exc:  # a recognised format whose header is broken
        raise ImageRejected(
            Rejection.CORRUPT_IMAGE, f"the image header could not be read: {_reason(exc)}"
        ) from exc
    if image.format not in ALLOWED_FORMATS:  # belt and braces: plugins can hand off
        raise ImageRejected(Rejection.UNSUPPORTED_FORMAT, f"{image.format} images are not accepted")
    return image


# -- (2) limits, from headers ----------------------------------------------------
def _check_limits(image: Image.Image, data: bytes, limits: DecodeLimits) -> int:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejected(
            Rejection.CORRUPT_IMAGE, f"the image declares a size of {width}×{height}"
        )
    # Pillow's WebP decoder holds about four full RGBA canvases where the others hold two:
    # half the pixels keeps the same memory bound (docs/security.md, "Crafted images").
    max_pixels = limits.max_pixels // 2 if image.format == "WEBP" else limits.max_pixels
    if width * height > max_pixels:
        raise ImageRejected(
            Rejection.IMAGE_TOO_LARGE,
            f"the image is {width}×{height} = {width * height} pixels; "
            f"the limit is {max_pixels}" + (" for WebP" if image.format == "WEBP" else ""),
        )
    if max(width, height) > limits.max_side:
        raise ImageRejected(
            Rejection.IMAGE_TOO_LARGE,
            f"the image is {width}×{height}; neither side may exceed {limits.max_side} pixels",
        )
    if image.format == "TIFF":
        _check_tiff_tiles(image, limits)
    if image.format in ("JPEG", "MPO"):
        scans = _jpeg_scans(data, limits.max_scans + 1)
        if scans > limits.max_scans:
            raise ImageRejected(
                Rejection.TOO_COSTLY,
                f"the JPEG has more than {limits.max_scans} scans; the limit is {limits.max_scans}",
            )
    frames = _count_frames(image, data, limits.max_frames + 1)
    if frames > limits.max_frames:
        raise ImageRejected(
            Rejection.TOO_MANY_FRAMES,
            f"the image has more than {limits.max_frames} frames; the limit is {limits.max_frames}",
        )
    return frames


def _check_tiff_tiles(image: Image.Image, limits: DecodeLimits) -> None:
    """Refuse TIFF tiles far larger than the image.

    libtiff allocates one buffer per tile, sized by the declared tile, not the
    image: a 16×16 image declaring 16384×16384 deflate tiles is a 0.8 MB file
    that makes the decoder fill 800 MB. Tiles a little larger than a small
    image are normal (writers pad to a multiple of 16, often to 256).
    """
    tags = getattr(image, "tag_v2", {})
    tile_w, tile_h = tags.get(322), tags.get(323)
    if not isinstance(tile_w, int) or not isinstance(tile_h, int):
        return
    width, height = image.size
    allowed = min(limits.max_pixels, max(width * height, 1 << 20))
    if tile_w * tile_h > allowed:
        raise ImageRejected(
            Rejection.IMAGE_TOO_LARGE,
            f"the TIFF tiles are {tile_w}×{tile_h} pixels for a {width}×{height} image",
        )


# A marker inside entropy-coded data: 0xFF then neither a stuffed zero, a restart marker
# nor a fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_scans(data: bytes, cap: int) -> int:
    """SOS markers in the first image of a JPEG, counting no further than `cap`.

    Segments are skipped by their lengths; after each SOS the entropy-coded data is skipped
    by a regex search for the next marker, so a 30 MB file is walked in milliseconds.
    """
    scans, pos, end = 0, 2, len(data)
    while pos + 4 <= end and scans < cap:
        if data[pos] != 0xFF:
            break  # not a marker where one must be: the decoder will say what is wrong
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI: the rest (MPO's other pictures) is not decoded
            break
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
        if marker == 0xDA:
            scans += 1
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return scans


def _count_frames(image: Image.Image, data: bytes, cap: int) -> int:
    """Frames in the file, counting no further than `cap`.

    Pillow's GIF and TIFF `n_frames` parse every frame of the file to count
    them (a 30 MB GIF of tiny frames takes seconds); the other formats declare
    their count in a header, and Pillow reads it from there.
    """
    if image.format == "GIF":
        return _gif_frames(data, cap)
    if image.format == "TIFF":
        return _tiff_frames(data, cap)
    return int(getattr(image, "n_frames", 1))


def _gif_frames(data: bytes, cap: int) -> int:
    """Image descriptors in a GIF, walking blocks without decoding them."""

    def skip_sub_blocks(pos: int) -> int:
        while pos < len(data):
            size = data[pos]
            pos += 1 + size
            if size == 0:
                return pos
        return pos

    if len(data) < 13:
        return 1
    pos = 13
    flags = data[10]
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    frames = 0
    while pos < len(data) and frames < cap:
        block = data[pos]
        if block == 0x2C:  # image descriptor, optional local palette, LZW data
            frames += 1
            if pos + 10 > len(data):
                break
            local = data[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 << ((local & 7) + 1)
            pos = skip_sub_blocks(pos + 1)  # +1: the LZW minimum code size
        elif block == 0x21:  # extension: label, then sub-blocks
            pos = skip_sub_blocks(pos + 2)
        else:  # trailer (0x3B) or garbage: Pillow stops here too
            break
    return max(frames, 1)


def _tiff_frames(data: bytes, cap: int) -> int:
    """IFDs in a TIFF's chain (classic or BigTIFF), stopping at a loop or `cap`."""
    if len(data) < 16 or data[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if data[:2] == b"II" else ">"
    (magic,) = struct.unpack_from(order + "H", data, 2)
    if magic == 43:
        fmt_off, fmt_count, entry_size, first_at = "Q", "Q", 20, 8
    else:
        fmt_off, fmt_count, entry_size, first_at = "I", "H", 12, 4
    count_size, off_size = struct.calcsize("<" + fmt_count), struct.calcsize("<" + fmt_off)
    (offset,) = struct.unpack_from(order + fmt_off, data, first_at)
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < cap:
        if offset + count_size > len(data):
            break
        seen.add(offset)
        (entries,) = struct.unpack_from(order + fmt_count, data, offset)
        next_at = offset + count_size + entries * entry_size
        if next_at + off_size > len(data):
            break
        (offset,) = struct.unpack_from(order + fmt_off, data, next_at)
    return max(len(seen), 1)


# -- (3) decode the first frame and normalise it --------------------------------
def _decode(
    image: Image.Image,
    frames: int,
    draft: tuple[int, int] | None,
    mode: Literal["RGB", "L"] | None,
) -> DecodedImage:
    fmt = image.format or ""
    full_size = image.size  # draft() shrinks `size` to the scale it picks
    if draft is not None and fmt in ("JPEG", "MPO"):
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale straight from the DCT
        # coefficients: much less memory and time than decoding in full.
        sideways = _orientation(image) in (5, 6, 7, 8)
        want = (draft[1], draft[0]) if sideways else draft
        image.draft("L" if mode == "L" else image.mode, want)
    image.load()
    # Orientation is read after load: some plugins (TIFF) apply it while
    # decoding and drop the tag, and must not be rotated twice.
    orientation = _orientation(image)
    if draft is not None:
        image = _reduce(image, draft, orientation)
    width, height = full_size
    if orientation in _ORIENT:
        image = image.transpose(_ORIENT[orientation])
        if orientation >= 5:
            width, height = height, width
    image = _keyed_to_alpha(image)
    alpha = _alpha(image)
    return DecodedImage(_normalise(image, mode), fmt, width, height, frames, alpha)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # an unreadable EXIF block must not cost the photo
        return 1
    return value if isinstance(value, int) and value in _ORIENT else 1


_REDUCIBLE = ("L", "RGB", "RGBA", "LA", "CMYK", "I", "F", "RGBX")
# Rows converted at a time for the modes Pillow cannot box-reduce directly.
_BAND_ROWS = 256


def _reduce(image: Image.Image, draft: tuple[int, int], orientation: int) -> Image.Image:
    want_w, want_h = (draft[1], draft[0]) if orientation in (5, 6, 7, 8) else draft
    factor = min(image.width // max(want_w, 1), image.height // max(want_h, 1))
    if factor < 2:
        return image
    if image.mode in _REDUCIBLE:
        return image.reduce(factor)
    return _reduce_in_bands(image, factor)


def _reduce_in_bands(image: Image.Image, factor: int) -> Image.Image:
    """Box-reduce a palette, 16-bit, bilevel or other image a band of rows at a time.

    Converting it whole first (a palette image to RGBA, 16-bit grey to 32-bit) made a
    full-size copy four to eight times the decoded image: a 40 Mpx 16-bit PNG took 800 MB.
    Each band is converted to a mode `reduce` takes and reduced; 16-bit grey goes back to
    `I;16`, so it is scaled to 8 bits as before.
    """
    if image.mode == "P" or image.mode == "PA":
        transparent = image.mode == "PA" or "transparency" in image.info
        target = "RGBA" if transparent else "RGB"
    elif image.mode.startswith("I;16"):
        target = "I"
    elif image.mode == "1":
        target = "L"
    else:
        return image  # rare modes (LAB, HSV, YCbCr...) are converted whole, as before
    width, height = image.size
    band_rows = _BAND_ROWS - _BAND_ROWS % factor or factor
    out = Image.new(target, (width // factor, height // factor))
    for top in range(0, height - height % factor, band_rows):
        bottom = min(top + band_rows, height - height % factor)
        band = image.crop((0, top, width - width % factor, bottom)).convert(target)
        out.paste(band.reduce(factor), (0, top // factor))
    return out.convert("I;16") if target == "I" else out


def _keyed_to_alpha(image: Image.Image) -> Image.Image:
    """A palette or colour key that marks transparent pixels, as an alpha channel."""
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        return image.convert("LA" if image.mode == "L" else "RGBA")
    return image


def _alpha(image: Image.Image) -> Image.Image | None:
    """The alpha plane of an image with transparent pixels, else None."""
    if image.mode not in ("RGBA", "RGBa", "LA", "La", "PA"):
        return None
    alpha = image.getchannel("A")
    low, _ = alpha.getextrema()
    return alpha if isinstance(low, int) and low < _WHITE else None


def _normalise(image: Image.Image, mode: Literal["RGB", "L"] | None) -> Image.Image:
    """8-bit RGB or L: transparency onto white, other colour spaces converted.

    Palette and colour-key transparency has been made an alpha channel (`_keyed_to_alpha`).
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = _to_8bit_grey(image)
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode == "P":
        image = image.convert("RGB")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        image = _onto_white(image)
    if image.mode not in ("L", "RGB"):  # CMYK, YCbCr, RGBX, LAB, HSV
        image = image.convert("RGB")
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    return image


def _to_8bit_grey(image: Image.Image) -> Image.Image:
    """16-bit (and float) grey scaled into 0-255; Pillow's own convert clips at 255."""
    pixels = np.asarray(image)
    if image.mode == "F":  # no agreed range: stretch what is there (NaN, ±inf: its floor)
        finite = np.isfinite(pixels)
        low = float(pixels[finite].min()) if finite.any() else 0.0
        high = float(pixels[finite].max()) if finite.any() else 0.0
        pixels = np.where(finite, pixels, low)
        scaled = (pixels - low) * (255.0 / (high - low or 1.0))
    elif image.mode == "I" and int(pixels.max(initial=0)) <= 255:
        scaled = pixels  # 8-bit data held in a 32-bit mode
    else:
        scaled = np.clip(pixels, 0, 65535) / 257.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


def _onto_white(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBa", "La"):  # premultiplied
        image = image.convert("RGBA" if image.mode == "RGBa" else "LA")
    if image.mode == "PA":
        image = image.convert("RGBA")
    base_mode = "L" if image.mode == "LA" else "RGB"
    background = Image.new(base_mode, image.size, _WHITE if base_mode == "L" else (_WHITE,) * 3)
    background.paste(image.convert(base_mode), mask=image.getchannel("A"))
    return background


# -- (4) the canonical image the matching engine hashes -----------------------------
def canonical_grey(image: Image.Image) -> np.ndarray:
    """8-bit luminance of a decoded `RGB` or `L` image, long side exactly `CANONICAL_SIDE`.

    Pass `open_image(..., draft=(s, s)).image` with `s = draft_side(CANONICAL_SIDE)` (or a
    larger draft): the decode is already reduced, so this only finishes the job (a decode
    that came out up to `DRAFT_SLACK` short is enlarged).
    """
    grey = image if image.mode == "L" else image.convert("L")
    width, height = grey.size
    long_side = max(width, height)
    if long_side != CANONICAL_SIDE:
        scale = CANONICAL_SIDE / long_side
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # The long side is exactly CANONICAL_SIDE whatever the rounding did.
        size = (CANONICAL_SIDE, size[1]) if width >= height else (size[0], CANONICAL_SIDE)
        # BOX (area average) when shrinking: no aliasing, and cheap; BILINEAR when enlarging.
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        grey = grey.resize(size, resample)
    return np.ascontiguousarray(np.asarray(grey, dtype=np.uint8))


def draft_side(side: int) -> int:
    """The `draft=` side to ask `open_image` for when `side` pixels are wanted: a decode up to
    `DRAFT_SLACK` smaller is enlarged rather than decoded at twice the size (see there)."""
    return max(1, math.ceil(side * (1 - DRAFT_SLACK)))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
