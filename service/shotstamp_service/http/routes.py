"""HTTP API v1: thin handlers that parse, call the domain code, and shape JSON."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.hdrs import CONTENT_DISPOSITION
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from shotstamp._merkle import HASH_SIZE
from shotstamp_service.http.access import require_principal
from shotstamp_service.http.auth import Principal
from shotstamp_service.http.errors import ApiError, from_domain
from shotstamp_service.http.keys import (
    CONFIG,
    METRICS,
    REGISTRY,
    SEALER,
    SIGNING_KEYS,
    STORE,
    UPLOAD_SLOTS,
    WEBHOOKS,
)
from shotstamp_service.http.limits import (
    UPLOADS_PER_KEY,
    BodyDeadline,
    body_timeout,
    read_body,
    text_header,
)
from shotstamp_service.http.openapi import openapi_document
from shotstamp_service.log.proofs import ProofRangeError, consistency_json, proof_bundle
from shotstamp_service.log.signer import key_json
from shotstamp_service.log.tiles import TILE_WIDTH, parse_tile_path
from shotstamp_service.matching.verification import Geometry
from shotstamp_service.metrics import CONTENT_TYPE
from shotstamp_service.records import (
    CheckpointRecord,
    Registration,
    WebhookDelivery,
    WebhookRecord,
    format_time,
    utc_now,
)
from shotstamp_service.registry import IdempotencyKeyReused, ResolvedMatch
from shotstamp_service.webhooks.dispatcher import (
    EVENT_TYPES,
    MAX_WEBHOOKS_PER_SELLER,
    InvalidWebhookURL,
    check_webhook_url,
    new_webhook,
)

__all__ = ["routes"]

routes = web.RouteTableDef()

log = logging.getLogger(__name__)

_BOOLEANS = {"true": True, "false": False}


# -- helpers -----------------------------------------------------------------
def _flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter as OpenAPI serialises one: absent, `true` or `false`."""
    values = request.query.getall(name, [])
    if not values:
        return False
    if len(values) > 1 or values[0].lower() not in _BOOLEANS:
        raise ApiError(400, "invalid_parameter", f"'{name}' must be given once, as true or false")
    return _BOOLEANS[values[0].lower()]


def _size_param(raw: str | None, name: str) -> int:
    """A tree size from the query or path: a decimal integer, 0 or more."""
    if raw is None:
        raise ApiError(400, "invalid_size", f"give '{name}', a tree size")
    # Tree sizes are stored as SQL integers: at most 2^63 - 1.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) >= 2**63:
        raise ApiError(400, "invalid_size", f"'{name}' must be a non-negative integer below 2^63")
    return int(raw)


def registration_json(reg: Registration, *, proof: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": reg.id,
        "seller": reg.seller,
        "sha256": reg.sha256,
        "perceptual": reg.perceptual,
        "received_at": reg.received_at,
        "status": "sealed" if reg.sealed else "pending",
        "width": reg.width,
        "height": reg.height,
    }
    if reg.title is not None:
        body["title"] = reg.title
    if reg.reference is not None:
        body["reference"] = reg.reference
    if reg.leaf_index is not None:
        body["leaf_index"] = reg.leaf_index
    if proof is not None:
        body["proof"] = proof
    return body


def match_json(request: web.Request, match: ResolvedMatch, viewer: Principal) -> dict[str, Any]:
    """One match; another seller's registration shows only what a dispute needs."""
    reg = match.registration
    primary = request.app[REGISTRY].matcher.describe().get("primary", "")
    distance = 0 if match.exact else match.distances.get(primary, min(match.distances.values()))
    body: dict[str, Any] = {
        "registration_id": reg.id,
        "received_at": reg.received_at,
        "distance": distance,
        "distances": match.distances,
        "verdict": match.verdict,
        "stage": match.stage,
        "clause": match.clause,
        "explanation": match.explanation,
        "exact": match.exact,
        "status": "sealed" if reg.sealed else "pending",
        "proof_url": f"/v1/registrations/{reg.id}/proof",
    }
    if reg.leaf_index is not None:
        # The proof reference anyone can hold the log to: the entry's position.
        # (The proof itself carries the leaf, which names the seller.)
        body["leaf_index"] = reg.leaf_index
    if viewer.is_staff or reg.seller == viewer.seller:
        body["seller"] = reg.seller
        if reg.title is not None:
            body["title"] = reg.title
        if reg.reference is not None:
            body["reference"] = reg.reference
    if match.geometry is not None:
        body["geometry"] = geometry_json(match.geometry)
    return body


