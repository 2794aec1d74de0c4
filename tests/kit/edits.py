"""The edit families a thief applies to a stolen product photo, shared by the benchmark and tests.

Each `Edit` turns an original (a Pillow RGB image, already composited onto white when it had
transparency) into the bytes of an edited copy, drawing every random choice from a generator
seeded by `edit_seed(photo, edit)`: the same photo and edit always give the same bytes, so a
benchmark figure can be reproduced and a test failure replayed.

The list follows the matching issue. `goal` is the recall the issue asks for on that family:
0.99 for re-encoding, resizing, mirror, colour and greyscale; 0.95 for padding, crop to 90 %,
rotation and watermarks; 0.90 for crop to 80 % and the combination. Three families the issue
lists without a goal are placed with their nearest kin: the aspect-ratio stretch and the
screenshot chain with resizing (0.99), the off-centre crop (85 % of each side, pushed into a
corner, so a harder crop than the centred 90 %) with the 80 % crop (0.90).

Usage:

    >>> from tests.kit.edits import EDITS, apply_edit, product_shot
    >>> img = product_shot(Image.open("photo.png"))
    >>> copy_bytes = apply_edit(EDITS_BY_NAME["crop_80"], img, photo="photo.png")
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = [
    "EDITS",
    "EDITS_BY_NAME",
    "Edit",
    "apply_edit",
    "edit_seed",
    "encode",
    "product_shot",
]

WHITE = (255, 255, 255)
# Copies are re-uploaded as JPEG unless the edit says otherwise; 90 is what phone galleries
# and marketplace uploaders commonly write.
DEFAULT_JPEG_QUALITY = 90
WATERMARK_WORDS = ("SAMPLE", "© PHOTO", "MY SHOP", "PREVIEW", "BEST DEAL")


@dataclass(frozen=True)
class Edit:
    """One edit family: `apply(image, rng)` returns the encoded bytes of the edited copy."""

    name: str
    goal: float
    description: str
    apply: Callable[[Image.Image, np.random.Generator], bytes]


def edit_seed(photo: str, edit: str) -> int:
    """A stable seed for (photo, edit), independent of Python's hash randomisation."""
    digest = hashlib.sha256(f"{photo}\0{edit}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def apply_edit(edit: Edit, image: Image.Image, *, photo: str) -> bytes:
    """Apply `edit` to `image` with the seed for (`photo`, `edit.name`)."""
    return edit.apply(image, np.random.default_rng(edit_seed(photo, edit.name)))


def product_shot(image: Image.Image) -> Image.Image:
    """First frame as RGB; transparency composited onto white, as a seller's product shot."""
    image.seek(0)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*WHITE, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=quality)
    else:
        image.save(out, fmt)
    return out.getvalue()


def _scaled(image: Image.Image, factor_x: float, factor_y: float | None = None) -> Image.Image:
    fy = factor_x if factor_y is None else factor_y
    size = (max(1, round(image.width * factor_x)), max(1, round(image.height * fy)))
    resample = Image.Resampling.LANCZOS if factor_x < 1 else Image.Resampling.BICUBIC
    return image.resize(size, resample)


def _crop_fraction(image: Image.Image, keep: float, fx: float = 0.5,
                   fy: float = 0.5) -> Image.Image:
    """Keep `keep` of each side; `fx`, `fy` in [0, 1] place the window (0.5 = centred)."""
    w, h = image.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    x0, y0 = round((w - cw) * fx), round((h - ch) * fy)
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def _either(rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float]) -> float:
    """A factor from one of two ranges, so both directions of a change are exercised."""
    lo, hi = low if rng.random() < 0.5 else high
    return float(rng.uniform(lo, hi))


def _enhance(kind: type[ImageEnhance._Enhance], image: Image.Image, rng: np.random.Generator,
             low: tuple[float, float], high: tuple[float, float]) -> Image.Image:
    return kind(image).enhance(_either(rng, low, high))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font: identical on every machine, so copies are reproducible.
    return ImageFont.load_default(size=max(8, size))


