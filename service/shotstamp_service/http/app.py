"""The aiohttp application: factory, middlewares and the lifecycle of its parts.

Start-up order (cleanup_ctx, undone in reverse): store → signing keys (the
active key's private half found on disk) → fingerprint pool → registry (index
rebuilt from the store, the word vote's kernel compiled, then following it) →
sealer → anchors (their own task, never on the seal path) → webhook dispatcher
(stopped first, so its last outbox writes reach the store). On shutdown the
sealer seals whatever is still pending before the store closes (if this
replica is the one that seals; otherwise the one that does will).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from shotstamp_service.anchors import AnchorRunner, make_anchors
from shotstamp_service.config import Config
from shotstamp_service.files import secure_data_dir
from shotstamp_service.http import desk, dispute
from shotstamp_service.http.errors import ApiError, from_domain
from shotstamp_service.http.keys import (
    ANCHORS,
    CONFIG,
    METRICS,
    POOL,
    RATE_LIMITER,
    REGISTRY,
    SEALER,
    SIGNING_KEYS,
    STORE,
    UPLOAD_SLOTS,
    WEBHOOKS,
)
from shotstamp_service.http.limits import UPLOADS_PER_KEY, UploadsPerKey, text_header
from shotstamp_service.http.ratelimit import Budget, RateLimiter
from shotstamp_service.http.routes import routes
from shotstamp_service.http.serve import IN_FLIGHT, InFlight, track_in_flight
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import SigningKeys
from shotstamp_service.logs import REQUEST_ID
from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.fingerprint import DecodeLimits, ImageRejected
from shotstamp_service.matching.pool import FingerprintPool
from shotstamp_service.matching.segments import SegmentDir
from shotstamp_service.metrics import Metrics, upload_outcome
from shotstamp_service.registry import Registry
from shotstamp_service.store import Store, StoreError
from shotstamp_service.store.sqlite import SQLiteStore
from shotstamp_service.webhooks.dispatcher import WebhookDispatcher

__all__ = ["create_app", "make_signing_keys", "make_store"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("shotstamp_service.access")

# Requests too frequent and dull to log at INFO.
_QUIET_PATHS = frozenset({"/healthz", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_store(config: Config) -> Store:
    """PostgreSQL when SHOTSTAMP_DATABASE_URL is set, else the data directory's SQLite file."""
    if config.database_url is not None:
        from shotstamp_service.store.postgres import PostgresStore  # asyncpg is needed only here

        return PostgresStore(config.database_url, pool_size=config.database_pool_size)
    return SQLiteStore(config.database_path)


def make_signing_keys(config: Config, store: Store) -> SigningKeys:
    return SigningKeys(
        store,
        config.origin,
        key_dir=config.key_dir,
        key_file=config.signing_key_file,
        legacy_file=config.legacy_key_path,
        # Replicas sharing a database must share one key; none may invent its own.
        create=not config.shared_store,
    )


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id, then log it and count it once it is answered.

    The id (the client's `X-Request-Id`, or a new one) is on every log line
    written while serving the request, and in the response.
    """
    given = request.headers.get("X-Request-Id", "")[:100]
    # Bytes outside printable ASCII are refused (with a fresh id) further in.
    request_id = given if given.isascii() and given.isprintable() and given else uuid.uuid4().hex
    token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    try:
        response = await handler(request)
        response.headers["X-Request-Id"] = request_id
        _observe(request, response.status, time.perf_counter() - started)
        return response
    finally:
        REQUEST_ID.reset(token)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON `{"error", "message"}`; nothing else leaks."""
    try:
        response = await handler(request)
    except ApiError as exc:
        response = web.json_response(exc.body(), status=exc.status)
        if exc.status == 429 and "retry_after" in exc.extra:
            response.headers["Retry-After"] = str(exc.extra["retry_after"])
        if exc.status == 408:
            response.force_close()  # a client too slow to send its body gets no more time
    except ImageRejected as exc:
        error = from_domain(exc)
        response = web.json_response(error.body(), status=error.status)
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
            {"error": "internal", "message": f"internal error; request id {REQUEST_ID.get()}"},
            status=500,
        )
    return response