def geometry_json(geometry: Geometry) -> dict[str, Any]:
    """Where the upload sits in the registered image (openapi.py's MatchGeometry)."""

    def point(x: float, y: float) -> list[float]:
        return [round(float(x), 2), round(float(y), 2)]

    m = geometry.transform
    return {
        "model": geometry.model,
        "registered_size": list(geometry.stored_size),
        "suspect_size": list(geometry.query_size),
        "transform": [[round(float(v), 6) for v in row] for row in m] + [[0.0, 0.0, 1.0]],
        "outline": [point(x, y) for x, y in geometry.outline()],
        "scale": round(geometry.scale(), 4),
        "rotation": round(geometry.rotation(), 2),
        "mirrored": geometry.mirrored(),
        "covered": round(geometry.covered(), 4),
        "pairs": [point(qx, qy) + point(sx, sy) for qx, qy, sx, sy in geometry.pairs],
    }


def checkpoint_json(cp: CheckpointRecord) -> dict[str, Any]:
    return {
        "tree_size": cp.tree_size,
        "root_hash": cp.root_hash.hex(),
        "timestamp": format_time(cp.timestamp),
        "key_id": cp.key_id,
        "note": cp.note,
    }


# The text fields an upload may carry besides `image`; any other is refused as it starts.
_UPLOAD_TEXT_FIELDS = ("title", "reference")
# Bytes allowed before the first boundary (clients send none), and header lines per part.
_MAX_PREAMBLE = 1024
_MAX_PART_HEADERS = 16


@functools.lru_cache(maxsize=256)
def _disposition_name(header: str | None) -> str | None:
    """The `name` of a part's Content-Disposition, by aiohttp's own parser, memoised.

    aiohttp's `parse_content_disposition` rebuilds an escaped character class on every call
    (~0.05 ms, a sixth of an upload's multipart parsing); a client sends the same header for
    every upload, so the parse is done once per distinct header.
    """
    _, params = parse_content_disposition(header)
    return content_disposition_filename(params, "name")


class _UploadPart(BodyPartReader):
    """A part whose `name` is read through `_disposition_name`."""

    @property
    def name(self) -> str | None:
        return _disposition_name(self.headers.get(CONTENT_DISPOSITION))


class _UploadReader(MultipartReader):
    """aiohttp's multipart reader with the preamble capped.

    aiohttp skips a preamble line by line, unbounded and without yielding to
    other requests while lines are buffered: megabytes of empty lines held
    the event loop for seconds. (Overrides a private method; tests cover it.)
    """

    part_reader_cls = _UploadPart

    async def _read_until_first_boundary(self) -> None:
        skipped = 0
        while True:
            line = await self._content.readline(max_line_length=_MAX_PREAMBLE)
            if line == b"":
                raise ValueError(f"could not find the starting boundary {self._boundary!r}")
            if line.rstrip() == self._boundary:
                return
            if line.rstrip() == self._boundary + b"--":
                self._at_eof = True
                return
            skipped += len(line)
            if skipped > _MAX_PREAMBLE:
                raise ValueError(f"more than {_MAX_PREAMBLE} bytes before the first boundary")


async def read_upload(
    request: web.Request, text_fields: tuple[str, ...] = _UPLOAD_TEXT_FIELDS
) -> tuple[bytes, dict[str, str]]:
    """The `image` file part and the `text_fields` of a multipart body, read whole.

    The body must keep up the configured pace (`BodyDeadline`): a client that
    trickles it gets a 408 and the connection is closed.
    """
    config = request.app[CONFIG]
    try:
        async with BodyDeadline(request.content, config.body_min_rate, config.body_grace):
            return await _read_multipart(request, text_fields)
    except TimeoutError as exc:
        raise body_timeout(config.body_min_rate, config.body_grace) from exc


