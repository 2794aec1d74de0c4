"""The real `shotstamp-service` and `shotstamp` commands, run as processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import imagegen

BIN = Path(sys.executable).parent


def command(name: str) -> list[str]:
    """The installed console script, or its module when run from a source tree."""
    script = BIN / name
    if script.exists():
        return [str(script)]
    module = {"shotstamp-service": "shotstamp_service", "shotstamp": "shotstamp.cli"}[name]
    return [sys.executable, "-m", module]


def run(
    name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str,
    url: str,
    *,
    key: str | None = None,
    body: bytes | None = None,
    content_type: str | None = None,
) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_keys_create_prints_only_the_key_and_list_hides_secrets(tmp_path):
    data = tmp_path / "data"
    created = run(
        "shotstamp-service", "--data-dir", str(data), "keys", "create", "--seller", "acme"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n"
    assert key.startswith("ss_")
    staff = run(
        "shotstamp-service",
        "--data-dir",
        str(data),
        "keys",
        "create",
        "--seller",
        "desk",
        "--role",
        "staff",
    )
    assert staff.returncode == 0
    listed = run("shotstamp-service", "--data-dir", str(data), "keys", "list")
    assert listed.returncode == 0
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {(r["seller"], r["role"]) for r in rows} == {("acme", "seller"), ("desk", "staff")}
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    # Stored hashed: the secret appears nowhere in the database file.
    for stored in data.glob("shotstamp.db*"):
        assert key.encode() not in stored.read_bytes()
    key_id = key.split("_")[1]
    revoked = run("shotstamp-service", "--data-dir", str(data), "keys", "revoke", key_id)
    assert revoked.returncode == 0
    again = run("shotstamp-service", "--data-dir", str(data), "keys", "revoke", key_id)
    assert again.returncode == 1


def test_env_var_selects_the_data_dir(tmp_path):
    data = tmp_path / "from-env"
    result = run(
        "shotstamp-service",
        "keys",
        "create",
        "--seller",
        "acme",
        env={"SHOTSTAMP_DATA_DIR": str(data)},
    )
    assert result.returncode == 0, result.stderr
    assert (data / "shotstamp.db").exists()


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    key = run(
        "shotstamp-service", "--data-dir", str(data), "keys", "create", "--seller", "acme"
    ).stdout.strip()
    proc = subprocess.Popen(
        [
            *command("shotstamp-service"),
            "--data-dir",
            str(data),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            status, _ = http("GET", f"{base}/healthz")
            if status == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"service did not start (exit {proc.poll()}):\n{out}")
        time.sleep(0.1)
    yield {"base": base, "key": key, "proc": proc, "data": data}
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_registers_and_the_cli_verifies_the_proof(server, tmp_path):
    base, key = server["base"], server["key"]
    photo = imagegen.jpeg(21)
    body, ctype = multipart(photo)
    status, reg = http(
        "POST", f"{base}/v1/registrations?wait=true", key=key, body=body, content_type=ctype
    )
    assert status == 201, reg
    (key_file,) = (server["data"] / "keys").glob("signing-*.key")
    assert key_file.stat().st_mode & 0o777 == 0o600

    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(reg["proof"]))
    _, keys = http("GET", f"{base}/v1/keys")
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(keys))
    image_file = tmp_path / "photo.jpg"
    image_file.write_bytes(photo)

    ok = run(
        "shotstamp",
        "verify",
        str(proof_file),
        "--key",
        keys["keys"][0]["vkey"],
        "--image",
        str(image_file),
    )
    assert ok.returncode == 0, ok.stderr
    assert "VERIFIED" in ok.stdout and reg["id"] in ok.stdout
    ok = run("shotstamp", "verify", str(proof_file), "--key", str(keys_file))
    assert ok.returncode == 0, ok.stderr

    other = tmp_path / "other.jpg"
    other.write_bytes(imagegen.jpeg(22))
    bad = run(
        "shotstamp", "verify", str(proof_file), "--key", str(keys_file), "--image", str(other)
    )
    assert bad.returncode == 1
    assert "FAILED image" in bad.stderr

    tampered = dict(reg["proof"], tree_size=reg["proof"]["tree_size"] + 1)
    proof_file.write_text(json.dumps(tampered))
    bad = run("shotstamp", "verify", str(proof_file), "--key", str(keys_file))
    assert bad.returncode == 1 and "FAILED tree-size" in bad.stderr

    proof_file.write_text("{not json")
    bad = run("shotstamp", "verify", str(proof_file), "--key", str(keys_file))
    assert bad.returncode == 3
    missing_key = run("shotstamp", "verify", str(proof_file))
    assert missing_key.returncode == 2


def test_sigterm_stops_gracefully_and_seals_what_is_pending(server):
    base, key, proc = server["base"], server["key"], server["proc"]
    ids = []
    for seed in range(30, 34):
        body, ctype = multipart(imagegen.jpeg(seed))
        status, reg = http(
            "POST", f"{base}/v1/registrations", key=key, body=body, content_type=ctype
        )
        assert status == 201
        ids.append(reg["id"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    conn = sqlite3.connect(server["data"] / "shotstamp.db")
    rows = dict(conn.execute("SELECT id, leaf_index FROM registrations").fetchall())
    conn.close()
    assert set(rows) == set(ids)
    assert all(index is not None for index in rows.values())
