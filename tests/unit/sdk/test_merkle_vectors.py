"""The published transparency-dev/merkle proof probes, run against shotstamp.merkle.

tests/testdata/{inclusion,consistency}/ is written by
tests/testdata/generate_merkle_vectors.py; see tests/testdata/README.md.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from shotstamp._exceptions import VerificationError
from shotstamp._merkle import verify_consistency, verify_inclusion
from tests.kit import TESTDATA

INCLUSION = sorted((TESTDATA / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((TESTDATA / "consistency").rglob("*.json"))


def _id(path: Path) -> str:
    return str(path.relative_to(TESTDATA))


def _b(value: str | None) -> bytes:
    return b"" if value is None else base64.b64decode(value, validate=True)


def _proof(values: list[str] | None) -> list[bytes]:
    return [_b(v) for v in values or []]


def _load(path: Path) -> dict[str, Any]:
    probe: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return probe


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_merkle_vectors", TESTDATA / "generate_merkle_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_counts() -> None:
    # 5 vectors with their corruptions, 4 x 3 static probes, 4 single-entry.
    assert len(INCLUSION) == 82 + 12 + 4
    assert len(CONSISTENCY) == 84 + 14


@pytest.mark.parametrize("path", INCLUSION, ids=_id)
def test_inclusion_probe(path: Path) -> None:
    probe = _load(path)
    args = (
        probe["leafIdx"],
        probe["treeSize"],
        _b(probe["leafHash"]),
        _proof(probe["proof"]),
        _b(probe["root"]),
    )
    if probe["wantErr"]:
        with pytest.raises(VerificationError) as exc:
            verify_inclusion(*args)
        assert exc.value.check == "inclusion"
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_id)
def test_consistency_probe(path: Path) -> None:
    probe = _load(path)
    args = (
        probe["size1"],
        probe["size2"],
        _proof(probe["proof"]),
        _b(probe["root1"]),
        _b(probe["root2"]),
    )
    if probe["wantErr"]:
        with pytest.raises(VerificationError) as exc:
            verify_consistency(*args)
        assert exc.value.check == "consistency"
    else:
        verify_consistency(*args)


def test_generated_files_equal_the_published_samples() -> None:
    samples = json.loads((TESTDATA / "upstream_samples.json").read_text(encoding="utf-8"))
    assert len(samples["files"]) >= 5
    for relative, sample in samples["files"].items():
        assert (TESTDATA / relative).read_text(encoding="utf-8") == sample["text"], relative


def test_checked_in_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    _generator().generate(tmp_path)
    for kind in ("inclusion", "consistency"):
        generated = {
            p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / kind).rglob("*.*")
        }
        checked_in = {
            p.relative_to(TESTDATA): p.read_bytes() for p in (TESTDATA / kind).rglob("*.*")
        }
        assert len(generated) > 90
        assert generated == checked_in