async def _read_multipart(
    request: web.Request, text_fields: tuple[str, ...]
) -> tuple[bytes, dict[str, str]]:
    config = request.app[CONFIG]
    allowed = ("image", *text_fields)
    # The media type alone, without `request.content_type`: aiohttp parses that
    # with the email package, a few percent of the service's CPU per upload.
    media_type = (text_header(request, "Content-Type") or "").partition(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data with an 'image' file field, not "
            + (repr(media_type) if media_type else "a body without a media type"),
        )
    declared = request.content_length
    if declared is not None and declared > config.max_upload_bytes + 65536:
        raise ApiError(
            413, "body_too_large", f"the body is larger than {config.max_upload_bytes} bytes"
        )
    try:
        reader = _UploadReader(request.headers, request.content, max_headers=_MAX_PART_HEADERS)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from exc
    image: bytes | None = None
    texts: dict[str, str] = {}
    parts = 0
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            parts += 1
            if parts > config.max_upload_parts:
                raise ApiError(
                    400,
                    "too_many_parts",
                    f"a multipart upload has at most {config.max_upload_parts} parts",
                )
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "bad_multipart", "nested multipart bodies are not accepted")
            name = part.name
            if name not in allowed:
                shown = ascii(name) if name is not None else "a part without a name"
                raise ApiError(
                    400,
                    "unknown_field",
                    f"unknown multipart field {shown}; send only {', '.join(allowed)}",
                    field=name if name is None or name.isascii() else ascii(name),
                )
            if name == "image":
                if image is not None:
                    raise ApiError(400, "too_many_files", "send exactly one file in 'image'")
                image = await _read_capped(part, config.max_upload_bytes)
            elif name in text_fields:
                limit = config.max_text_length
                too_long = ApiError(
                    400, "invalid_text", f"'{name}' is longer than {limit} characters"
                )
                try:
                    # UTF-8 takes at most 4 bytes a character: more bytes than
                    # that is too long whatever they spell.
                    raw = await _read_capped(part, config.max_text_length * 4)
                except ApiError as exc:
                    raise too_long from exc
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ApiError(400, "invalid_text", f"'{name}' is not valid UTF-8") from exc
                if len(text) > config.max_text_length:
                    raise too_long
                texts[name] = text
            # Let other requests run between parts, even when the body is all buffered.
            await asyncio.sleep(0)
    except ApiError:
        raise
    # aiohttp's multipart parser raises these on malformed parts (headers that
    # are not headers, a part with no end); schemathesis found the last kind.
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from exc
    if image is None:
        raise ApiError(400, "missing_image", "the multipart body has no 'image' file field")
    if not image:
        raise ApiError(400, "empty_image", "the 'image' field is empty")
    return image, texts


async def _read_capped(part: BodyPartReader, limit: int) -> bytes:
    # One growing buffer, each chunk copied in and dropped at once: large
    # buffers are mmapped and go back to the OS when freed, where a list of
    # 64 KiB chunks would leave the heap fragmented and the process's RSS
    # up by the largest upload burst it ever saw.
    buffer = bytearray()
    while True:
        chunk = await part.read_chunk(65536)
        if not chunk:
            return bytes(buffer)
        if len(buffer) + len(chunk) > limit:
            raise ApiError(413, "body_too_large", f"'{part.name}' is larger than {limit} bytes")
        buffer += chunk
        await asyncio.sleep(0)  # a buffered body is read without waiting: let others run


async def wait_until_sealed(request: web.Request, reg: Registration) -> Registration:
    """Poll (woken by the local sealer) until sealed or the wait timeout passes."""
    store, sealer = request.app[STORE], request.app[SEALER]
    deadline = time.monotonic() + request.app[CONFIG].wait_timeout
    while not reg.sealed:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return reg
        await sealer.wait_for_seal(min(remaining, 0.5))
        fresh = await store.get_registration(reg.id)
        if fresh is not None:
            reg = fresh
    return reg


async def _visible_registration(request: web.Request, who: Principal) -> Registration:
    reg = await request.app[STORE].get_registration(request.match_info["id"])
    # Another seller's registration is indistinguishable from a missing one.
    if reg is None or not (who.is_staff or reg.seller == who.seller):
        raise ApiError(404, "not_found", "no such registration")
    return reg


