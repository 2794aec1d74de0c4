"""Small real HTTP servers that answer like a struggling service: the SDK's retry tests."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from shotstamp import RetryPolicy

REG = {
    "id": "01FLAKY",
    "seller": "acme",
    "sha256": "ab" * 32,
    "perceptual": {"phash": "0123456789abcdef"},
    "received_at": "2025-01-02T03:04:05.123456Z",
    "status": "pending",
}
FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05)


class Script:
    """Answers requests from a list of (status, body, headers), then repeats the last."""

    def __init__(self, *answers: tuple[int, object, dict[str, str]]) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[float, str, dict[str, str], int]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((time.monotonic(), request.path, dict(request.headers), len(body)))
        status, payload, headers = self.answers[min(len(self.seen), len(self.answers)) - 1]
        if isinstance(payload, float):  # a delay, then the next answer
            await asyncio.sleep(payload)
            status, payload, headers = self.answers[-1]
        return web.json_response(payload, status=status, headers=headers)


async def serve(aiohttp_server, script: Script) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")
