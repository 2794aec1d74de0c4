"""Shared fixtures: the development corpus (read in place, never copied), and the real photos
scikit-image's wheel ships (`bundled_photos.py`), which every run has, CI's included."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is imported from the repository root
    sys.path.insert(0, str(ROOT))

from bench.corpus import corpus_dir  # noqa: E402
from bundled_photos import BUNDLED_PHOTOS, load_bundled  # noqa: E402


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
