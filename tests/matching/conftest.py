"""Shared fixtures: the development corpus (read in place, never copied) and image helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is imported from the repository root
    sys.path.insert(0, str(ROOT))

from bench.corpus import corpus_dir  # noqa: E402


@pytest.fixture(scope="session")
def photos() -> Path:
    root = corpus_dir()
    if not (root / "manifest.tsv").exists():
        pytest.skip(f"development photo corpus not found at {root} "
                    "(expected ../shared/photos beside the repository, or $SHOTSTAMP_PHOTOS)")
    return root
