"""The aiohttp application: factory, middlewares and the lifecycle of its parts.

Start-up order (cleanup_ctx, undone in reverse): store → signing keys (the
active key's private half found on disk) → fingerprint pool → registry (index
rebuilt from the store) → sealer → anchors (their own task, never on the
seal path) → webhook dispatcher (stopped first, so its last outbox writes
reach the store).
On shutdown the sealer seals whatever is still pending before the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from . import desk
from .anchors import AnchorRunner, make_anchors
from .config import Config
from .errors import ApiError
from .fingerprint import DecodeLimits, ImageRejected
from .keys import (
    ANCHORS,
    CONFIG,
    POOL,
    RATE_LIMITER,
    REGISTRY,
    SEALER,
    SIGNING_KEYS,
    STORE,
    UPLOAD_SLOTS,
    WEBHOOKS,
)
from .matching import Matcher
from .pool import FingerprintPool
from .ratelimit import Budget, RateLimiter
from .registry import Registry
from .routes import routes
from .sealer import Sealer
from .serve import IN_FLIGHT, InFlight, track_in_flight
from .signer import SigningKeys
from .store import Store, StoreError
from .store.sqlite import SQLiteStore
from .webhooks import WebhookDispatcher

__all__ = ["create_app", "make_signing_keys", "make_store"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_store(config: Config) -> Store:
    return SQLiteStore(config.database_path)


def make_signing_keys(config: Config, store: Store) -> SigningKeys:
    return SigningKeys(
        store,
        config.origin,
        key_dir=config.key_dir,
        key_file=config.signing_key_file,
        legacy_file=config.legacy_key_path,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON `{"error", "message"}`; nothing else leaks."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    try:
        response = await handler(request)
    except ApiError as exc:
        response = web.json_response(exc.body(), status=exc.status)
        if exc.status == 429 and "retry_after" in exc.extra:
            response.headers["Retry-After"] = str(exc.extra["retry_after"])
    except ImageRejected as exc:
        response = web.json_response({"error": exc.code, "message": exc.message}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = web.json_response(
            {"error": code, "message": exc.text or exc.reason}, status=exc.status
        )
        # Keep what the protocol requires of the status, e.g. `Allow` on a 405.
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except StoreError:
        log.exception("store failure on %s %s", request.method, request.path)
        response = web.json_response(
            {"error": "unavailable", "message": "storage is unavailable; retry shortly"},
            status=503,
            headers={"Retry-After": "1"},
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = web.json_response(
            {"error": "internal", "message": f"internal error; request id {request_id}"},
            status=500,
        )
    response.headers["X-Request-Id"] = request_id
    return response


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = make_store(app[CONFIG])
    await store.open()
    app[STORE] = store
    yield
    await store.close()


async def _keys_ctx(app: web.Application) -> AsyncIterator[None]:
    keys = make_signing_keys(app[CONFIG], app[STORE])
    await keys.open()
    app[SIGNING_KEYS] = keys
    yield


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    pool = FingerprintPool(
        config.fingerprint_workers,
        DecodeLimits(max_pixels=config.max_pixels, max_frames=config.max_frames),
        thumbnail_size=config.thumbnail_size if config.thumbnails else None,
    )
    await pool.start()
    app[POOL] = pool
    yield
    pool.close()


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    pool = app[POOL]
    registry = Registry(app[STORE], Matcher(), pool, pool.analyse)
    count = await registry.load_index()
    log.info("index loaded with %d registrations", count)
    app[REGISTRY] = registry
    yield


async def _sealer_ctx(app: web.Application) -> AsyncIterator[None]:
    sealer = Sealer(app[STORE], app[SIGNING_KEYS], interval=app[CONFIG].seal_interval)
    await sealer.load()
    app[SEALER] = sealer
    task = asyncio.create_task(sealer.run(), name="sealer")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # Seal what the last uploads left pending so a clean stop leaves nothing waiting.
    try:
        while await sealer.seal_once() is not None:
            pass
    except Exception:
        log.exception("final seal failed; pending registrations will be sealed at next start")


async def _anchors_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    runner = AnchorRunner(
        app[STORE],
        make_anchors(config),
        retry_base=config.anchor_retry_base,
        retry_max=config.anchor_retry_max,
    )
    await runner.start()
    app[ANCHORS] = runner
    if runner.anchors:
        log.info("anchors: %s", ", ".join(f"{a.name} ({a.kind})" for a in runner.anchors.values()))
    yield
    await runner.stop()


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    dispatcher = WebhookDispatcher(app[STORE], app[CONFIG])
    await dispatcher.start()
    app[WEBHOOKS] = dispatcher
    yield
    await dispatcher.stop()


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[track_in_flight, error_middleware],
        # The upload handler streams multipart itself with its own cap; this only
        # bounds bodies read whole (none are, today).
        client_max_size=config.max_upload_bytes + 65536,
    )
    app[CONFIG] = config
    app[IN_FLIGHT] = InFlight()
    app[RATE_LIMITER] = RateLimiter(
        {
            "upload": Budget(config.upload_rate, config.upload_burst),
            "read": Budget(config.read_rate, config.read_burst),
        }
    )
    app[UPLOAD_SLOTS] = asyncio.Semaphore(max(1, config.max_inflight_uploads))
    app.add_routes(routes)
    app.add_routes(desk.routes)
    app.cleanup_ctx.extend(
        [
            _store_ctx,
            _keys_ctx,
            _pool_ctx,
            _registry_ctx,
            _sealer_ctx,
            _anchors_ctx,
            _webhooks_ctx,
        ]
    )
    return app
