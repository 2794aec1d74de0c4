"""Who is calling: the API key of a request, charged against its rate budget (every handler,
the desk's included, starts here)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from shotstamp_service.http.auth import Principal, authenticate, parse_bearer
from shotstamp_service.http.errors import ApiError
from shotstamp_service.http.keys import RATE_LIMITER, STORE
from shotstamp_service.http.ratelimit import RateLimiter

__all__ = ["require_principal"]


async def require_principal(
    request: web.Request, budget: Literal["read", "upload"] = "read"
) -> Principal:
    """The caller's key, charged one request against its `budget` (429 when spent)."""
    token = parse_bearer(request.headers.get("Authorization"))
    if token is None:
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'")
    principal = await authenticate(request.app[STORE], token)
    if principal is None:
        raise ApiError(401, "unauthorized", "the API key is unknown or revoked")
    limiter = request.app[RATE_LIMITER]
    wait = limiter.take(principal.key_id, budget)
    if wait > 0:
        limit = limiter.budgets[budget]
        raise ApiError(
            429,
            "rate_limited",
            f"this key is over its {budget} limit of {limit.rate:g} requests per second "
            f"(bursts of {limit.burst}); retry in {wait:.2f} s",
            retry_after=RateLimiter.retry_after(wait),
        )
    return principal