# Every request header the service reads; each must be printable ASCII.
_READ_HEADERS = ("Authorization", "Idempotency-Key", "Content-Type", "X-Request-Id")


@web.middleware
async def header_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a header the service reads that holds other bytes, before any handler."""
    for name in _READ_HEADERS:
        text_header(request, name)
    return await handler(request)


def _observe(request: web.Request, status: int, seconds: float) -> None:
    """The access log line and, for uploads, the outcome counter."""
    if request.method == "POST" and request.path == "/v1/registrations":
        request.app[METRICS].uploads.labels(upload_outcome(status)).inc()
    access_log.log(
        logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO,
        "%s %s %d",
        request.method,
        request.path,
        status,
        extra={
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "remote": request.remote,
        },
    )


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    # Everything in the data directory is private, whatever it was left as.
    secure_data_dir(app[CONFIG])
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
        DecodeLimits(
            max_pixels=config.max_pixels,
            max_frames=config.max_frames,
            max_scans=config.max_scans,
            max_side=config.max_side,
        ),
        thumbnail_size=config.thumbnail_size if config.thumbnails else None,
        cpu_seconds=config.fingerprint_cpu_seconds,
    )
    await pool.start()
    app[POOL] = pool
    yield
    pool.close()


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    pool, metrics = app[POOL], app[METRICS]
    config = app[CONFIG]
    registry = Registry(
        app[STORE], Matcher(), metrics.timed(pool), metrics.timed(pool.analyse), pool.verify,
        segments=SegmentDir(config.index_path),
    )
    count = await registry.load_index()
    log.info("index loaded with %d registrations", count)
    # The compiled kernels (word vote, PDQ probe): compiled or loaded from numba's cache now, not
    # on an upload.
    # Imported here, not at the top: the fingerprint workers re-import this module's importers
    # (multiprocessing's main-module fix-up) and must not load numba (~80 MB each).
    from shotstamp_service.matching import kernels

    await asyncio.to_thread(kernels.warm)
    if pool.workers <= 0:  # stage 2 runs here, not in the workers' forkserver (its warm-up)
        from shotstamp_service.matching import stage2_kernels

        await asyncio.to_thread(stage2_kernels.warm)
    app[REGISTRY] = registry
    # Other replicas register too: their photos must be caught here within a second.
    tasks = [
        asyncio.create_task(registry.follow(config.index_follow_interval), name="index-follower"),
        asyncio.create_task(registry.keep_segments(config.index_segment_interval),
                            name="index-segments"),
    ]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sealer_ctx(app: web.Application) -> AsyncIterator[None]:
    sealer = Sealer(
        app[STORE],
        app[SIGNING_KEYS],
        interval=app[CONFIG].seal_interval,
        on_sealed=app[METRICS].observe_seal,
    )
    await sealer.load()
    app[SEALER] = sealer
    task = asyncio.create_task(sealer.run(), name="sealer")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    try:
        await sealer.drain()
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
        middlewares=[track_in_flight, request_middleware, error_middleware, header_middleware],
        # The upload handler streams multipart itself with its own cap; this only
        # bounds bodies read whole (none are, today).
        client_max_size=config.max_upload_bytes + 65536,
        # aiohttp closes a connection whose next request head is not complete
        # when its keep-alive timer fires: that timer is the header deadline.
        handler_args={"keepalive_timeout": config.header_timeout},
    )
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[IN_FLIGHT] = InFlight()
    app[RATE_LIMITER] = RateLimiter(
        {
            "upload": Budget(config.upload_rate, config.upload_burst),
            "read": Budget(config.read_rate, config.read_burst),
        }
    )
    app[UPLOAD_SLOTS] = asyncio.Semaphore(max(1, config.max_inflight_uploads))
    app[UPLOADS_PER_KEY] = UploadsPerKey(config.max_uploads_per_key)
    app.add_routes(routes)
    app.add_routes(desk.routes)
    app.add_routes(dispute.routes)
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
