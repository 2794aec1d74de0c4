"""Retries, backoff and idempotency, with faults injected by small real HTTP servers.

The servers here are real aiohttp applications on real sockets that answer
the way a struggling service or proxy does (503, 429, a dropped connection);
the last test puts one in front of the real service.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web

from shotstamp import (
    AsyncClient,
    RateLimited,
    RetryPolicy,
    ServerError,
    TransportError,
)
from tests.kit import imagegen

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


async def test_503_then_201_retries_with_the_same_idempotency_key(aiohttp_server):
    script = Script(
        (503, {"error": "unavailable", "message": "storage down"}, {"Retry-After": "0"}),
        (201, REG, {}),
    )
    url = await serve(aiohttp_server, script)
    async with AsyncClient(url, api_key="k", retries=FAST) as client:
        reg = await client.register(b"photo bytes", title="kettle")
    assert reg.id == "01FLAKY" and reg.created
    assert len(script.seen) == 2
    keys = [headers["Idempotency-Key"] for _, _, headers, _ in script.seen]
    assert keys[0] == keys[1] and keys[0].startswith("ik_")
    assert script.seen[0][3] == script.seen[1][3] > len(b"photo bytes")  # the whole upload again
    # A new logical upload gets a new key.
    async with AsyncClient(url, api_key="k", retries=FAST) as client:
        await client.register(b"photo bytes")
    assert script.seen[2][2]["Idempotency-Key"] != keys[0]


async def test_429_waits_at_least_retry_after(aiohttp_server):
    script = Script(
        (429, {"error": "rate_limited", "message": "slow down"}, {"Retry-After": "1"}),
        (201, REG, {}),
    )
    url = await serve(aiohttp_server, script)
    async with AsyncClient(url, api_key="k", retries=FAST) as client:
        await client.register(b"x")
    (first, *_), (second, *_) = script.seen
    assert second - first >= 1.0


async def test_retry_after_beyond_the_limit_raises_rate_limited_at_once(aiohttp_server):
    script = Script((429, {"error": "rate_limited", "message": "later"}, {"Retry-After": "600"}))
    url = await serve(aiohttp_server, script)
    policy = RetryPolicy(retries=3, backoff=0.01, max_retry_after=60)
    async with AsyncClient(url, api_key="k", retries=policy) as client:
        with pytest.raises(RateLimited) as info:
            await client.get("x")
    assert info.value.retry_after == 600 and len(script.seen) == 1


async def test_persistent_503_gives_up_after_the_retries(aiohttp_server):
    script = Script((503, {"error": "unavailable", "message": "down"}, {}))
    url = await serve(aiohttp_server, script)
    async with AsyncClient(url, api_key="k", retries=FAST) as client:
        with pytest.raises(ServerError) as info:
            await client.get("x")
    assert info.value.status == 503 and len(script.seen) == 4
    gaps = [b[0] - a[0] for a, b in zip(script.seen, script.seen[1:], strict=False)]
    assert all(gap >= 0.005 for gap in gaps)


async def test_500_is_not_retried_nor_is_a_webhook_create_on_502(aiohttp_server):
    script = Script((500, {"error": "internal", "message": "bug"}, {}))
    url = await serve(aiohttp_server, script)
    async with AsyncClient(url, api_key="k", retries=FAST) as client:
        with pytest.raises(ServerError):
            await client.get("x")
    assert len(script.seen) == 1
    gateway = Script((502, {"error": "bad_gateway", "message": "upstream"}, {}))
    url = await serve(aiohttp_server, gateway)
    async with AsyncClient(url, api_key="k", retries=FAST) as client:
        with pytest.raises(ServerError):
            await client.create_webhook("https://example.com/hook")
        assert len(gateway.seen) == 1  # might have been created: not sent twice
        with pytest.raises(ServerError):
            await client.webhooks()
        assert len(gateway.seen) == 5  # a read is retried


async def test_a_timeout_is_retried_for_an_idempotent_request(aiohttp_server):
    script = Script((200, 2.0, {}), (200, {"webhooks": []}, {}))
    url = await serve(aiohttp_server, script)
    async with AsyncClient(url, api_key="k", timeout=0.3, retries=FAST) as client:
        assert await client.webhooks() == []
    assert len(script.seen) == 2


async def test_connection_refused_is_a_transport_error_after_retries():
    from tests.kit.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    async with AsyncClient(url, api_key="k", retries=FAST) as client:
        with pytest.raises(TransportError) as info:
            await client.create_webhook("https://example.com/hook")
    assert info.value.maybe_sent is False  # so even this POST was safe to retry
    assert "cannot connect" in str(info.value)
    assert time.monotonic() - started < 5


async def test_a_lost_answer_is_retried_without_registering_twice(service, aiohttp_server):
    """A proxy forwards the upload to the real service, then drops the answer."""
    key = await service.key("acme")
    upstream = str(service.client.make_url("")).rstrip("/")
    forwarded: list[tuple[str, int, str]] = []

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, upstream + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            payload = await answer.read()
            forwarded.append(
                (request.headers.get("Idempotency-Key", ""), answer.status, payload.decode())
            )
            if len(forwarded) == 1:
                # The service registered it; the client never hears so.
                assert request.transport is not None
                request.transport.close()
                raise asyncio.CancelledError
            return web.Response(body=payload, status=answer.status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    server = await aiohttp_server(app)
    photo = imagegen.jpeg(301)
    async with AsyncClient(
        str(server.make_url("")).rstrip("/"), api_key=key, retries=FAST
    ) as client:
        reg = await client.register(photo)
    (key1, status1, body1), (key2, status2, body2) = forwarded
    assert key1 == key2
    assert (status1, status2) == (201, 200)
    assert json.loads(body1)["id"] == json.loads(body2)["id"] == reg.id
    health = await (await service.client.get("/healthz")).json()
    assert health["indexed"] == 1
