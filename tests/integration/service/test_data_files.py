"""The data directory holds secrets (webhook secrets in the database, private keys):
nothing in it may be readable by group or others, whatever the umask.

Issue 19, item 12: under umask 022 the SQLite database and its -wal/-shm came
out 0644, with every webhook secret in plain text.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shotstamp_service.config import Config
from tests.kit import imagegen


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Every path under `root` (and root itself, as "."), with its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


async def start(config: Config, aiohttp_client):
    from shotstamp_service.http.app import create_app
    from tests.kit.servicekit import Service

    app = create_app(config)
    return Service(client=await aiohttp_client(app), app=app)


async def test_a_fresh_data_directory_is_private_under_umask_022(
    tmp_path, aiohttp_client, umask_022
):
    data = tmp_path / "data"
    config = Config(data_dir=data, seal_interval=0.2, fingerprint_workers=1, wait_timeout=10)
    service = await start(config, aiohttp_client)
    key = await service.key("acme")
    resp = await service.upload(key, imagegen.jpeg(901), params={"wait": "true"})
    assert resp.status == 201, await resp.text()
    resp = await service.client.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/x"}, headers=service.auth(key)
    )
    assert resp.status == 201
    assert (await resp.json())["secret"].encode() in b"".join(
        p.read_bytes() for p in data.glob("shotstamp.db*")
    )  # the secret is on disk: hence the modes below

    found = modes(data)
    assert {"shotstamp.db", "shotstamp.db-wal", "shotstamp.db-shm", "keys"} <= set(found)
    assert any(name.startswith("keys/") and name.endswith(".key") for name in found)
    loose = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert loose == {}


async def test_files_left_readable_are_made_private_at_start_and_logged(
    tmp_path, aiohttp_client, umask_022, caplog
):
    from shotstamp_service.log.signer import write_new_key

    data = tmp_path / "data"
    data.mkdir()
    key_file, _ = write_new_key(data / "keys", Config().origin)
    sqlite3.connect(data / "shotstamp.db").close()  # as an older release left it: 0644
    for path, mode in [(data, 0o755), (data / "keys", 0o755), (key_file, 0o640)]:
        path.chmod(mode)
    unrelated = data / "notes.txt"
    unrelated.write_text("the operator's own file")
    unrelated.chmod(0o644)
    assert stat.S_IMODE((data / "shotstamp.db").stat().st_mode) == 0o644

    caplog.set_level(logging.WARNING, logger="shotstamp_service.files")
    config = Config(data_dir=data, seal_interval=0.2, fingerprint_workers=1, wait_timeout=10)
    service = await start(config, aiohttp_client)
    assert (await service.client.get("/healthz")).status == 200

    found = modes(data)
    assert found["."] == 0o700 and found["keys"] == 0o700
    assert found["shotstamp.db"] == 0o600 and found[f"keys/{key_file.name}"] == 0o600
    assert found["notes.txt"] == 0o644  # not the service's: left alone
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for name, was in [("data", "755"), ("keys", "755"), (key_file.name, "640")]:
        assert f"{name} private: mode" in logged and f"was {was}" in logged, logged
    assert "shotstamp.db private: mode 600, was 644" in logged


def test_the_cli_creates_a_private_database_under_umask_022(tmp_path, umask_022):
    from tests.kit.processes import run

    data = tmp_path / "data"
    made = run("shotstamp-service", "--data-dir", str(data), "keys", "create", "--seller", "a")
    assert made.returncode == 0, made.stderr
    found = modes(data)
    assert "shotstamp.db" in found
    assert {name: oct(mode) for name, mode in found.items() if mode & 0o077} == {}


def test_the_service_process_runs_under_a_private_umask(tmp_path, umask_022):
    """Files the service creates without an explicit mode are private too."""
    probe = tmp_path / "probe"
    # `serve` replaced by one that creates a file the plain way.
    code = (
        "import sys; from shotstamp_service import cli; "
        "cli._serve = lambda config: open(sys.argv[1], 'w').close() or 0; "
        "sys.exit(cli.main(['--data-dir', sys.argv[2], 'serve']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(probe), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(probe.stat().st_mode) == 0o600
