"""The dispute desk: a page for staff, and the staff-only API calls behind it.

The page (`/desk`) and its scripts and styles are public: they hold no data,
and staff must be able to load the page to type their key. Every piece of
data the page shows comes from API calls that carry the staff key, and the
desk's own calls refuse seller keys with a message saying why.

Served from this package (`static/desk/`), no build step, no third-party
origin: the Content-Security-Policy lets the page talk to this service only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from shotstamp._checkpoint import NoteVerifier
from shotstamp._exceptions import MalformedProofError, VerificationError
from shotstamp._verify import CHECKS, ProofBundle, VerifiedProof, verify_proof
from shotstamp_service.http.access import require_principal
from shotstamp_service.http.auth import Principal
from shotstamp_service.http.errors import ApiError
from shotstamp_service.http.keys import CONFIG, SIGNING_KEYS, STORE
from shotstamp_service.http.limits import BodyDeadline, body_timeout
from shotstamp_service.records import format_time

__all__ = ["CONTENT_SECURITY_POLICY", "MAX_BUNDLE_BYTES", "require_staff", "routes"]

routes = web.RouteTableDef()

STATIC_DIR = Path(__file__).parent / "static" / "desk"
# Everything the page loads, by name: nothing else under /desk/ is served.
_ASSETS = {
    "desk.css": "text/css",
    "desk.js": "text/javascript",
    "evidence.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
    "verify.js": "text/javascript",
}
# Scripts, styles and fetches from this origin only; images also from blob:
# URLs (the suspect photo and thumbnails, which are fetched with the key).
# A staff key sits in sessionStorage, so no inline script may ever run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# A proof bundle is a few kilobytes (a path has at most 64 hashes).
MAX_BUNDLE_BYTES = 256 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _static(name: str, content_type: str) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / name,
        headers={
            "Content-Type": f"{content_type}; charset=utf-8",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            # Revalidate every load, so an upgraded service never runs old scripts.
            "Cache-Control": "no-cache",
        },
    )


async def require_staff(
    request: web.Request, budget: Literal["read", "upload"] = "read"
) -> Principal:
    """The caller's principal if it holds a staff key; a seller key gets a 403 saying so."""
    who = await require_principal(request, budget)
    if not who.is_staff:
        raise ApiError(
            403,
            "forbidden",
            f"this is a seller key (seller '{who.seller}'); the dispute desk needs a staff key "
            "(shotstamp-service keys create --seller NAME --role staff)",
        )
    return who


# -- the page ---------------------------------------------------------------------
@routes.get("/desk")
async def desk_page(request: web.Request) -> web.FileResponse:
    return _static("index.html", "text/html")


@routes.get("/desk/{asset}")
async def desk_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    content_type = _ASSETS.get(name)
    if content_type is None:
        raise ApiError(404, "not_found", f"the desk has no file {name!r}")
    return _static(name, content_type)


# -- staff-only data ----------------------------------------------------------------
@routes.get("/v1/desk/session")
async def desk_session(request: web.Request) -> web.Response:
    """Who the key belongs to; the page calls it first so a seller key is refused at once."""
    who = await require_staff(request)
    return web.json_response({"seller": who.seller, "role": who.role, "key_id": who.key_id})


@routes.get("/v1/registrations/{id}/thumbnail")
async def registration_thumbnail(request: web.Request) -> web.Response:
    await require_staff(request)
    store = request.app[STORE]
    reg = await store.get_registration(request.match_info["id"])
    if reg is None:
        raise ApiError(404, "not_found", "no such registration")
    data = await store.get_thumbnail(reg.seq)
    if data is None:
        raise ApiError(
            404,
            "no_thumbnail",
            f"the service keeps no thumbnail of registration {reg.id} "
            "(thumbnails were off when it was registered, or the image could not be shrunk)",
        )
    return web.Response(
        body=data,
        content_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# -- verification by the service, for browsers that cannot ---------------------------
async def _verifiers(request: web.Request) -> list[NoteVerifier]:
    # The same keys GET /v1/keys publishes, retired ones included: a proof
    # sealed before a rotation is signed by a retired key.
    records = await request.app[SIGNING_KEYS].records()
    return [NoteVerifier(key.name, key.public_key) for key in records]


def _verified_json(result: VerifiedProof) -> dict[str, Any]:
    return {
        "registration_id": result.registration_id,
        "seller": result.seller,
        "sha256": result.sha256,
        "leaf_index": result.leaf_index,
        "tree_size": result.tree_size,
        "root_hash": result.root_hash.hex(),
        "checkpoint_time": (
            format_time(result.checkpoint_time) if result.checkpoint_time is not None else None
        ),
        "origin": result.origin,
        "key_hash": result.key_hash,
    }


async def _read_capped(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"a proof bundle is at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    config = request.app[CONFIG]
    try:
        async with BodyDeadline(request.content, config.body_min_rate, config.body_grace):
            async for chunk in request.content.iter_chunked(65536):
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413, "body_too_large", f"a proof bundle is at most {limit} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError as exc:
        raise body_timeout(config.body_min_rate, config.body_grace) from exc
    return b"".join(chunks)


@routes.post("/v1/verify")
async def verify(request: web.Request) -> web.Response:
    """Verify a proof bundle (the body) with the SDK and this service's keys.

    For the desk in a browser without Ed25519 (or without WebCrypto); the
    answer lists the checks that passed and the one that failed, so the page
    can label them "verified by the service". 200 whether or not it verifies.
    """
    await require_principal(request)
    image_sha256 = request.query.get("image_sha256")
    if image_sha256 is not None and not _HEX64.fullmatch(image_sha256):
        raise ApiError(400, "invalid_sha256", "image_sha256 must be 64 lowercase hex digits")
    body = await _read_capped(request, MAX_BUNDLE_BYTES)
    verifiers = await _verifiers(request)
    answer: dict[str, Any] = {"keys": [v.vkey for v in verifiers]}
    try:
        result = verify_proof(body, keys=verifiers, image_sha256=image_sha256)
    except VerificationError as exc:
        answer |= {
            "verified": False,
            "checks": _passed_before(exc.check, body),
            "failed": {"check": exc.check, "message": str(exc)},
        }
    else:
        answer |= {
            "verified": True,
            "checks": list(result.checks),
            "failed": None,
            "result": _verified_json(result),
        }
    return web.json_response(answer)


def _passed_before(failed: str | None, body: bytes) -> list[str]:
    """The checks `verify_proof` passed before stopping at `failed`.

    It runs them in `CHECKS` order, skipping `leaf-hash` for a bundle that
    states no leaf hash (and `image` without an image, but that comes last).
    """
    if failed not in CHECKS:
        return []
    passed = list(CHECKS[: CHECKS.index(failed)])
    if "leaf-hash" in passed:
        try:
            if ProofBundle.from_json(body).leaf_hash is None:
                passed.remove("leaf-hash")
        except MalformedProofError:  # it parsed once already; it cannot fail now
            return []
    return passed
