"""Typed keys for everything the aiohttp application holds."""

from __future__ import annotations

import asyncio

from aiohttp import web

from shotstamp_service.anchors import AnchorRunner
from shotstamp_service.config import Config
from shotstamp_service.http.ratelimit import RateLimiter
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import SigningKeys
from shotstamp_service.matching.pool import FingerprintPool
from shotstamp_service.metrics import Metrics
from shotstamp_service.registry import Registry
from shotstamp_service.store import Store
from shotstamp_service.webhooks.dispatcher import WebhookDispatcher

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
