"""Real photographs that need no corpus: the few that scikit-image's wheel installs in the
package's own `skimage/data/` folder, read from the installed files.

The development corpus (`../shared/photos`, the `photos` fixture) is not in a clean clone, and
its licence forbids copying it into the repository, so CI runs without it. scikit-image is in
the `dev` extra: `pip install -e '.[dev]'` brings these photos from PyPI like any other test
dependency. Only files the wheel ships are read; `skimage.data`'s functions are never called,
because for most of its gallery they download the file (through pooch) on first use, and
nothing may be downloaded while the tests run.

Every photo here is public domain or CC0, as its loader's docstring in
`skimage/data/_fetchers.py` says (coins: "no known copyright restrictions", Brooklyn Museum).
The tests and the service never write them anywhere; neither the service nor the SDK imports
scikit-image.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.kit.corpus import original_bytes

__all__ = ["BUNDLED_PHOTOS", "BundledPhoto", "bundled_data_dir", "load_bundled"]


@dataclass(frozen=True)
class BundledPhoto:
    file: str  # in skimage/data/
    content: str
    licence: str

    @property
    def name(self) -> str:
        """The photo's name for `tests.kit.edits.apply_edit` (its edits' seeds come from it)."""
        return f"skimage/{self.file}"


BUNDLED_PHOTOS: tuple[BundledPhoto, ...] = (
    BundledPhoto("astronaut.png", "portrait: astronaut Eileen Collins, 512×512",
                 "public domain (NASA)"),
    BundledPhoto("chelsea.png", "animal: a cat's face, 451×300", "CC0 (Stefan van der Walt)"),
    BundledPhoto("coffee.png", "object: a cup of coffee on a wooden table, 600×400",
                 "CC0 (Rachel Michetti)"),
    BundledPhoto("coins.png", "objects on a plain background: Greek coins, greyscale, 384×303",
                 "no known copyright restrictions (Brooklyn Museum)"),
    BundledPhoto("camera.png", "scene: a man with a camera on a tripod, greyscale, 512×512",
                 "CC0 (Lav Varshney)"),
    BundledPhoto("rocket.jpg", "scene at night: a rocket on its launch pad, 640×427",
                 "public domain (SpaceX)"),
    BundledPhoto("brick.png", "texture: a brick wall in perspective, greyscale, 512×512",
                 "CC0 (CC0Textures)"),
    BundledPhoto("grass.png", "texture: grass, greyscale, 512×512", "CC0"),
    BundledPhoto("gravel.png", "texture: gravel, greyscale, 512×512", "CC0 (CC0Textures)"),
    BundledPhoto("hubble_deep_field.jpg", "textured scene: galaxies on black, 1000×872",
                 "public domain (NASA)"),
    BundledPhoto("retina.jpg", "object on black: a fundus photograph, 1411×1411",
                 "CC0 (Mikael Häggström)"),
)


def bundled_data_dir() -> Path:
    """`skimage/data/` of the installed scikit-image, found without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed: the matching tests read the "
                                "photos its wheel ships (pip install -e '.[service,dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_bundled(photo: BundledPhoto) -> tuple[bytes, Image.Image]:
    """(bytes a seller registers: the file as shipped, the RGB image the edits start from)."""
    path = bundled_data_dir() / photo.file
    if not path.exists():
        raise FileNotFoundError(f"{path}: this scikit-image no longer ships {photo.file} in "
                                "its wheel; choose another bundled photo, never a fetched one")
    return original_bytes(path)