# -- registrations -------------------------------------------------------------
@routes.post("/v1/registrations")
async def create_registration(request: web.Request) -> web.Response:
    who = await require_principal(request, "upload")
    # Everything the client controls is checked before anything is stored.
    idempotency_key = text_header(request, "Idempotency-Key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-200 characters")
    wait = _flag(request, "wait")
    async with request.app[UPLOADS_PER_KEY].hold(who.key_id):
        image, texts = await read_upload(request)
        # The slot is taken with the body read: a slow client never holds one.
        # It is released before any wait for the seal, which holds no body.
        async with request.app[UPLOAD_SLOTS]:
            try:
                outcome = await request.app[REGISTRY].register(
                    who,
                    image,
                    title=texts.get("title"),
                    reference=texts.get("reference"),
                    idempotency_key=idempotency_key,
                )
            except IdempotencyKeyReused as exc:
                raise ApiError(422, "idempotency_key_reused", str(exc)) from exc
            if outcome.kind == "conflict":
                # Tell the sellers whose photo this copies; scheduled, never awaited here.
                request.app[WEBHOOKS].conflict(outcome.matches, image, format_time(utc_now()))
            del image
    if outcome.kind == "conflict":
        matches = [match_json(request, m, who) for m in outcome.matches]
        first = matches[0]
        request.app[METRICS].conflicts.labels(
            "exact" if outcome.matches[0].exact else "near_duplicate"
        ).inc()
        log.info(
            "upload refused: a copy of %s",
            first["registration_id"],
            extra={
                "outcome": "conflict",
                "seller": who.seller,
                "original": first["registration_id"],
            },
        )
        raise ApiError(
            409,
            "conflict",
            f"this image is a copy of registration {first['registration_id']}, "
            f"registered at {first['received_at']} by another seller",
            matches=matches,
        )
    assert outcome.registration is not None
    reg = outcome.registration
    log.info(
        "upload %s as %s",
        outcome.kind,
        reg.id,
        extra={"outcome": outcome.kind, "seller": who.seller, "registration_id": reg.id},
    )
    proof = None
    if wait:
        reg = await wait_until_sealed(request, reg)
        if reg.sealed:
            proof = await proof_bundle(request.app[STORE], reg)
    status = 201 if outcome.kind == "created" else 200
    return web.json_response(
        registration_json(reg, proof=proof),
        status=status,
        headers={"Location": f"/v1/registrations/{reg.id}"},
    )


@routes.post("/v1/checks")
async def create_check(request: web.Request) -> web.Response:
    who = await require_principal(request, "upload")
    async with request.app[UPLOADS_PER_KEY].hold(who.key_id):
        image, _ = await read_upload(request)
        async with request.app[UPLOAD_SLOTS]:
            fp, matches = await request.app[REGISTRY].check(image)
    return web.json_response(
        {
            "sha256": fp.sha256,
            "perceptual": fp.perceptual(),
            "matches": [match_json(request, m, who) for m in matches],
        }
    )


@routes.get("/v1/registrations/{id}")
async def get_registration(request: web.Request) -> web.Response:
    who = await require_principal(request)
    reg = await _visible_registration(request, who)
    return web.json_response(registration_json(reg))


@routes.get("/v1/registrations/{id}/proof")
async def get_proof(request: web.Request) -> web.Response:
    who = await require_principal(request)
    reg = await _visible_registration(request, who)
    if not reg.sealed and _flag(request, "wait"):
        reg = await wait_until_sealed(request, reg)
    with_size = request.query.get("consistency_with")
    consistency_with = None if with_size is None else _size_param(with_size, "consistency_with")
    if not reg.sealed:
        return web.json_response(
            {"id": reg.id, "status": "pending", "message": "not sealed yet; retry shortly"},
            status=202,
            headers={"Retry-After": "1"},
        )
    try:
        bundle = await proof_bundle(request.app[STORE], reg, consistency_with=consistency_with)
    except ProofRangeError as exc:
        raise from_domain(exc) from exc
    return web.json_response(bundle)


# -- webhooks ----------------------------------------------------------------------
_MAX_JSON_BODY = 16384


async def read_json_object(request: web.Request) -> dict[str, Any]:
    media_type = (text_header(request, "Content-Type") or "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", f"send application/json, not {media_type!r}")
    config = request.app[CONFIG]
    raw = await read_body(request, _MAX_JSON_BODY, config.body_min_rate, config.body_grace)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def webhook_json(hook: WebhookRecord, *, secret: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "created_at": hook.created_at,
    }
    if secret:
        body["secret"] = hook.secret
    return body


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "created_at": delivery.created_at,
        "next_attempt_at": (
            format_time(datetime.fromtimestamp(delivery.next_attempt_at, UTC))
            if delivery.status == "pending"
            else None
        ),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "delivered_at": delivery.delivered_at,
    }


