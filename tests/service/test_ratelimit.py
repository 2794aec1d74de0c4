"""Per-key rate limits: token buckets, and 429 with Retry-After over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from shotstamp_service.config import Config
from shotstamp_service.http.ratelimit import Budget, RateLimiter
from tests.kit import imagegen


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate():
    clock = Clock()
    limiter = RateLimiter({"upload": Budget(rate=2.0, burst=3)}, clock)
    assert [limiter.take("k", "upload") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k", "upload")
    assert wait == pytest.approx(0.5)  # one token at 2 per second
    clock.now += 0.5
    assert limiter.take("k", "upload") == 0.0
    assert limiter.take("k", "upload") == pytest.approx(0.5)
    clock.now += 60  # a long pause banks only the burst
    assert [limiter.take("k", "upload") for _ in range(4)][-1] > 0


def test_keys_and_budgets_have_separate_buckets():
    clock = Clock()
    limiter = RateLimiter({"upload": Budget(1.0, 1), "read": Budget(1.0, 1)}, clock)
    assert limiter.take("a", "upload") == 0.0
    assert limiter.take("a", "upload") > 0
    assert limiter.take("b", "upload") == 0.0
    assert limiter.take("a", "read") == 0.0


def test_rate_zero_is_unlimited():
    limiter = RateLimiter({"upload": Budget(0, 0)}, Clock())
    assert all(limiter.take("k", "upload") == 0.0 for _ in range(10_000))


def test_retry_after_is_whole_seconds_rounded_up():
    assert RateLimiter.retry_after(0.001) == 1
    assert RateLimiter.retry_after(1.0) == 1
    assert RateLimiter.retry_after(1.2) == 2


def test_limits_come_from_the_environment():
    config = Config.from_env(
        {
            "SHOTSTAMP_UPLOAD_RATE": "5",
            "SHOTSTAMP_UPLOAD_BURST": "7",
            "SHOTSTAMP_READ_RATE": "0",
            "SHOTSTAMP_READ_BURST": "9",
        }
    )
    assert (config.upload_rate, config.upload_burst) == (5.0, 7)
    assert (config.read_rate, config.read_burst) == (0.0, 9)


@pytest.fixture
def service_config(service_config):
    return dataclasses.replace(
        service_config, upload_rate=1.0, upload_burst=2, read_rate=1.0, read_burst=3
    )


async def test_uploads_over_the_limit_get_429_with_retry_after(service):
    acme, other = await service.key("acme"), await service.key("other")
    statuses = [(await service.upload(acme, imagegen.jpeg(40 + n))).status for n in range(2)]
    assert statuses == [201, 201]
    resp = await service.upload(acme, imagegen.jpeg(42))
    assert resp.status == 429
    body = await resp.json()
    assert body["error"] == "rate_limited"
    assert "1 requests per second" in body["message"] and "bursts of 2" in body["message"]
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
