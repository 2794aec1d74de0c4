"""The development photo corpus (`../shared/photos`): which files are originals, which are held out.

Every photo in `manifest.tsv` is a distinct photograph. Its *original* — what a seller would
register — is the file's own bytes, except for images with transparency (the tuxpaint cut-outs,
sprites, planets), which are composited onto white and saved as PNG: a product shot.

About a fifth of the photos are *held out*: never registered, they are queried as they are and
with every edit, and any `copy` verdict for them is a false positive. The split is a fixed
function of the file name (SHA-256), not a random draw, and the originals of `known_copies.tsv`
are always registered so that their copies have something to be found.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.kit import ROOT
from tests.kit.edits import encode, product_shot

__all__ = ["SAME_PICTURE", "Photo", "corpus_dir", "held_out", "known_copies", "load_photos",
           "original_bytes", "same_picture", "similar_pairs"]

HOLDOUT_PERCENT = 20

# Pairs of manifest entries that are one picture, found by this engine's first benchmark runs
# (copy verdicts between "different" photos) and confirmed by eye. They are not counted as
# pairs of different photos; the benchmark reports what the engine says about each.
SAME_PICTURE: tuple[tuple[str, str, str], ...] = (
    ("tuxpaint-stamps/vehicles-construction__dumper.png",
     "tuxpaint-stamps/vehicles-construction__dumper_mirror.png",
     "mirrored and resized to 96 % (the tuxpaint set ships it as a separate stamp)"),
    ("gcompris/babyshapes-dog1__dog3.webp", "gcompris/babyshapes-dog2__dog3.webp",
     "the same dog photo, cropped to a disc and rescaled"),
    ("tuxpaint-stamps/space-planets__8_neptune.png", "gcompris/solar-system__neptune.webp",
     "the same Voyager 2 photo of Neptune (same clouds), cropped and rescaled"),
    ("opencv/html__Background_Subtraction_Tutorial_frame.jpg", "opencv/html__demo.jpg",
     "frames of one fixed-camera video, one a screenshot with contours drawn over it "
     "(known_copies.tsv counts neighbouring video frames as copies)"),
)


def corpus_dir() -> Path:
    """`$SHOTSTAMP_PHOTOS`, else `shared/photos` beside the checkout or a folder above it."""
    override = os.environ.get("SHOTSTAMP_PHOTOS")
    if override:
        return Path(override)
    root = ROOT
    for base in root.parents:  # a worktree sits one level deeper than the main checkout
        if (base / "shared" / "photos" / "manifest.tsv").exists():
            return base / "shared" / "photos"
    return root.parent / "shared" / "photos"


@dataclass(frozen=True)
class Photo:
    file: str  # path relative to the corpus
    width: int
    height: int
    source: str
    group: str


def load_photos(root: Path | None = None) -> list[Photo]:
    root = root or corpus_dir()
    with open(root / "manifest.tsv", newline="") as f:
        return [Photo(r["file"], int(r["width"]), int(r["height"]), r["source"], r["group"])
                for r in csv.DictReader(f, delimiter="\t")]


def known_copies(root: Path | None = None) -> list[tuple[str, str, str]]:
    """(original, copy, relation) as listed in known_copies.tsv."""
    root = root or corpus_dir()
    with open(root / "known_copies.tsv", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t")
        return [(r["original"], r["copy"], r["relation"]) for r in rows]


def similar_pairs(root: Path | None = None) -> list[tuple[str, str, float]]:
    root = root or corpus_dir()
    with open(root / "similar_pairs.tsv", newline="") as f:
        return [(r["file_a"], r["file_b"], float(r["similarity"]))
                for r in csv.DictReader(f, delimiter="\t")]


def held_out(photos: list[Photo], root: Path | None = None) -> set[str]:
    keep = {original for original, _, _ in known_copies(root)}
    out = set()
    for p in photos:
        digest = hashlib.sha256(p.file.encode()).digest()
        if int.from_bytes(digest[:4], "big") % 100 < HOLDOUT_PERCENT and p.file not in keep:
            out.add(p.file)
    return out


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def original_bytes(path: Path) -> tuple[bytes, Image.Image]:
    """(bytes a seller registers, the RGB product-shot image the edits start from)."""
    data = path.read_bytes()
    image = Image.open(io.BytesIO(data))
    shot = product_shot(image)
    if _has_transparency(image):
        data = encode(shot, "PNG")
    return data, shot


def same_picture() -> dict[str, set[str]]:
    """file → the other files that are the same picture (SAME_PICTURE, both ways)."""
    out: dict[str, set[str]] = {}
    for a, b, _ in SAME_PICTURE:
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return out
