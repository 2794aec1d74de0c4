"""Real `shotstamp-service` processes on a free port, for the CLI and the sync client.

The in-process `service` fixture cannot serve a blocking caller on the test's
own event loop; these run the service as its users do, in its own process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent

# Fast seals and one fingerprint worker keep tests quick; webhooks may call
# the test's own receivers on 127.0.0.1.
TEST_ENV = {
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


@dataclass
class ServiceProcess:
    url: str
    data: Path
    proc: subprocess.Popen[str]

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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_service(data: Path, *, port: int | None = None, env: dict[str, str] | None = None):
    port = port or free_port()
    # To a file, not a pipe: nobody reads a pipe while the tests run, and a full
    # one would stall the service.
    log = data.parent / f"{data.name}-service.log"
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
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **TEST_ENV, **(env or {})},
    )
    service = ServiceProcess(f"http://127.0.0.1:{port}", data, proc)
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
