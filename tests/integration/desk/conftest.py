"""The dispute desk under test: a real `shotstamp-service serve` process and a real Chromium.

Browser: Debian's chromium driven by Playwright (its own driver; never
`playwright install`). Without them the browser tests are skipped, unless
SHOTSTAMP_REQUIRE_BROWSER=1 (set by .ci/run), where they fail instead: CI
must never pass by skipping the desk.

Screenshots go to test-artifacts/desk/ at the top of the repository.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kit import ROOT

ARTIFACTS = ROOT / "test-artifacts" / "desk"
CHROMIUM = os.environ.get("SHOTSTAMP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 900}  # a common laptop screen


def _service_command() -> list[str]:
    script = Path(sys.executable).parent / "shotstamp-service"
    return [str(script)] if script.exists() else [sys.executable, "-m", "shotstamp_service"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DeskServer:
    base: str
    staff: str
    acme: str
    globex: str
    data: Path

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def upload(self, key: str, data: bytes, path: str = "/v1/registrations?wait=true") -> Any:
        boundary = uuid.uuid4().hex
        body = (
            (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.request(
            "POST",
            path,
            key=key,
            body=body,
            content_type=f"multipart/form-data; boundary={boundary}",
        )

    def register(self, key: str, data: bytes) -> dict[str, Any]:
        status, body = self.upload(key, data)
        assert status == 201, body
        assert body["status"] == "sealed", body
        return body

    def vkeys(self) -> list[str]:
        status, body = self.request("GET", "/v1/keys")
        assert status == 200
        return [k["vkey"] for k in body["keys"]]


def _create_keys(data: Path, *specs: tuple[str, str]) -> list[str]:
    """API keys for (seller, role) pairs, stored as `keys create` stores them.

    In this process, through the service's own store: each `shotstamp-service`
    run pays the service's whole import time, seconds on a busy machine.
    """
    from shotstamp_service.config import Config
    from shotstamp_service.http.app import make_store
    from shotstamp_service.http.auth import issue_key

    async def create() -> list[str]:
        store = make_store(Config(data_dir=data))
        await store.open()
        try:
            secrets = []
            for seller, role in specs:
                secret, record = issue_key(seller, role)  # type: ignore[arg-type]
                await store.add_api_key(record)
                secrets.append(secret)
            return secrets
        finally:
            await store.close()

    # On a thread of its own: Playwright's sync API may hold this thread's loop.
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, create()).result()


@pytest.fixture(scope="module")
def desk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeskServer]:
    """One service process per test module, as an operator would run it."""
    data = tmp_path_factory.mktemp("desk") / "data"
    staff, acme, globex = _create_keys(
        data, ("dana", "staff"), ("acme", "seller"), ("globex", "seller")
    )
    port = _free_port()
    log = (data.parent / "service.log").open("w")
    proc = subprocess.Popen(
        [*_service_command(), "--data-dir", str(data), "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SHOTSTAMP_SEAL_INTERVAL": "0.05", "SHOTSTAMP_FINGERPRINT_WORKERS": "1"},
    )
    server = DeskServer(f"http://127.0.0.1:{port}", staff, acme, globex, data)
    deadline = time.monotonic() + 60
    while True:
        try:
            if server.request("GET", "/healthz")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(
                f"service did not start:\n{(data.parent / 'service.log').read_text()}"
            )
        time.sleep(0.1)
    yield server
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright, or a skip (a failure when it is required).

    Module-scoped: Playwright's sync API keeps an event loop of its own
    running while it is open, which the asyncio tests of other modules must
    not find there.
    """
    required = os.environ.get("SHOTSTAMP_REQUIRE_BROWSER") == "1"
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "the 'playwright' package is not installed (pip install -e '.[dev]')"
    if problem is None and not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        problem = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if problem is not None:
        if required:
            pytest.fail(f"SHOTSTAMP_REQUIRE_BROWSER=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any, desk_server: DeskServer) -> Iterator[Any]:
    """A fresh browser context (empty session storage) on a laptop-sized window.

    Fails the test if the page throws an uncaught JavaScript error.
    """
    context = chromium.new_context(viewport=VIEWPORT, base_url=desk_server.base)
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@dataclass
class Desk:
    """The desk page in a browser, beside the service it talks to."""

    page: Any
    server: DeskServer

    def open(self) -> None:
        self.page.goto("/desk")
        self.page.locator("body[data-ready]").wait_for(state="attached")

    def sign_in(self, key: str | None = None) -> None:
        self.open()
        self.page.get_by_label("Staff API key").fill(key or self.server.staff)
        self.page.get_by_role("button", name="Use this key").click()
        self.page.locator("#main").wait_for(state="visible")

    def screenshot(self, name: str) -> Path:
        """Keep what the page looked like as a test artifact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def desk(page: Any, desk_server: DeskServer) -> Desk:
    return Desk(page, desk_server)
