"""Fingerprinting speed against the naive pHash loop, and what the draft decode costs in bits.

    PYTHONPATH=sdk:service python -m bench.fingerprint [--images 60] [--rounds 3]

Generates ~1000×1000 product-style JPEGs (a corpus cut-out or, without the corpus, a drawn
object, centred on white with a little sensor noise, quality 90) into bench/out/products/, then,
in one process and interleaved image by image so that machine load hits both alike, times:

- naive: `imagehash.phash(Image.open(f))` — full decode, LANCZOS to 32×32, DCT;
- ours, whole: `fingerprint(data)` — draft decode, canonical image, 3 PDQ, pHash, content box,
  300 ORB keypoints, thumbnail, serialisation;
- ours, global hashes only (the same without ORB and thumbnail), and the decode alone;
- what a fingerprint worker runs per upload with staff thumbnails on (the default):
  `fingerprint_and_thumbnail` (one decode for both) beside `fingerprint` + `make_thumbnail`
  (two decodes, as before the engine).

Prints medians, the ratio naive / ours, and the draft tolerance: for every image, the
fingerprint with libjpeg's reduced-size decode against the same with a full decode (the
canonical image is then made from the full image): PDQ and pHash bit differences, and ORB
inliers between the two feature sets; and the same against a decode never below 256 px
(no `decode.DRAFT_SLACK`: 1/2 scale instead of 1/4 for a 1000 px JPEG).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shotstamp_service.matching import hashes
from shotstamp_service.matching.decode import (
    CANONICAL_SIDE,
    DecodeLimits,
    canonical_grey,
    draft_side,
    open_image,
)
from shotstamp_service.matching.fingerprint import fingerprint, fingerprint_decoded
from shotstamp_service.matching.hashes import PerceptualHash
from shotstamp_service.matching.thumbnail import fingerprint_and_thumbnail, make_thumbnail
from shotstamp_service.matching.verification import verify_pair

OUT = Path(__file__).resolve().parent / "out"
SIDE = 1000


def _drawn_object(rng: np.random.Generator) -> Image.Image:
    """Without the corpus: a textured object (body, label, handle) on transparency."""
    obj = Image.new("RGBA", (800, 800), (0, 0, 0, 0))
    d = ImageDraw.Draw(obj)
    colour = tuple(int(c) for c in rng.integers(20, 220, 3))
    d.rounded_rectangle((150, 120, 650, 700), radius=int(rng.integers(10, 120)),
                        fill=(*colour, 255))
    for _ in range(int(rng.integers(20, 60))):
        x, y = rng.integers(170, 620, 2)
        r = int(rng.integers(4, 30))
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        d.ellipse((x - r, y - r, x + r, y + r), fill=(*c, 255))
    d.rectangle((250, 300, 550, 420), fill=(245, 245, 235, 255))
    d.text((270, 330), "BRAND", fill=(20, 20, 20, 255), font_size=60)
    return obj.filter(ImageFilter.GaussianBlur(0.8))


def _cutouts(count: int) -> list[Image.Image]:
    try:
        from tests.kit.corpus import corpus_dir, load_photos

        root = corpus_dir()
        photos = [p for p in load_photos(root) if p.source.startswith("tuxpaint")
                  and max(p.width, p.height) >= 300]
    except (OSError, ImportError):
        photos = []
    rng = np.random.default_rng(1)
    if not photos:
        return [_drawn_object(rng) for _ in range(count)]
    picks = rng.choice(len(photos), min(count, len(photos)), replace=False)
    return [Image.open(root / photos[i].file).convert("RGBA") for i in picks]


def product_jpegs(count: int) -> list[Path]:
    folder = OUT / "products"
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    rng = np.random.default_rng(0)
    paths = []
    for i, obj in enumerate(_cutouts(count)):
        scale = 820 / max(obj.size)
        obj = obj.resize((max(1, round(obj.width * scale)), max(1, round(obj.height * scale))),
                         Image.Resampling.LANCZOS)
        canvas = Image.new("RGBA", (SIDE, SIDE), (255, 255, 255, 255))
        canvas.alpha_composite(obj, ((SIDE - obj.width) // 2, (SIDE - obj.height) // 2))
        noisy = np.asarray(canvas.convert("RGB")).astype(np.int16)
        noisy += rng.normal(0, 2.0, noisy.shape).astype(np.int16)
        path = folder / f"product-{i:03d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def naive(data: bytes) -> object:
    import imagehash

    return imagehash.phash(Image.open(io.BytesIO(data)))


LIMITS = DecodeLimits()
THUMBNAIL_SIZE = 256  # the service's default


def decode(data: bytes) -> np.ndarray:
    """The canonical grey image, from the reduced decode the fingerprint uses."""
    side = (draft_side(CANONICAL_SIDE),) * 2
    return canonical_grey(open_image(data, LIMITS, draft=side, mode="RGB").image)


def one_decode(data: bytes) -> object:
    return fingerprint_and_thumbnail(data, LIMITS, THUMBNAIL_SIZE)


def two_decodes(data: bytes) -> object:
    return fingerprint(data), make_thumbnail(data, THUMBNAIL_SIZE, LIMITS)


def global_only(data: bytes) -> object:
    grey = decode(data)
    box = hashes.content_box(grey)
    out = [hashes.pdq(grey), hashes.pdq(grey, mirror=True), hashes.phash(grey)]
    if box is not None:
        out.append(hashes.pdq(grey[box[1]:box[3], box[0]:box[2]]))
    return out


def _tolerance(datas: list[bytes], draft: tuple[int, int] | None) -> dict[str, list[float]]:
    """Bits and ORB inliers between `fingerprint` and the same from another decode."""
    out: dict[str, list[float]] = {"pdq": [], "pdq_trim": [], "phash": [], "inliers": [],
                                   "kept": []}
    for data in datas:
        drafted = fingerprint(data)
        other = fingerprint_decoded(drafted.sha256, open_image(data, LIMITS, draft=draft,
                                                               mode="RGB"))
        for name in ("pdq", "pdq_trim", "phash"):
            if name in drafted.hashes and name in other.hashes:
                out[name].append(PerceptualHash(drafted.hashes[name])
                                 - PerceptualHash(other.hashes[name]))
        assert drafted.local is not None and other.local is not None
        ev = verify_pair(drafted.local, other.local)
        out["inliers"].append(ev.inliers)
        out["kept"].append(ev.inliers / max(1, len(other.local)))
    return out


def _summary(v: list[float]) -> str:
    return (f"identical {sum(x == 0 for x in v)}/{len(v)}, mean {np.mean(v):.1f}, "
            f"max {max(v):.0f}") if v else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    paths = product_jpegs(args.images)
    datas = [p.read_bytes() for p in paths]
    methods = {
        "naive imagehash.phash(Image.open(f))": naive,
        "shotstamp fingerprint (whole)": fingerprint,
        "shotstamp global hashes only": global_only,
        "shotstamp decode only": decode,
        "worker, fingerprint + thumbnail, one decode": one_decode,
        "worker, fingerprint + thumbnail, two decodes": two_decodes,
    }
    for fn in methods.values():  # warm imports and caches
        fn(datas[0])
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for data in datas:
            for name, fn in methods.items():
                t = time.perf_counter()
                fn(data)
                times[name].append(time.perf_counter() - t)
    medians = {name: float(np.median(v)) * 1000 for name, v in times.items()}
    base = medians["naive imagehash.phash(Image.open(f))"]
    print(f"{len(datas)} product JPEGs of {SIDE}×{SIDE}, {args.rounds} rounds, interleaved, "
          "one thread")
    print()
    print("| method | median ms | images/s | speed vs naive |")
    print("|---|---|---|---|")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.2f} | {1000 / ms:.0f} | {base / ms:.2f}× |")

    # Draft tolerance: reduced-size decode against a full decode, and against a decode never
    # below CANONICAL_SIDE (no slack), same canonical size after.
    tolerance = {}
    for label, draft in (("a full decode", None),
                         (f"a decode never below {CANONICAL_SIDE} px (no slack)",
                          (CANONICAL_SIDE, CANONICAL_SIDE))):
        tolerance[label] = _tolerance(datas, draft)
    for label, t in tolerance.items():
        print()
        print(f"Draft decode (libjpeg DCT scaling to ≥{draft_side(CANONICAL_SIDE)} px) "
              f"against {label}:")
        print(f"- PDQ bits differing: {_summary(t['pdq'])}")
        print(f"- PDQ of the content box: {_summary(t['pdq_trim'])}")
        print(f"- pHash bits differing: {_summary(t['phash'])}")
        print(f"- ORB: {np.median(t['inliers']):.0f} inliers median between the two feature "
              f"sets ({np.median(t['kept']):.0%} of keypoints)")
    full_t = tolerance["a full decode"]
    pdq_bits, phash_bits, inliers = full_t["pdq"], full_t["phash"], full_t["inliers"]
    report = {"images": len(datas), "median_ms": medians,
              "speedup_whole": base / medians["shotstamp fingerprint (whole)"],
              "speedup_global": base / medians["shotstamp global hashes only"],
              "speedup_worker_with_thumbnail": base / medians[
                  "worker, fingerprint + thumbnail, one decode"],
              "draft": {"pdq_max": max(pdq_bits), "pdq_mean": float(np.mean(pdq_bits)),
                        "phash_max": max(phash_bits),
                        "orb_inliers_median": float(np.median(inliers))},
              "draft_vs_no_slack": {
                  name: {"mean": float(np.mean(v)), "max": max(v)} if v else None
                  for name, v in tolerance[
                      f"a decode never below {CANONICAL_SIDE} px (no slack)"].items()
                  if name in ("pdq", "pdq_trim", "phash")}}
    (OUT / "fingerprint.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
