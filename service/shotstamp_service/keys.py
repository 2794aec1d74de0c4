"""Typed keys for everything the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from .config import Config
from .pool import FingerprintPool
from .registry import Registry
from .sealer import Sealer
from .signer import SigningKeys
from .store import Store
from .webhooks import WebhookDispatcher

__all__ = ["CONFIG", "POOL", "REGISTRY", "SEALER", "SIGNING_KEYS", "STORE", "WEBHOOKS"]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
SIGNING_KEYS = web.AppKey("signing_keys", SigningKeys)
SEALER = web.AppKey("sealer", Sealer)
REGISTRY = web.AppKey("registry", Registry)
POOL = web.AppKey("pool", FingerprintPool)
WEBHOOKS = web.AppKey("webhooks", WebhookDispatcher)
