"""Transparent originals: are copies flattened onto black, and onto white, caught?

    PYTHONPATH=sdk:service python -m bench.transparency [--photos DIR]

Registers every corpus photo that has transparent pixels as the seller's PNG (alpha kept), then
queries each one flattened onto black and onto white (JPEG q85, and the black one also resized
to 60 %), as a marketplace or a thief flattens a cut-out. Prints, per copy kind, the share that
gets the engine's `copy` verdict for the true original, how many by the hash alone, and every
copy verdict for a different photo; plus the PDQ distance between the copy and the registration
(median) with and without the black-composite hash, `pdq_black`.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.matching.hashes import PerceptualHash
from tests.kit.corpus import corpus_dir, load_photos, same_picture

COPIES = {
    "on black": ((0, 0, 0), 1.0),
    "on black, 60 %": ((0, 0, 0), 0.6),
    "on white": ((255, 255, 255), 1.0),
}


def _flattened(image: Image.Image, background: tuple[int, int, int], scale: float) -> bytes:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, background)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    if scale != 1.0:
        size = (max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale)))
        canvas = canvas.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=85)
    return out.getvalue()


def _pdq(a: Fingerprint, b: Fingerprint, names: tuple[str, ...]) -> int:
    return min(PerceptualHash(x) - PerceptualHash(b.hashes["pdq"])
               for n, x, _ in a.pdq_codes() if n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=None)
    args = parser.parse_args()
    root = args.photos or corpus_dir()
    originals: list[tuple[str, Image.Image, Fingerprint]] = []
    for photo in load_photos(root):
        data = (root / photo.file).read_bytes()
        image = Image.open(io.BytesIO(data))
        image.seek(0)
        if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
            continue
        fp = fingerprint(data)
        if "pdq_black" in fp.hashes:  # some alpha channels are fully opaque
            originals.append((photo.file, image.convert("RGBA"), fp))
    one_picture = same_picture()  # pairs the corpus ships twice (a mirrored stamp): not wrong
    matcher = Matcher(background=False)
    features = {}
    for ref, (_, _, fp) in enumerate(originals):
        matcher.add(ref, fp)
        features[ref] = fp.features
    print(f"# Transparent originals — {len(originals)} corpus photos with transparent pixels, "
          "registered as PNG with alpha\n")
    print("| copy (JPEG q85) | caught | by hash alone | wrong copy verdicts "
          "| PDQ to original, median: with pdq_black | without |")
    print("|---|---|---|---|---|---|")
    for kind, (background, scale) in COPIES.items():
        caught = fast = wrong = 0
        with_black, without = [], []
        for ref, (_, image, original) in enumerate(originals):
            copy = fingerprint(_flattened(image, background, scale))
            matches = matcher.match(copy, features.get)
            mine = [m for m in matches if m.ref == ref and m.verdict == "copy"]
            caught += bool(mine)
            fast += bool(mine) and "orb_inliers" not in mine[0].distances
            for m in matches:
                other = originals[m.ref][0]
                if (m.ref != ref and m.verdict == "copy"
                        and other not in one_picture.get(originals[ref][0], set())):
                    wrong += 1
                    print(f"  wrong: {originals[ref][0]} [{kind}] → {originals[m.ref][0]} "
                          f"{m.distances}", file=sys.stderr)
            with_black.append(_pdq(original, copy, ("pdq", "pdq_trim", "pdq_black")))
            without.append(_pdq(original, copy, ("pdq", "pdq_trim")))
        n = len(originals)
        print(f"| {kind} | {caught / n:.1%} ({caught}/{n}) | {fast / n:.1%} | {wrong} "
              f"| {np.median(with_black):.0f} | {np.median(without):.0f} |")


if __name__ == "__main__":
    main()
