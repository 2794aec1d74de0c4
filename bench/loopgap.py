"""How long hostile upload bodies hold the event loop (issue 19, item 4).

    .venv/bin/python bench/loopgap.py              # every body below
    .venv/bin/python bench/loopgap.py preamble     # the bodies whose name holds a word

Starts the service in this process (SQLite, one fingerprint worker), sends
each body to `POST /v1/checks` over a real socket as fast as loopback takes
it, and prints the answer and its time, the longest the event loop went
without running a 5 ms ticker while it was sent and answered (the time any
other request would have waited), and this process's CPU seconds. The
machine is shared: a gap of tens of milliseconds is the scheduler, not the
service; compare the rows of one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.kit

from aiohttp.test_utils import TestServer

from shotstamp_service.http.app import create_app
from shotstamp_service.http.auth import issue_key
from shotstamp_service.http.keys import STORE
from tests.kit import imagegen
from tests.kit.rawhttp import read_answer, request_head
from tests.kit.servicekit import service_settings


def _bodies(boundary: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    image = imagegen.jpeg(5, (2000, 1500))
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    end = f"\r\n--{boundary}--\r\n".encode()
    unknown = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'.encode()
    lookalikes = (b"\r\n--" + b"z" * 60) * ((20 << 20) // 64)
    inner = part + b"x" * (2 << 20) + end
    chunked = b"".join(b"1\r\n" + inner[i : i + 1] + b"\r\n" for i in range(len(inner)))
    return {
        "a normal 2000x1500 JPEG": (part + image + end, {}),
        "200,000 unknown fields": (unknown * 200_000 + part + image + end, {}),
        "preamble of 4 M empty lines": (b"\r\n" * (4 << 20) + part + image + end, {}),
        "preamble of 4 M short lines": (b"a\n" * (4 << 20) + part + image + end, {}),
        "epilogue of 4 M short lines": (part + image + end + b"a\n" * (4 << 20), {}),
        "20 MB image of boundary look-alikes": (part + lookalikes + end, {}),
        "2 MB in 1-byte HTTP chunks": (
            chunked + b"0\r\n\r\n",
            {"Transfer-Encoding": "chunked"},
        ),
    }


async def _send(port: int, head: bytes, body: bytes) -> tuple[str, float, float, float]:
    worst = 0.0

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.005)
            last = now

    ticker = asyncio.create_task(tick())
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(head)
        for start in range(0, len(body), 1 << 20):
            writer.write(body[start : start + (1 << 20)])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        answer = await asyncio.wait_for(read_answer(reader, started), 120)
        await asyncio.sleep(0.5)  # whatever the server still drains
    finally:
        writer.close()
        ticker.cancel()
    after = resource.getrusage(resource.RUSAGE_SELF)
    spent = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    if answer is None:
        return "closed", time.monotonic() - started, worst, spent
    code = answer.json().get("error", "") if answer.status >= 400 else ""
    return f"{answer.status} {code}".strip(), answer.seconds, worst, spent


async def main(only: list[str]) -> None:
    app = create_app(service_settings(Path(tempfile.mkdtemp())))
    server = TestServer(app)
    await server.start_server()
    secret, record = issue_key("bench", "seller")
    await app[STORE].add_api_key(record)
    boundary = uuid.uuid4().hex
    print("| body | MB | answer | answered in | longest loop gap | CPU s (service + sender) |")
    print("|---|---|---|---|---|---|")
    try:
        for name, (body, extra) in _bodies(boundary).items():
            if only and not any(word in name for word in only):
                continue
            headers = {
                "Authorization": f"Bearer {secret}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                **extra,
            }
            length = None if extra else len(body)
            head = request_head("POST", "/v1/checks", headers, length)
            status, seconds, worst, cpu = await _send(server.port, head, body)
            print(
                f"| {name} | {len(body) / 1e6:.1f} | {status} | {seconds:.2f} s "
                f"| {worst * 1000:.0f} ms | {cpu:.2f} |",
                flush=True,
            )
    finally:
        await server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