def _text_watermark(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Large semi-transparent text across the middle, slanted, white or black."""
    w, h = image.size
    word = WATERMARK_WORDS[int(rng.integers(len(WATERMARK_WORDS)))]
    font = _font(64)
    left, top, right, bottom = font.getbbox(word)
    layer = Image.new("RGBA", (right - left + 8, bottom - top + 8), (0, 0, 0, 0))
    colour = WHITE if rng.random() < 0.5 else (0, 0, 0)
    alpha = int(rng.uniform(0.35, 0.55) * 255)
    ImageDraw.Draw(layer).text((4 - left, 4 - top), word, font=font, fill=(*colour, alpha))
    layer = layer.rotate(float(rng.uniform(-30, 30)), expand=True,
                         resample=Image.Resampling.BICUBIC)
    # Spans about 80 % of the width (or of the height, for tall images).
    scale = min(0.8 * w / layer.width, 0.8 * h / layer.height)
    layer = layer.resize(
        (max(1, round(layer.width * scale)), max(1, round(layer.height * scale))),
        Image.Resampling.BICUBIC,
    )
    out = image.convert("RGBA")
    x = (w - layer.width) // 2 + round(rng.uniform(-0.05, 0.05) * w)
    y = (h - layer.height) // 2 + round(rng.uniform(-0.05, 0.05) * h)
    out.alpha_composite(layer, (max(0, x), max(0, y)))
    return out.convert("RGB")


def _corner_logo(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """An opaque badge (coloured rounded box with initials) in a random corner."""
    w, h = image.size
    side = max(6, round(min(w, h) * rng.uniform(0.15, 0.22)))
    bw, bh = side * 2, side
    badge = Image.new("RGBA", (bw, bh), (0, 0, 0, 0))
    draw = ImageDraw.Draw(badge)
    colour = tuple(int(c) for c in rng.integers(0, 200, 3))
    draw.rounded_rectangle((0, 0, bw - 1, bh - 1), radius=bh // 4, fill=(*colour, 235))
    font = _font(round(bh * 0.6))
    text = "".join(chr(int(c)) for c in rng.integers(ord("A"), ord("Z") + 1, 2))
    left, top, right, bottom = font.getbbox(text)
    draw.text(((bw - (right - left)) / 2 - left, (bh - (bottom - top)) / 2 - top), text,
              font=font, fill=(255, 255, 255, 255))
    if bw > w:  # very narrow images: shrink the badge to fit
        badge = badge.resize((w, max(1, bh * w // bw)))
    margin = round(0.03 * min(w, h))
    corner = int(rng.integers(4))
    x = margin if corner % 2 == 0 else w - badge.width - margin
    y = margin if corner < 2 else h - badge.height - margin
    out = image.convert("RGBA")
    out.alpha_composite(badge, (max(0, x), max(0, y)))
    return out.convert("RGB")


def _pad(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    px, py = round(w * fraction), round(h * fraction)
    return ImageOps.expand(image, border=(px, py, px, py), fill=WHITE)


def _rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.uniform(3.0, 5.0)) * (1 if rng.random() < 0.5 else -1)
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=WHITE)


def _stretch(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    factor = float(rng.uniform(1.15, 1.3))
    return _scaled(image, factor, 1.0) if rng.random() < 0.5 else _scaled(image, 1.0, factor)


def _screenshot(image: Image.Image, rng: np.random.Generator) -> bytes:
    """Resize as a browser would, slight blur, saved losslessly as a screen grab is."""
    factor = float(rng.uniform(0.6, 0.9))
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    shot = image.resize(size, Image.Resampling.BILINEAR)
    shot = shot.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 0.9))))
    return encode(shot, "PNG")


def _offcentre_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    corner = int(rng.integers(4))
    return _crop_fraction(image, 0.85, float(corner % 2), float(corner // 2))


def _combination(image: Image.Image, rng: np.random.Generator) -> bytes:
    """Crop 90 % + resize 60 % + text watermark + JPEG 60, in the issue's order."""
    out = _crop_fraction(image, 0.9)
    out = _scaled(out, 0.6)
    out = _text_watermark(out, rng)
    return encode(out, quality=60)


def _jpeg(image: Image.Image) -> bytes:
    return encode(image)


EDITS: tuple[Edit, ...] = (
    Edit("jpeg_q30", 0.99, "JPEG re-encode at quality 30", lambda im, r: encode(im, quality=30)),
    Edit("jpeg_q50", 0.99, "JPEG re-encode at quality 50", lambda im, r: encode(im, quality=50)),
    Edit("downscale_50", 0.99, "downscale to 50 %", lambda im, r: _jpeg(_scaled(im, 0.5))),
    Edit("downscale_25", 0.99, "downscale to 25 %", lambda im, r: _jpeg(_scaled(im, 0.25))),
    Edit("upscale_150", 0.99, "upscale to 150 %", lambda im, r: _jpeg(_scaled(im, 1.5))),
    Edit("stretch", 0.99, "aspect-ratio stretch of one axis by 15–30 %",
         lambda im, r: _jpeg(_stretch(im, r))),
    Edit("screenshot", 0.99, "resize 60–90 % + slight blur + PNG", _screenshot),
    Edit("mirror", 0.99, "horizontal mirror", lambda im, r: _jpeg(ImageOps.mirror(im))),
    Edit("brightness", 0.99, "brightness ×0.7–0.8 or ×1.2–1.3",
         lambda im, r: _jpeg(_enhance(ImageEnhance.Brightness, im, r, (0.7, 0.8), (1.2, 1.3)))),
    Edit("contrast", 0.99, "contrast ×0.6–0.8 or ×1.3–1.5",
         lambda im, r: _jpeg(_enhance(ImageEnhance.Contrast, im, r, (0.6, 0.8), (1.3, 1.5)))),
    Edit("saturation", 0.99, "saturation ×0.4–0.6 or ×1.5–1.8",
         lambda im, r: _jpeg(_enhance(ImageEnhance.Color, im, r, (0.4, 0.6), (1.5, 1.8)))),
    Edit("greyscale", 0.99, "greyscale", lambda im, r: _jpeg(ImageOps.grayscale(im))),
    Edit("pad_10", 0.95, "white padding of 10 % of each side", lambda im, r: _jpeg(_pad(im, 0.10))),
    Edit("crop_90", 0.95, "centre crop keeping 90 % of each side",
         lambda im, r: _jpeg(_crop_fraction(im, 0.9))),
    Edit("rotate", 0.95, "rotation by 3–5 degrees either way, white corners",
         lambda im, r: _jpeg(_rotate(im, r))),
    Edit("watermark_text", 0.95, "large semi-transparent slanted text",
         lambda im, r: _jpeg(_text_watermark(im, r))),
    Edit("logo_corner", 0.95, "opaque badge of 15–22 % of the short side in a corner",
         lambda im, r: _jpeg(_corner_logo(im, r))),
    Edit("crop_80", 0.90, "centre crop keeping 80 % of each side",
         lambda im, r: _jpeg(_crop_fraction(im, 0.8))),
    Edit("crop_offcentre", 0.90, "crop keeping 85 % of each side, pushed into a corner",
         lambda im, r: _jpeg(_offcentre_crop(im, r))),
    Edit("combination", 0.90, "crop 90 % + resize 60 % + text watermark + JPEG 60", _combination),
)

EDITS_BY_NAME: dict[str, Edit] = {e.name: e for e in EDITS}