async def _own_webhook(request: web.Request, who: Principal) -> WebhookRecord:
    hook = await request.app[STORE].get_webhook(request.match_info["id"])
    if hook is None or hook.seller != who.seller:
        raise ApiError(404, "not_found", "no such webhook")
    return hook


@routes.post("/v1/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    who = await require_principal(request)
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"url", "events"})
    if unknown:
        raise ApiError(400, "invalid_field", f"unknown fields: {', '.join(unknown)}")
    try:
        url = check_webhook_url(
            body.get("url"), allow_private=request.app[CONFIG].webhook_allow_private
        )
    except InvalidWebhookURL as exc:
        raise ApiError(400, "invalid_url", str(exc)) from exc
    events = body.get("events", list(EVENT_TYPES))
    if (
        not isinstance(events, list)
        or not events
        or not all(isinstance(e, str) and e in EVENT_TYPES for e in events)
    ):
        raise ApiError(
            400,
            "invalid_events",
            f"'events' must be a non-empty list of: {', '.join(EVENT_TYPES)}",
        )
    store = request.app[STORE]
    existing = await store.list_webhooks(who.seller)
    if any(h.url == url for h in existing):
        raise ApiError(400, "duplicate_webhook", "you already have a webhook with this URL")
    if len(existing) >= MAX_WEBHOOKS_PER_SELLER:
        raise ApiError(
            400, "too_many_webhooks", f"at most {MAX_WEBHOOKS_PER_SELLER} webhooks per seller"
        )
    hook = new_webhook(who.seller, url, dict.fromkeys(events))
    await store.add_webhook(hook)
    return web.json_response(
        webhook_json(hook, secret=True),
        status=201,
        headers={"Location": f"/v1/webhooks/{hook.id}"},
    )


