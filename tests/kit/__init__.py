"""Helpers the tests (and the benchmarks) import: `from tests.kit import imagegen`.

No tests here and no fixtures; fixtures live in the conftest.py files. See docs/testing.md.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository's top folder
TESTDATA = ROOT / "tests" / "testdata"
