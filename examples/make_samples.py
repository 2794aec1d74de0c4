"""Draw the two sample photos the README's commands use (run from the repository root):

    .venv/bin/python examples/make_samples.py

kettle.jpg        a product shot: a kettle on a white studio background
kettle-copy.jpg   what a copier would upload: kettle.jpg shrunk to 70 %, brightened,
                  with a "SALE" badge, re-encoded at JPEG quality 70

Needs Pillow and numpy (the service's extra). Deterministic: the same seed draws
the same pixels; the files in the repository were made by this script.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

HERE = Path(__file__).resolve().parent
SIZE = 800


def _shaded(colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    """Fill with `colour`, lit from the upper left, with a soft speckled texture."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    light = 1.15 - 0.55 * (0.6 * x + 0.4 * y)
    speckle = np.asarray(
        Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).resize(
            (SIZE, SIZE), Image.BICUBIC
        ),
        dtype=float,
    )
    light = light * (0.9 + 0.2 * speckle / 255)
    pixels = np.clip(np.array(colour, dtype=float)[None, None, :] * light[:, :, None], 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def kettle(seed: int = 1042) -> Image.Image:
    rng = np.random.default_rng(seed)
    tone = np.linspace(250, 236, SIZE)[:, None, None]
    image = Image.fromarray(np.broadcast_to(tone, (SIZE, SIZE, 3)).astype(np.uint8).copy())

    body = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(body)
    draw.ellipse((200, 260, 600, 660), fill=255)  # the body
    draw.rectangle((230, 560, 570, 650), fill=255)  # flat bottom
    draw.polygon([(560, 420), (720, 300), (735, 318), (590, 500)], fill=255)  # spout
    draw.arc((150, 180, 450, 520), start=200, end=330, fill=255, width=34)  # handle
    draw.ellipse((300, 215, 500, 300), fill=255)  # lid

    shadow = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(shadow).ellipse((190, 620, 640, 700), fill=150)
    shadow = shadow.filter(ImageFilter.GaussianBlur(18))
    image.paste(Image.new("RGB", (SIZE, SIZE), (70, 70, 80)), (0, 0), shadow)
    image.paste(_shaded((40, 95, 190), rng), (0, 0), body)

    draw = ImageDraw.Draw(image)
    draw.ellipse((375, 190, 425, 235), fill=(25, 25, 30))  # knob
    draw.rectangle((230, 640, 570, 656), fill=(30, 30, 35))  # base ring
    draw.rounded_rectangle((300, 430, 500, 540), radius=14, fill=(235, 230, 215))  # label
    for row in range(4):  # the label's "text"
        y = 448 + row * 22
        x = 318
        while x < 470:
            width = int(rng.integers(10, 38))
            draw.rectangle((x, y, min(x + width, 482), y + 9), fill=(60, 50, 45))
            x += width + int(rng.integers(6, 12))
    draw.ellipse((270, 300, 330, 380), fill=(150, 190, 240))  # highlight

    grain = rng.normal(0, 2.5, (SIZE, SIZE, 1))
    pixels = np.asarray(image, dtype=float) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def copied(original: Image.Image) -> Image.Image:
    small = original.resize((SIZE * 7 // 10, SIZE * 7 // 10), Image.LANCZOS)
    small = ImageEnhance.Brightness(small).enhance(1.08)
    draw = ImageDraw.Draw(small)
    draw.rounded_rectangle((420, 24, 540, 74), radius=10, fill=(210, 30, 40))
    draw.text((446, 40), "SALE", fill=(255, 255, 255))
    return small


def main() -> None:
    original = kettle()
    original.save(HERE / "kettle.jpg", quality=85, optimize=True)
    with Image.open(HERE / "kettle.jpg") as saved:
        copied(saved.convert("RGB")).save(HERE / "kettle-copy.jpg", quality=70, optimize=True)
    for name in ("kettle.jpg", "kettle-copy.jpg"):
        print(f"{name}: {(HERE / name).stat().st_size / 1000:.0f} kB")


if __name__ == "__main__":
    main()