@routes.get("/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    who = await require_principal(request)
    hooks = await request.app[STORE].list_webhooks(who.seller)
    return web.json_response({"webhooks": [webhook_json(h) for h in hooks]})


@routes.delete("/v1/webhooks/{id}")
async def delete_webhook(request: web.Request) -> web.Response:
    who = await require_principal(request)
    if not await request.app[STORE].delete_webhook(request.match_info["id"], who.seller):
        raise ApiError(404, "not_found", "no such webhook")
    return web.Response(status=204)


@routes.get("/v1/webhooks/{id}/deliveries")
async def webhook_deliveries(request: web.Request) -> web.Response:
    who = await require_principal(request)
    hook = await _own_webhook(request, who)
    deliveries = await request.app[STORE].list_deliveries(hook.id)
    return web.json_response({"deliveries": [delivery_json(d) for d in deliveries]})


# -- the log -------------------------------------------------------------------
@routes.get("/v1/checkpoints/latest")
async def latest_checkpoint(request: web.Request) -> web.Response:
    cp = await request.app[STORE].latest_checkpoint()
    if cp is None:
        raise ApiError(503, "no_checkpoint", "the log has not published a checkpoint yet")
    return web.json_response(checkpoint_json(cp))


@routes.get("/v1/checkpoints/{size}")
async def checkpoint_at(request: web.Request) -> web.Response:
    size = _size_param(request.match_info["size"], "size")
    cp = await request.app[STORE].get_checkpoint(size)
    if cp is None:
        raise ApiError(404, "not_found", f"the log published no checkpoint at size {size}")
    return web.json_response(checkpoint_json(cp))


@routes.get("/v1/proofs/consistency")
async def consistency(request: web.Request) -> web.Response:
    first = _size_param(request.query.get("from"), "from")
    second = _size_param(request.query.get("to"), "to")
    try:
        proof = await consistency_json(request.app[STORE], first, second)
    except ProofRangeError as exc:
        raise from_domain(exc) from exc
    # A proof between two sizes never changes once both trees exist.
    return web.json_response(proof, headers={"Cache-Control": "public, max-age=31536000"})


@routes.get("/v1/keys")
async def keys(request: web.Request) -> web.Response:
    records = await request.app[SIGNING_KEYS].records()
    # Newest first: the active key leads, retired ones still verify old proofs.
    return web.json_response(
        {
            "origin": request.app[CONFIG].origin,
            "keys": [key_json(key) for key in reversed(records)],
        }
    )


# -- the log as C2SP tlog-tiles (read-only, public) ----------------------------
@routes.get("/checkpoint")
async def tlog_checkpoint(request: web.Request) -> web.Response:
    cp = await request.app[STORE].latest_checkpoint()
    if cp is None:
        raise ApiError(503, "no_checkpoint", "the log has not published a checkpoint yet")
    # Mutable: c2sp.org/tlog-tiles asks that it not be cached beyond a few seconds.
    return web.Response(
        text=cp.note,
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=1"},
    )


@routes.get("/tile/{path:.+}")
async def tlog_tile(request: web.Request) -> web.Response:
    try:
        tile = parse_tile_path(request.match_info["path"])
    except ValueError as exc:
        raise ApiError(400, "invalid_tile_path", str(exc)) from exc
    if tile.level is None:
        # Leaves carry seller names and photo hashes: they are given to their
        # owner inside the proof bundle, never published (README, "Following the log").
        raise ApiError(
            404,
            "not_found",
            "this log publishes hash tiles only; entries are private to their sellers",
        )
    stored = (await request.app[STORE].get_tiles([(tile.level, tile.index)])).get(
        (tile.level, tile.index), b""
    )
    length = HASH_SIZE * (TILE_WIDTH if tile.width is None else tile.width)
    if len(stored) < length:
        raise ApiError(404, "not_found", f"no tile {request.match_info['path']} in the log yet")
    return web.Response(
        body=stored[:length],
        content_type="application/octet-stream",
        # Immutable: a tile's first W hashes never change.
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


@routes.get("/v1/config")
async def config(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    return web.json_response(
        {
            "origin": cfg.origin,
            "seal_interval_seconds": cfg.seal_interval,
            "limits": {
                "max_upload_bytes": cfg.max_upload_bytes,
                "max_pixels": cfg.max_pixels,
                "max_frames": cfg.max_frames,
                "max_text_length": cfg.max_text_length,
                "max_upload_parts": cfg.max_upload_parts,
                "max_uploads_per_key": cfg.max_uploads_per_key,
                "header_timeout_seconds": cfg.header_timeout,
                "body_min_rate_bytes_per_second": cfg.body_min_rate,
                "body_grace_seconds": cfg.body_grace,
            },
            "matching": request.app[REGISTRY].matcher.describe(),
        }
    )


# What `GET /` points to: a newcomer's way in, from a browser or curl.
_ENTRY_POINTS = {
    "desk": ("/desk", "the dispute desk, for staff (a staff key)"),
    "openapi": ("/openapi.json", "the HTTP API, OpenAPI 3.1"),
    "keys": ("/v1/keys", "the log's public keys, to verify proofs offline"),
    "checkpoint": ("/v1/checkpoints/latest", "the log's latest signed checkpoint"),
    "config": ("/v1/config", "limits and the matching rule in use"),
    "health": ("/healthz", "liveness"),
}
_DOCS = "docs/api.md and README.md in the shotstamp source"


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    links = {name: path for name, (path, _) in _ENTRY_POINTS.items()}
    headers = {"Vary": "Accept"}
    if _prefers_html(request.headers.get("Accept", "")):
        items = "".join(
            f'<li><a href="{path}">{path}</a>: {what}</li>' for path, what in _ENTRY_POINTS.values()
        )
        page = (
            '<!doctype html><html lang="en"><meta charset="utf-8"><title>shotstamp</title>'
            "<h1>shotstamp</h1><p>Copyright timestamping for product photos.</p>"
            f"<ul>{items}</ul><p>Documentation: {_DOCS}.</p></html>"
        )
        return web.Response(text=page, content_type="text/html", headers=headers)
    return web.json_response(
        {"service": "shotstamp", "links": links, "docs": _DOCS}, headers=headers
    )


def _prefers_html(accept: str) -> bool:
    """A browser's Accept names text/html before any JSON; curl's */* gets JSON."""
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    html = types.index("text/html") if "text/html" in types else None
    json_at = types.index("application/json") if "application/json" in types else None
    return html is not None and (json_at is None or html < json_at)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    sealer = request.app[SEALER]
    last = sealer.last_checkpoint
    return web.json_response(
        {
            "status": "ok",
            "tree_size": sealer.tree_size,
            "last_seal": format_time(last.timestamp) if last else None,
            "indexed": len(request.app[REGISTRY].matcher),
            "sealing": sealer.leading,
        }
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    sealer = request.app[SEALER]
    body = request.app[METRICS].render(
        log_size=sealer.tree_size,
        pending=await request.app[STORE].count_pending(),
        index_size=len(request.app[REGISTRY].matcher),
        sealing=sealer.leading,
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
