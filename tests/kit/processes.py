"""Real `shotstamp-service` processes on a free port, and a small HTTP client for them.

The in-process `service` fixture cannot serve a blocking caller on the test's
own event loop, nor be killed; these run the service as its users do, in its
own process. Plain `urllib` on purpose: callers run in threads beside the
processes, with no event loop of their own.
"""

from __future__ import annotations

import asyncio
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent

# Fast seals, one serving process and one fingerprint worker keep tests quick
# (tests of several processes ask for them); webhooks may call the test's own
# receivers on 127.0.0.1.
TEST_ENV = {
    "SHOTSTAMP_PROCESSES": "1",
    "SHOTSTAMP_SEAL_INTERVAL": "0.2",
    "SHOTSTAMP_FINGERPRINT_WORKERS": "1",
    "SHOTSTAMP_WAIT_TIMEOUT": "10",
    "SHOTSTAMP_WEBHOOK_ALLOW_PRIVATE": "1",
    "SHOTSTAMP_WEBHOOK_RETRY_BASE": "0.2",
}


def command(name: str) -> list[str]:
    """The installed console script, or its module when run from a source tree."""
    script = BIN / name
    if script.exists():
        return [str(script)]
    module = {"shotstamp-service": "shotstamp_service", "shotstamp": "shotstamp.cli"}[name]
    return [sys.executable, "-m", module]


def run(
    name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
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
    timeout: float = 30,
) -> tuple[int, Any]:
    """(status, parsed JSON body, or text) of one request; URLError if nobody answers."""
    request = urllib.request.Request(url, data=body, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _parse(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _parse(exc.read())


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def multipart(data: bytes, **fields: str) -> tuple[bytes, str]:
    """A multipart body with `data` in the `image` field; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    body += (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class ServiceProcess:
    url: str
    data: Path
    proc: subprocess.Popen[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)  # extra environment, e.g. the database

    def key(self, seller: str, role: str = "seller") -> str:
        created = run(
            "shotstamp-service",
            "--data-dir",
            str(self.data),
            "keys",
            "create",
            "--seller",
            seller,
            "--role",
            role,
            env=self.env,
        )
        assert created.returncode == 0, created.stderr
        return created.stdout.strip()

    def get(self, path: str, key: str | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def health(self) -> dict[str, Any] | None:
        """The /healthz body, or None when the process does not answer."""
        try:
            status, body = http("GET", f"{self.url}/healthz", timeout=5)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return body if status == 200 else None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final seal; its connections simply drop."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_service(
    data: Path, *, port: int | None = None, env: dict[str, str] | None = None
) -> ServiceProcess:
    port = port or free_port()
    # To a file, not a pipe: nobody reads a pipe while the tests run, and a full
    # one would stall the service.
    log = data.parent / f"{data.name}-service.log"
    # The child writes through its own copy of the descriptor: ours is closed at once.
    with log.open("a") as out:
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
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **TEST_ENV, **(env or {})},
        )
    service = ServiceProcess(f"http://127.0.0.1:{port}", data, proc, log, dict(env or {}))
    deadline = time.monotonic() + 60
    while True:
        try:
            status, _ = service.get("/healthz")
            if status == 200:
                return service
        except (urllib.error.URLError, ConnectionError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = log.read_text()
            raise AssertionError(f"service did not start (exit {proc.poll()}):\n{out}")
        time.sleep(0.1)


@dataclass
class Backend:
    """The store a process uses: the data dir's SQLite file, or a PostgreSQL database.

    `key_dir` is where the service finds its signing keys: the data directory's
    own on SQLite; on PostgreSQL a directory every replica shares, holding one
    key made beforehand (replicas sharing a database never make one).
    """

    kind: str
    data: Path
    key_dir: Path
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a query on the stored data, read behind the service's back."""
        return self._run([sql], fetch=True)

    def execute(self, *statements: str) -> None:
        """Change the stored data behind the service's back, in one transaction."""
        self._run(list(statements), fetch=False)

    def _run(self, statements: list[str], *, fetch: bool) -> list[tuple[Any, ...]]:
        if self.url is None:
            conn = sqlite3.connect(self.data / "shotstamp.db")
            try:
                with conn:
                    results = [conn.execute(sql).fetchall() for sql in statements]
                return results[-1] if fetch else []
            finally:
                conn.close()

        async def run() -> list[tuple[Any, ...]]:
            import asyncpg

            conn = await asyncpg.connect(self.url)
            try:
                async with conn.transaction():
                    if fetch:
                        return [tuple(row) for row in await conn.fetch(statements[-1])]
                    for sql in statements:
                        await conn.execute(sql)
                    return []
            finally:
                await conn.close()

        return asyncio.run(run())

