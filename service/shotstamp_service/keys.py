"""Typed keys for everything the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from .config import Config
from .pool import FingerprintPool
from .registry import Registry
from .sealer import Sealer
from .signer import LogSigner
from .store import Store
from .webhooks import WebhookDispatcher

__all__ = ["CONFIG", "POOL", "REGISTRY", "SEALER", "SIGNER", "STORE", "WEBHOOKS"]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
SIGNER = web.AppKey("signer", LogSigner)
SEALER = web.AppKey("sealer", Sealer)
REGISTRY = web.AppKey("registry", Registry)
POOL = web.AppKey("pool", FingerprintPool)
WEBHOOKS = web.AppKey("webhooks", WebhookDispatcher)
