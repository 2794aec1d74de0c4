"""Retries, backoff and idempotency, with faults injected by small real HTTP servers.

The servers here are in-process aiohttp applications on real sockets that answer
the way a struggling service or proxy does (503, 429, a dropped connection);
waiting out a Retry-After and a proxy in front of the real service are in
tests/integration/client/test_retries.py.
"""

from __future__ import annotations

import time

import pytest

from shotstamp import (
    AsyncClient,
    RateLimited,
    RetryPolicy,
    ServerError,
    TransportError,
)
from tests.kit.faultserver import FAST, REG, Script, serve


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
