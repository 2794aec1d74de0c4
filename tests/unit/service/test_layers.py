"""The domain raises its own errors and never imports the HTTP layer; only `http/` knows
statuses, from one table (`http.errors.STATUS`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shotstamp_service.http.errors import STATUS, from_domain
from shotstamp_service.log.proofs import ProofRange, ProofRangeError
from shotstamp_service.matching.decode import ImageRejected, Rejection
from tests.kit import ROOT

PACKAGE = ROOT / "service" / "shotstamp_service"
DOMAIN = ("matching", "log", "store", "webhooks", "anchors", "records.py", "config.py")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _files(name: str) -> list[Path]:
    path = PACKAGE / name
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


@pytest.mark.parametrize("name", DOMAIN)
def test_the_domain_never_imports_the_http_layer(name: str) -> None:
    for path in _files(name):
        http = {m for m in _imports(path) if m.startswith("shotstamp_service.http")}
        assert not http, f"{path.relative_to(PACKAGE)} imports {http}"


@pytest.mark.parametrize("path", [PACKAGE / "cli.py", PACKAGE / "http" / "desk.py"])
def test_nothing_imports_the_route_handlers(path: Path) -> None:
    assert "shotstamp_service.http.routes" not in _imports(path)


def test_domain_errors_carry_reasons_and_http_maps_every_one() -> None:
    assert set(STATUS) == set(Rejection) | set(ProofRange)
    assert not hasattr(ImageRejected(Rejection.CORRUPT_IMAGE, "x"), "status")
    assert not hasattr(ProofRangeError(ProofRange.NOT_YET, "x"), "status")
    error = from_domain(ImageRejected(Rejection.TOO_MANY_FRAMES, "1,001 frames"))
    assert (error.status, error.body()) == (413, {"error": "too_many_frames",
                                                  "message": "1,001 frames"})
    error = from_domain(ProofRangeError(ProofRange.NOT_YET, "no tree of size 9 yet"))
    assert (error.status, error.code) == (404, "invalid_size")
