"""Per-key rate limits over HTTP: 429 with Retry-After (the buckets: tests/unit/service)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.kit import imagegen


@pytest.fixture
def service_config(service_config):
    # Slow refills (one token per 4 s): a crowded machine's slow uploads must not refill the bucket
    # between the test's requests, or the 429 it expects never comes.
    return dataclasses.replace(
        service_config, upload_rate=0.25, upload_burst=2, read_rate=0.25, read_burst=3
    )


async def test_uploads_over_the_limit_get_429_with_retry_after(service):
    acme, other = await service.key("acme"), await service.key("other")
    statuses = [(await service.upload(acme, imagegen.jpeg(40 + n))).status for n in range(2)]
    assert statuses == [201, 201]
    resp = await service.upload(acme, imagegen.jpeg(42))
    assert resp.status == 429
    body = await resp.json()
    assert body["error"] == "rate_limited"
    assert "0.25 requests per second" in body["message"] and "bursts of 2" in body["message"]
    retry_after = int(resp.headers["Retry-After"])
    assert retry_after >= 1 and body["retry_after"] == retry_after
    # Checks draw on the same upload budget; another key has its own.
    assert (await service.upload(acme, imagegen.jpeg(43), path="/v1/checks")).status == 429
    assert (await service.upload(other, imagegen.jpeg(44))).status == 201
    # Reads have their own budget.
    resp = await service.client.get("/v1/registrations/nope", headers=service.auth(acme))
    assert resp.status == 404
    # Honouring Retry-After works.
    await asyncio.sleep(retry_after)
    assert (await service.upload(acme, imagegen.jpeg(45))).status == 201


async def test_reads_over_the_limit_get_429_but_public_endpoints_do_not(service):
    acme = await service.key("acme")
    statuses = [
        (await service.client.get("/v1/registrations/x", headers=service.auth(acme))).status
        for _ in range(4)
    ]
    assert statuses == [404, 404, 404, 429]
    for path in ("/healthz", "/v1/keys", "/v1/checkpoints/latest", "/v1/config"):
        assert (await service.client.get(path)).status == 200


async def test_a_refused_key_is_401_not_429(service):
    for _ in range(5):
        resp = await service.client.get(
            "/v1/registrations/x", headers=service.auth("ss_000000000000_nope")
        )
        assert resp.status == 401
