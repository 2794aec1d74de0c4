"""Keep the SDK light: `pip install shotstamp` (no extras) into a clean virtual
environment pulls neither Pillow, numpy nor scipy, and the SDK works there; importing
it in a fresh interpreter loads none of them. The wheel installed is the one `make dist`
builds (docs/sdk.md, *Install*), built without setuptools deprecation warnings.

Slow-ish (a fresh venv and a real `pip install` of the working tree with its
dependencies, from the pip cache or PyPI): an integration test, run by `make test` and CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import shotstamp
from tests.kit import ROOT

HEAVY = ("pillow", "numpy", "scipy", "imagehash")
# The anchors' extras (shotstamp[tsa], shotstamp[chain]) must not leak into the base.
ANCHOR_EXTRAS = ("rfc3161-client", "web3", "eth-account", "py-evm", "eth-tester")


@pytest.mark.timeout(900)
def test_installing_the_sdk_alone_pulls_no_heavy_dependencies(tmp_path):
    # A copy of the sources, so the build leaves nothing in the working tree.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "Makefile"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("sdk", "service"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)

    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # `make dist`, in that venv; verbose so that the build backend's warnings show.
    built = subprocess.run(
        ["make", "-C", str(source), "dist", f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**env, "PIP_VERBOSE": "1"},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    log = built.stdout + built.stderr
    assert "deprecated" not in log.lower(), log  # e.g. the licence as a TOML table
    (wheel,) = (source / "dist").glob("shotstamp-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: Apache-2.0" in archive.read(metadata).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "shotstamp/cli.py" in names and "shotstamp_service/http/static/desk/desk.js" in names
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"shotstamp", "aiohttp", "cryptography"} <= names
    assert not names & set(HEAVY), names & set(HEAVY)
    assert not names & set(ANCHOR_EXTRAS), names & set(ANCHOR_EXTRAS)

    probe = (
        "import importlib.util, pathlib, sys, shotstamp\n"
        "from shotstamp import Client, AsyncClient, verify_proof, verify_webhook\n"
        "from shotstamp.anchors import verify_anchors, evm_payload\n"
        "from shotstamp.verify import ProofBundle\n"
        "assert pathlib.Path(shotstamp.__file__).parent.joinpath('py.typed').exists()\n"
        "assert 'site-packages' in shotstamp.__file__, shotstamp.__file__\n"
        "heavy = [m for m in ('PIL', 'numpy', 'scipy', 'imagehash')"
        " if importlib.util.find_spec(m) is not None]\n"
        "print(heavy)\n"
    )
    ran = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"
    cli = subprocess.run(
        [str(venv / "bin" / "shotstamp"), "--help"], capture_output=True, text=True, env=env
    )
    assert cli.returncode == 0 and "register" in cli.stdout and "verify" in cli.stdout


def test_importing_the_sdk_pulls_in_no_heavy_dependencies() -> None:
    code = (
        "import sys, shotstamp, shotstamp.verify; "
        "print(sorted(m for m in ('numpy', 'PIL', 'imagehash') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(shotstamp.__file__).resolve().parents[1])},
    ).stdout
    assert out.strip() == "[]"
