"""Typed keys for everything the aiohttp application holds."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .anchors import AnchorRunner
from .config import Config
from .metrics import Metrics
from .pool import FingerprintPool
from .ratelimit import RateLimiter
from .registry import Registry
from .sealer import Sealer
from .signer import SigningKeys
from .store import Store
from .webhooks import WebhookDispatcher

__all__ = [
    "ANCHORS",
    "CONFIG",
    "METRICS",
    "POOL",
    "RATE_LIMITER",
    "REGISTRY",
    "SEALER",
    "SIGNING_KEYS",
    "STORE",
    "UPLOAD_SLOTS",
    "WEBHOOKS",
]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
SIGNING_KEYS = web.AppKey("signing_keys", SigningKeys)
SEALER = web.AppKey("sealer", Sealer)
REGISTRY = web.AppKey("registry", Registry)
POOL = web.AppKey("pool", FingerprintPool)
WEBHOOKS = web.AppKey("webhooks", WebhookDispatcher)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
UPLOAD_SLOTS = web.AppKey("upload_slots", asyncio.Semaphore)
ANCHORS = web.AppKey("anchors", AnchorRunner)
METRICS = web.AppKey("metrics", Metrics)
