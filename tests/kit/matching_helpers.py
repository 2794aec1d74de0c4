"""Helpers for the matching tests: images, and a brute-force reference for the Hamming index."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from shotstamp_service.matching.index import Hit


def jpeg(image: Image.Image, quality: int = 90, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality, **kwargs)
    return out.getvalue()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def fixture_image(size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A deterministic product-like test image: shapes and a texture on a light background."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([
        200 + 40 * np.sin(xx / 37.0),
        180 + 50 * np.cos(yy / 23.0),
        160 + 60 * np.sin((xx + yy) / 51.0),
    ], axis=-1)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((w * 0.2, h * 0.2, w * 0.55, h * 0.75), fill=(180, 40, 30), outline=(20, 20, 20),
                 width=6)
    draw.rectangle((w * 0.6, h * 0.15, w * 0.9, h * 0.5), fill=(30, 90, 170))
    draw.polygon([(w * 0.62, h * 0.9), (w * 0.92, h * 0.9), (w * 0.77, h * 0.58)],
                 fill=(40, 160, 60))
    for i in range(12):
        draw.line((w * 0.05, h * (0.05 + i * 0.07), w * 0.18, h * (0.1 + i * 0.07)),
                  fill=(10 * i, 20, 200 - 10 * i), width=3)
    return image


def flip_bits(code: bytes, bits: list[int]) -> bytes:
    """`code` with these bit positions inverted."""
    value = bytearray(code)
    for b in bits:
        value[b // 8] ^= 1 << (b % 8)
    return bytes(value)


def hamming(a: bytes, b: bytes) -> int:
    """The number of bits in which `a` and `b` differ."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def brute_force(live: dict[int, list[bytes]], queries: list[bytes], radius: int,
                 tags: dict[int, list[int]] | None = None) -> dict[int, Hit]:
    """ref → closest (distance, query index, stored tag), ties broken as the index does."""
    out = {}
    for ref, codes in live.items():
        ref_tags = tags[ref] if tags else [0] * len(codes)
        best = min(Hit(hamming(q, c), qi, t) for qi, q in enumerate(queries)
                   for c, t in zip(codes, ref_tags, strict=True))
        if best.distance <= radius:
            out[ref] = best
    return out
