"""Synthetic 1000×1000 product-style JPEGs for the load benchmark.

Each shot is a textured object (random smooth colour field inside a random
ellipse or rounded box) with a soft shadow on a light, slightly graded studio
background — the layout of a marketplace product photo, with enough texture
that two seeds are different photos to a perceptual hash. Generated once and
cached under bench/out/ so repeated runs measure the service, not the generator.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["product_shot", "product_shots"]

CACHE = Path(__file__).parent / "out" / "productshots"
# pHash bits two shots must differ by; the global-hash rule's pHash copy threshold is 6.
DISTINCT_BITS = 8


def _smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    # Luminance carries the structure (perceptual hashes look at grey levels);
    # a random tint on top makes it a coloured product.
    luma = np.zeros((size, size))
    for cells, weight in ((3, 1.0), (6, 0.7), (13, 0.35), (37, 0.15)):
        layer = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
        luma += weight * np.asarray(layer.resize((size, size), Image.BICUBIC), dtype=float)
    luma -= luma.min()
    luma = 25 + luma / luma.max() * 200
    tint = rng.uniform(0.5, 1.0, 3)
    return luma[:, :, None] * tint[None, None, :]


def product_shot(seed: int, size: int = 1000) -> Image.Image:
    """Composed at a quarter of `size` and scaled up (the content is smooth), plus sensor grain."""
    rng = np.random.default_rng(seed)
    small = _compose(rng, max(64, size // 4)).resize((size, size), Image.BICUBIC)
    grain = rng.normal(0, 3.0, (size, size, 1))
    pixels = np.asarray(small, dtype=np.float32) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _compose(rng: np.random.Generator, size: int) -> Image.Image:
    tone = 235 + rng.integers(0, 20)
    gradient = np.linspace(tone, min(255, tone + 15), size)[:, None, None]
    background = np.broadcast_to(gradient, (size, size, 3)).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(background))

    box_w, box_h = (int(size * f) for f in rng.uniform(0.6, 0.9, 2))
    x0 = int(rng.integers(size // 20, size - box_w - size // 20))
    y0 = int(rng.integers(size // 20, size - box_h - size // 20))
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if rng.random() < 0.5:
        draw.ellipse((x0, y0, x0 + box_w, y0 + box_h), fill=255)
    else:
        draw.rounded_rectangle(
            (x0, y0, x0 + box_w, y0 + box_h),
            radius=int(rng.integers(2, max(3, size // 12))),
            fill=255,
        )
    shadow = mask.filter(ImageFilter.GaussianBlur(max(2, size // 50))).point(lambda v: v * 0.35)
    offset = Image.new("L", (size, size), 0)
    offset.paste(shadow, (size // 80, size // 55))
    image.paste(Image.new("RGB", (size, size), (90, 90, 90)), (0, 0), offset)
    texture = Image.fromarray(_smooth_field(rng, size).astype(np.uint8))
    image.paste(texture, (0, 0), mask)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):  # labels, buttons, seams
        lx = int(rng.integers(x0, x0 + box_w - size // 50))
        ly = int(rng.integers(y0, y0 + box_h - size // 50))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle(
            (
                lx,
                ly,
                lx + int(rng.integers(3, max(4, size // 8))),
                ly + int(rng.integers(2, max(3, size // 16))),
            ),
            fill=colour,
        )
    return image


def _distinct(image: Image.Image, accepted: np.ndarray) -> int | None:
    """The shot's 64-bit pHash if it is far from every accepted one, else None.

    Plain product layouts on a studio background collide under global hashes
    (the matching issue's low-information problem); the load benchmark wants
    every upload to be a new registration, so it keeps only shots whose pHash
    is more than DISTINCT_BITS from all others. (The first 2,500 cached shots
    were kept at 12 bits; past that almost every candidate fell within 12 bits
    of one of them, so generation stalled at a few shots a minute.)
    """
    import imagehash

    code = int(str(imagehash.phash(image)), 16)
    if len(accepted) and int(np.bitwise_count(accepted ^ np.uint64(code)).min()) <= DISTINCT_BITS:
        return None
    return code


def product_shots(count: int, size: int = 1000) -> list[Path]:
    """`count` cached, mutually distinct JPEG files (quality 90)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    index = CACHE / f"index-{size}.txt"
    known = index.read_text().split() if index.exists() else []
    paths = [CACHE / name for name in known if (CACHE / name).exists()]
    if len(paths) >= count:
        return paths[:count]
    import imagehash
    from PIL import Image as PILImage

    codes = [int(str(imagehash.phash(PILImage.open(p))), 16) for p in paths]
    accepted = np.array(codes, dtype=np.uint64)
    seed = int(paths[-1].stem.rsplit("-", 1)[1]) + 1 if paths else 0
    while len(paths) < count:
        image = product_shot(seed, size)
        code = _distinct(image, accepted)
        if code is not None:
            path = CACHE / f"shot-{size}-{seed:06d}.jpg"
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            path.write_bytes(buffer.getvalue())
            accepted = np.append(accepted, np.uint64(code))
            paths.append(path)
            if len(paths) % 100 == 0:  # an interrupted run keeps what it made
                index.write_text("\n".join(p.name for p in paths))
        seed += 1
    index.write_text("\n".join(p.name for p in paths))
    return paths
