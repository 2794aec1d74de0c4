"""Per-key rate limits: the token buckets and their settings (HTTP: tests/integration/service)."""

from __future__ import annotations

import pytest

from shotstamp_service.config import Config
from shotstamp_service.http.ratelimit import Budget, RateLimiter


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
