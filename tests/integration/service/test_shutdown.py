"""SIGTERM to the whole service: stop accepting, finish what is in flight, seal it, exit 0."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import threading
import time
from typing import Any

import pytest

from shotstamp import verify_proof
from tests.kit import imagegen
from tests.kit.liveserver import LiveServer, http, multipart


def _start_slow_upload(
    port: int, key: str, data: bytes, *, wait: bool
) -> tuple[socket.socket, bytes]:
    """Send the headers and half the body; the handler is then reading the rest."""
    body, ctype = multipart(data)
    head = (
        f"POST /v1/registrations{'?wait=true' if wait else ''} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    half = len(body) // 2
    sock.sendall(head + body[:half])
    return sock, body[half:]


def _finish(sock: socket.socket, rest: bytes) -> tuple[int, dict[str, Any]]:
    sock.sendall(rest)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, json.loads(body)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


@pytest.fixture(params=["1", "2"], ids=["one-process", "two-processes"])
def server(tmp_path, request):
    live = LiveServer(
        tmp_path / "data",
        env={
            "SHOTSTAMP_PROCESSES": request.param,  # two: gunicorn and its workers
            "SHOTSTAMP_FINGERPRINT_WORKERS": "2",
            "SHOTSTAMP_UPLOAD_RATE": "0",
            "SHOTSTAMP_MAX_UPLOADS_PER_KEY": "0",
            "SHOTSTAMP_READ_RATE": "0",
        },
    )
    live.key = live.create_key("acme")  # type: ignore[attr-defined]
    live.start()
    yield live
    live.stop()


def test_sigterm_to_the_process_group_finishes_in_flight_uploads_and_seals_them(server):
    key = server.key
    _, published, _ = http("GET", f"{server.base}/v1/keys")
    vkey = [key["vkey"] for key in published["keys"]]
    slow = [
        _start_slow_upload(server.port, key, imagegen.tiny_jpeg(10_000 + n), wait=n % 2 == 0)
        for n in range(6)
    ]

    burst: list[Any] = []

    def fast(n: int) -> None:
        body, ctype = multipart(imagegen.tiny_jpeg(20_000 + n))
        try:
            burst.append(
                http(
                    "POST",
                    f"{server.base}/v1/registrations",
                    key=key,
                    body=body,
                    content_type=ctype,
                    timeout=60,
                )
            )
        except OSError as exc:  # never connected, or reset before the server took it
            burst.append(exc)

    threads = [threading.Thread(target=fast, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    # What systemd (KillMode=control-group), docker-compose and Ctrl-C do:
    # signal every process of the service, fingerprint workers included.
    server.signal_group(signal.SIGTERM)
    time.sleep(0.5)

    # Stopped accepting: the process is still finishing, but new connections are refused.
    assert server.proc.poll() is None, "the service exited with uploads in flight"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()

    # Every upload in flight gets its whole answer.
    answered = [_finish(sock, rest) for sock, rest in slow]
    for thread in threads:
        thread.join(timeout=60)
    for n, (status, body) in enumerate(answered):
        assert status == 201, body
        if n % 2 == 0:  # ?wait=true: sealed during the shutdown, with its proof
            assert body["status"] == "sealed"
            verify_proof(body["proof"], keys=vkey)

    assert server.wait(timeout=60) == 0
    acknowledged = [body for status, body in answered]
    for outcome in burst:
        if isinstance(outcome, OSError):
            continue
        status, body, _ = outcome
        assert status == 201, body
        acknowledged.append(body)
    assert len(acknowledged) >= len(slow)

    # Every acknowledged upload is sealed in the store, under the final checkpoint.
    conn = sqlite3.connect(server.data_dir / "shotstamp.db")
    rows = dict(conn.execute("SELECT id, leaf_index FROM registrations").fetchall())
    (size,) = conn.execute("SELECT max(tree_size) FROM checkpoints").fetchone()
    conn.close()
    for body in acknowledged:
        assert rows.get(body["id"]) is not None, body["id"]
    assert size == len(rows) and all(index is not None for index in rows.values())
    assert "Traceback" not in server.log()


def test_a_killed_service_leaves_no_orphan_workers(server):
    """SIGKILL of the main process alone (the OOM killer's choice): the forkserver
    and the fingerprint workers must not linger, holding memory, forever."""
    import os

    assert len(server.pids()) >= 3  # main, forkserver, workers (and the resource tracker)
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while server.pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.pids() == []
