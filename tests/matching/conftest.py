"""Shared fixtures: the development corpus (read in place, never copied), and the real photos
scikit-image's wheel ships (`tests/kit/bundled_photos.py`), which every run has, CI's included."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.kit.bundled_photos import BUNDLED_PHOTOS, load_bundled
from tests.kit.corpus import corpus_dir


@pytest.fixture(scope="session")
def photos() -> Path:
    root = corpus_dir()
    if not (root / "manifest.tsv").exists():
        pytest.skip(f"development photo corpus not found at {root} "
                    "(expected ../shared/photos beside the repository, or $SHOTSTAMP_PHOTOS)")
    return root


@pytest.fixture(scope="session")
def bundled() -> dict[str, tuple[bytes, Image.Image]]:
    """file → (original bytes, RGB image) for every photo in BUNDLED_PHOTOS. Never skipped:
    scikit-image is a test dependency, so a missing photo fails the run."""
    try:
        return {p.file: load_bundled(p) for p in BUNDLED_PHOTOS}
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
