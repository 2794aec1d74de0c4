"""Per-key rate limits: one token bucket per (API key, budget).

A bucket holds up to `burst` tokens and refills at `rate` tokens per second;
each request takes one. An empty bucket answers how long until the next token,
which the HTTP edge sends as `429` with `Retry-After`. Pure and in memory: the
clock is injected, and buckets live only for keys that have made requests.
Several replicas each enforce the limit on their own (a key can get up to
replicas × rate); a shared limit would need the store, and is not worth a
write per request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Budget", "RateLimiter", "TokenBucket"]


@dataclass(frozen=True)
class Budget:
    rate: float  # tokens per second; 0 means unlimited
    burst: int

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0


@dataclass
class TokenBucket:
    tokens: float
    updated: float

    def take(self, budget: Budget, now: float) -> float:
        """Take a token; 0.0 if there was one, else seconds until there will be."""
        self.tokens = min(float(budget.burst), self.tokens + (now - self.updated) * budget.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / budget.rate


class RateLimiter:
    """Buckets per (key, budget name), created full on a key's first request."""

    def __init__(
        self, budgets: Mapping[str, Budget], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budgets = dict(budgets)
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def take(self, key: str, budget_name: str) -> float:
        """Charge one request to `key`; 0.0 if allowed, else seconds to wait."""
        budget = self.budgets[budget_name]
        if budget.unlimited:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get((key, budget_name))
        if bucket is None:
            bucket = self._buckets[(key, budget_name)] = TokenBucket(float(budget.burst), now)
        return bucket.take(budget, now)

    @staticmethod
    def retry_after(wait: float) -> int:
        """`Retry-After` is whole seconds; round up so a client that honours it succeeds."""
        return max(1, math.ceil(wait))
