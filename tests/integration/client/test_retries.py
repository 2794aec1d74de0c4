"""Retries that take time or the real service: a Retry-After waited out, and a proxy in
front of the real service that drops an answer (the rest: tests/unit/client/test_retries.py).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from shotstamp import (
    AsyncClient,
)
from tests.kit import imagegen
from tests.kit.faultserver import FAST, REG, Script, serve


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
