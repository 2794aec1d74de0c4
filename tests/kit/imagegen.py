"""Synthetic photographs for tests: textured scenes that differ from seed to seed.

Real photos are not committed to the repository; these stand in where a test
needs distinct, natural-looking pictures. Each is smooth multi-scale noise
(like lighting and texture) with a few shapes on top, so different seeds give
pictures whose perceptual hashes are far apart, as different photos' are.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    canvas = np.zeros((height, width, 3), dtype=np.float64)
    for cells, weight in ((3, 1.0), (7, 0.5), (17, 0.25), (41, 0.12)):
        field = rng.random((cells, cells, 3))
        layer = Image.fromarray((field * 255).astype(np.uint8)).resize(
            (width, height), Image.BICUBIC
        )
        canvas += weight * np.asarray(layer, dtype=np.float64)
    canvas = canvas / canvas.max() * 255
    image = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
        x1 = x0 + rng.integers(30, max(31, width // 2))
        y1 = y0 + rng.integers(30, max(31, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", 92)
        image = image.convert("RGB")
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (640, 480), quality: int = 92) -> bytes:
    return encode(photo(seed, size), "JPEG", quality=quality)


def recompressed_copy(data: bytes, scale: float = 0.6, quality: int = 55) -> bytes:
    """What a thief does: decode, shrink, save again at lower quality."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    return encode(image.resize((int(w * scale), int(h * scale)), Image.LANCZOS), quality=quality)


def tiny_jpeg(seed: int, side: int = 96) -> bytes:
    """A small photo-like JPEG in half a millisecond, for tests that need thousands.

    Random 8×8 colour cells, smoothly upscaled: different seeds give pHashes
    far apart (at least 14 bits over 500 seeds).
    """
    cells = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(cells).resize((side, side), Image.BICUBIC)
    return encode(image, "JPEG", quality=85)


def detailed_photo(seed: int, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """`photo` with small sharp details on top, as real product photos have.

    Smooth noise alone gives local features (corners) too few to match a crop
    by; these give ORB a hundred or more, as a real photo does.
    """
    image = photo(seed, size)
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(seed + 1000)
    width, height = size
    for _ in range(80):
        x, y = int(rng.integers(0, width - 30)), int(rng.integers(0, height - 30))
        side = int(rng.integers(8, 30))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle((x, y, x + side, y + side // 2), fill=colour)
        elif kind == 1:
            draw.ellipse((x, y, x + side, y + side), outline=colour, width=3)
        else:
            draw.line((x, y, x + side, y + int(rng.integers(-side, side))), fill=colour, width=3)
    return image


def stamp(variant: int, size: tuple[int, int] = (120, 180)) -> Image.Image:
    """A clip-art gravestone on white: the same outline and body for every variant, a
    different engraving (a few strokes and rings drawn from the variant's seed). Variants are
    the hard case for small images: one silhouette, one colour, on one background."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((10, 10, width - 10, height - 6), radius=width * 3 // 8,
                           fill=(150, 150, 158), outline=(60, 60, 66), width=4)
    rng = np.random.default_rng(variant)
    for _ in range(4):
        x0, y0 = rng.integers(25, width - 45), rng.integers(40, height - 50)
        x1, y1 = x0 + rng.integers(10, 30), y0 + rng.integers(10, 40)
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=(40, 40, 44), width=int(rng.integers(3, 7)))
        else:
            draw.ellipse((x0, y0, x1, y1), outline=(40, 40, 44), width=int(rng.integers(3, 6)))
    return image


def crop_and_turn(image: Image.Image, box: tuple[int, int, int, int],
                  angle: float) -> tuple[Image.Image, list[tuple[float, float]]]:
    """`image` cropped to `box` and turned `angle` degrees counter-clockwise (same frame, black
    corners), and where the result's corners (top-left, top-right, bottom-right, bottom-left)
    lie in `image`, in its pixels."""
    x0, y0, x1, y1 = box
    turned = image.crop(box).rotate(angle, resample=Image.Resampling.BICUBIC)
    w, h = x1 - x0, y1 - y0
    cx, cy = w / 2, h / 2
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    corners = []
    for u, v in ((0, 0), (w, 0), (w, h), (0, h)):
        # turned counter-clockwise as seen (y down): each output point comes from the source
        # point turned back clockwise about the centre
        dx, dy = u - cx, v - cy
        corners.append((x0 + cx + c * dx - s * dy, y0 + cy + s * dx + c * dy))
    return turned, corners
