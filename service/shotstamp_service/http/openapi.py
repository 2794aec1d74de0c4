"""The OpenAPI 3.1 description of HTTP API v1, served at /openapi.json.

Kept beside the handlers and checked against live responses by the tests, so
plugin authors can generate clients from it and trust it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from shotstamp_service import __version__

__all__ = ["openapi_document"]

_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
_SIZE = {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"},
         "description": "width, height"}
_POINT = {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_UPLOAD = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {
                        "type": "string",
                        "format": "binary",
                        "description": "JPEG, PNG, WebP, GIF (first frame) or TIFF",
                    },
                    "title": {"type": "string", "maxLength": 500},
                    "reference": {
                        "type": "string",
                        "maxLength": 500,
                        "description": "your own reference, e.g. a SKU",
                    },
                },
            },
            "encoding": {"image": {"contentType": "image/*, application/octet-stream"}},
        }
    },
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    }
}

_AUTH_ERRORS = {
    "401": _error("missing, unknown or revoked API key"),
    "429": {
        **_error("this key is over its rate limit (uploads and reads have separate budgets)"),
        "headers": _RETRY_AFTER,
    },
    "503": {**_error("storage is unavailable; retry shortly"), "headers": _RETRY_AFTER},
}

_UPLOAD_ERRORS = {
    "400": _error(
        "malformed multipart body, missing 'image', invalid text field, invalid parameter; "
        "codes: bad_multipart, missing_image, empty_image, too_many_files, too_many_parts "
        "(more than the configured parts), unknown_field (a field other than image, title, "
        "reference; named in `field`), invalid_text, invalid_parameter, "
        "invalid_idempotency_key, invalid_header (bytes outside printable ASCII)"
    ),
    "408": _error(
        "body_timeout: the body arrived slower than the configured minimum rate after the "
        "grace period; the connection is closed"
    ),
    "413": _error("body, image dimensions or frame count over the configured limits"),
    "415": _error("not multipart/form-data, or not an image in a supported format"),
    "422": _error("an image that cannot be decoded (truncated, corrupt)"),
    "429": {
        **_error(
            "rate_limited: this key is over its upload rate; too_many_uploads: this key "
            "already has the most uploads in progress that one key may have"
        ),
        "headers": _RETRY_AFTER,
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "stable machine-readable code"},
            "message": {"type": "string", "description": "what went wrong, in words"},
            "retry_after": {
                "type": "integer",
                "description": "with 429: the Retry-After header's seconds",
            },
            "field": {
                "type": ["string", "null"],
                "description": "with unknown_field: the multipart field refused",
            },
        },
    },
    "Registration": {
        "type": "object",
        "required": ["id", "seller", "sha256", "perceptual", "received_at", "status"],
        "properties": {
            "id": {"type": "string"},
            "seller": {"type": "string"},
            "sha256": {**_HEX64, "description": "SHA-256 of the uploaded file's bytes"},
            "perceptual": {
                "type": "object",
                "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]+$"},
                "description": "perceptual hashes of the decoded pixels, lowercase hex",
            },
            "received_at": _TIME,
            "status": {"type": "string", "enum": ["pending", "sealed"]},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "title": {"type": "string"},
            "reference": {"type": "string"},
            "leaf_index": {"type": "integer", "minimum": 0},
            "proof": _ref("Proof"),
        },
    },
    "Match": {
        "type": "object",
        "required": ["registration_id", "received_at", "distance", "distances", "verdict"],
        "properties": {
            "registration_id": {"type": "string"},
            "received_at": _TIME,
            "distance": {
                "type": "number",
                "description": "distance of the primary fingerprint (see /v1/config)",
            },
            "distances": {"type": "object", "additionalProperties": {"type": "number"}},
            "verdict": {"type": "string", "enum": ["copy", "similar"]},
            "stage": {
                "type": "integer",
                "enum": [1, 2],
                "description": "1: decided by global hashes; 2: by the stored features",
            },
            "clause": {
                "type": "string",
                "description": "the matching rule's clause that decided (GET /v1/config → "
                "matching.rule.clauses)",
            },
            "explanation": {
                "type": "string",
                "description": "the verdict in words, e.g. \"The same photo cropped to ~49 % "
                "of its area and shrunk: …\"",
            },
            "exact": {"type": "boolean", "description": "the very same file bytes"},
            "status": {"type": "string", "enum": ["pending", "sealed"]},
            "proof_url": {
                "type": "string",
                "description": "the proof; readable by its owner and staff only",
            },
            "leaf_index": {
                "type": "integer",
                "minimum": 0,
                "description": "the earlier registration's position in the log, once sealed",
            },
            "seller": {"type": "string", "description": "only for your own or to staff"},
            "title": {"type": "string"},
            "reference": {"type": "string"},
            "geometry": _ref("MatchGeometry"),
        },
    },
    "MatchGeometry": {
        "type": "object",
        "description": "where the upload (the suspect) sits in the registered image, as stage 2 "
        "fitted it; only for matches stage 2 verified (a copy by its hash alone has none). "
        "Coordinates are continuous pixels (origin at the top-left corner of the image, pixel "
        "centres at +0.5) of the registered image scaled to `registered_size` (the analysis "
        "copy, long side 256 px; the desk's thumbnail has the same proportions: multiply by "
        "thumbnail width / registered_size[0]); suspect points likewise in `suspect_size`",
        "additionalProperties": False,
        "required": ["model", "registered_size", "suspect_size", "transform", "outline",
                     "scale", "rotation", "mirrored", "covered", "pairs"],
        "properties": {
            "model": {
                "type": "string",
                "enum": ["similarity", "aligned"],
                "description": "similarity: rotation, uniform scale and shift fitted with RANSAC "
                "on ORB keypoints; aligned: the frames (or content boxes, mirrored) a near PDQ "
                "code pair puts onto each other, scaled per axis",
            },
            "registered_size": _SIZE,
            "suspect_size": _SIZE,
            "transform": {
                "type": "array",
                "minItems": 3,
                "maxItems": 3,
                "items": {"type": "array", "minItems": 3, "maxItems": 3,
                          "items": {"type": "number"}},
                "description": "3×3 homogeneous matrix (row-major, last row 0 0 1) mapping a "
                "suspect point (x, y, 1) to the registered image",
            },
            "outline": {
                "type": "array",
                "minItems": 4,
                "maxItems": 4,
                "items": _POINT,
                "description": "the suspect's corners (top-left, top-right, bottom-right, "
                "bottom-left) in the registered image",
            },
            "scale": {"type": "number", "description": "registered pixels per suspect pixel"},
            "rotation": {
                "type": "number",
                "description": "degrees the suspect is turned against the registered image, "
                "counter-clockwise as seen",
            },
            "mirrored": {"type": "boolean"},
            "covered": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "share of the registered image inside the outline",
            },
            "pairs": {
                "type": "array",
                "maxItems": 100,
                "items": {"type": "array", "minItems": 4, "maxItems": 4,
                          "items": {"type": "number"}},
                "description": "matched keypoints consistent with the transform (at most 100, "
                "spread over all): suspect x, y, registered x, y",
            },
        },
    },
    "Conflict": {
        "allOf": [
            _ref("Error"),
            {
                "type": "object",
                "required": ["matches"],
                "properties": {"matches": {"type": "array", "items": _ref("Match")}},
            },
        ]
    },
    "Check": {
        "type": "object",
        "required": ["sha256", "perceptual", "matches"],
        "properties": {
            "sha256": _HEX64,
            "perceptual": {"type": "object", "additionalProperties": {"type": "string"}},
            "matches": {"type": "array", "items": _ref("Match")},
        },
    },
    "Proof": {
        "type": "object",
        "required": ["format", "leaf", "leaf_index", "tree_size", "inclusion_path", "checkpoint"],
        "properties": {
            "format": {
                "type": "string",
                "enum": ["shotstamp-proof/1", "shotstamp-proof/2"],
                "description": "2 (new registrations): the leaf commits to the seller as "
                "seller_commitment = SHA-256(seller_salt || UTF-8 seller); 1: the leaf names "
                "the seller (docs/security.md, *Who registered a photo*)",
            },
            "leaf": {
                "type": "object",
                "required": ["id", "sha256", "perceptual", "received_at"],
                "oneOf": [
                    {"required": ["seller"]},
                    {"required": ["seller_commitment"]},
                ],
                "description": "the registration record; its RFC 8785 JSON is the log leaf",
            },
            "seller": {
                "type": "string",
                "description": "format 2: the seller the leaf's seller_commitment opens to",
            },
            "seller_salt": {
                "type": "string",
                "pattern": "^[0-9a-f]{64}$",
                "description": "format 2: the 32-byte salt, hex; only the owner's bundle has it",
            },
            "leaf_hash": _HEX64,
            "leaf_index": {"type": "integer", "minimum": 0},
            "tree_size": {"type": "integer", "minimum": 1},
            "inclusion_path": {"type": "array", "items": _HEX64},
            "checkpoint": {"type": "string", "description": "C2SP signed checkpoint note"},
            "consistency": {
                "type": "array",
                "items": _ref("Consistency"),
                "description": "with ?consistency_with=N: the proof between this checkpoint's "
                "tree and the tree of N leaves, for offline checks against a trusted checkpoint; "
                "and, for each anchor, the proof from this tree to the anchored one",
            },
            "anchors": {
                "type": "array",
                "items": _ref("Anchor"),
                "description": "once available: per configured anchor, the earliest anchored "
                "checkpoint at least as large as this proof's, and the anchor's evidence",
            },
        },
    },
    "Anchor": {
        "type": "object",
        "required": ["name", "type", "tree_size", "checkpoint", "evidence"],
        "properties": {
            "name": {"type": "string", "description": "the configured anchor: tsa or chain"},
            "type": {"type": "string", "description": "rfc3161 or evm (others may follow)"},
            "tree_size": {"type": "integer", "minimum": 1},
            "checkpoint": {"type": "string", "description": "the anchored signed checkpoint"},
            "anchored_at": {"type": "string", "format": "date-time"},
            "evidence": {
                "type": "object",
                "description": "rfc3161: {tsa_url, response (base64 DER TimeStampResp over "
                "the anchored root), gen_time, tsa_name}; evm: {chain_id, transaction, "
                "block_number, block_hash, block_time, from}",
            },
        },
    },
    "Consistency": {
        "type": "object",
        "required": ["from", "to", "path"],
        "properties": {
            "from": {"type": "integer", "minimum": 1},
            "to": {"type": "integer", "minimum": 1},
            "path": {
                "type": "array",
                "items": _HEX64,
                "description": "RFC 9162 consistency proof, lowercase hex",
            },
        },
    },
    "Pending": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "const": "pending"},
            "message": {"type": "string"},
        },
    },
    "Checkpoint": {
        "type": "object",
        "required": ["tree_size", "root_hash", "timestamp", "note"],
        "properties": {
            "tree_size": {"type": "integer", "minimum": 0},
            "root_hash": _HEX64,
            "timestamp": _TIME,
            "key_id": {"type": "string"},
            "note": {"type": "string"},
        },
    },
    "Keys": {
        "type": "object",
        "required": ["origin", "keys"],
        "properties": {
            "origin": {"type": "string"},
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key_id", "algorithm", "public_key", "vkey"],
                    "properties": {
                        "key_id": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
                        "algorithm": {"type": "string", "const": "ed25519"},
                        "public_key": {"type": "string", "description": "base64, 32 bytes"},
                        "vkey": {"type": "string", "description": "signed-note verifier key"},
                        "status": {"type": "string", "enum": ["active", "retired"]},
                        "not_before": {**_TIME, "description": "signing from"},
                        "not_after": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "retired at (null while active)",
                        },
                    },
                },
            },
        },
    },
    "Config": {"type": "object", "additionalProperties": True},
    "Session": {
        "type": "object",
        "required": ["seller", "role", "key_id"],
        "properties": {
            "seller": {"type": "string", "description": "the name the key was created for"},
            "role": {"type": "string", "const": "staff"},
            "key_id": {"type": "string"},
        },
    },
    "Verification": {
        "type": "object",
        "required": ["verified", "checks", "failed", "keys"],
        "properties": {
            "verified": {"type": "boolean"},
            "checks": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the checks that passed, in the order they ran",
            },
            "failed": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["check", "message"],
                        "properties": {
                            "check": {"type": "string", "description": "the SDK's check name"},
                            "message": {"type": "string"},
                        },
                    },
                ]
            },
            "result": {"type": "object", "description": "what a verified proof proves"},
            "keys": {"type": "array", "items": {"type": "string"}, "description": "vkeys used"},
        },
    },
    "NewWebhook": {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "url": {
                "type": "string",
                "format": "uri",
                "maxLength": 2048,
                "description": (
                    "http or https; a public address or a name: no private, loopback,"
                    " link-local or reserved address, however spelt"
                ),
            },
            "events": {
                "type": "array",
                "items": {"type": "string", "enum": ["registration.conflict"]},
                "description": "default: every event type",
            },
        },
    },
    "Webhook": {
        "type": "object",
        "required": ["id", "url", "events", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"type": "string"}},
            "created_at": _TIME,
        },
    },
    "WebhookCreated": {
        "allOf": [
            _ref("Webhook"),
            {
                "type": "object",
                "required": ["secret"],
                "properties": {
                    "secret": {
                        "type": "string",
                        "description": "HMAC-SHA256 key of the signatures; shown only here",
                    }
                },
            },
        ]
    },
    "WebhookList": {
        "type": "object",
        "required": ["webhooks"],
        "properties": {"webhooks": {"type": "array", "items": _ref("Webhook")}},
    },
    "Delivery": {
        "type": "object",
        "required": ["id", "event_id", "event_type", "status", "attempts", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "event_id": {"type": "string"},
            "event_type": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer", "minimum": 0},
            "created_at": _TIME,
            "next_attempt_at": {"oneOf": [_TIME, {"type": "null"}]},
            "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "delivered_at": {"oneOf": [_TIME, {"type": "null"}]},
        },
    },
    "DeliveryList": {
        "type": "object",
        "required": ["deliveries"],
        "properties": {"deliveries": {"type": "array", "items": _ref("Delivery")}},
    },
    "ConflictEvent": {
        "type": "object",
        "required": ["id", "type", "created_at", "data"],
        "properties": {
            "id": {"type": "string", "description": "the same on every retry: deduplicate on it"},
            "type": {"type": "string", "const": "registration.conflict"},
            "created_at": _TIME,
            "data": {
                "type": "object",
                "required": ["registration_id", "upload", "matches"],
                "properties": {
                    "registration_id": {
                        "type": "string",
                        "description": "your earliest registration the upload copies",
                    },
                    "upload": {
                        "type": "object",
                        "required": ["received_at", "sha256"],
                        "properties": {
                            "received_at": _TIME,
                            "sha256": {**_HEX64, "description": "SHA-256 of the refused file"},
                        },
                        "description": "the refused upload (never who sent it)",
                    },
                    "matches": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["registration_id", "received_at", "distances"],
                            "properties": {
                                "registration_id": {"type": "string"},
                                "received_at": _TIME,
                                "distances": {
                                    "type": "object",
                                    "additionalProperties": {"type": "number"},
                                },
                                "verdict": {"type": "string", "enum": ["copy", "similar"]},
                                "exact": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "tree_size": {"type": "integer"},
            "sealing": {
                "type": "boolean",
                "description": "whether this replica is the one that seals",
            },
        },
    },
}

_TILE_PATH = (
    r"^(0|[1-9]|[1-5][0-9]|6[0-3]|entries)/"
    r"(x(00[1-9]|0[1-9][0-9]|[1-9][0-9]{2})/(x[0-9]{3}/){0,3})?[0-9]{3}"
    r"(\.p/([1-9][0-9]?|1[0-9]{2}|2[0-4][0-9]|25[0-5]))?$"
)
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean"},
    "description": "block until sealed (up to the server's wait timeout) and include the proof",
}


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shotstamp",
            "version": __version__,
            "description": "Register product photos into a signed, append-only Merkle log; "
            "get offline-verifiable proofs; catch copies at upload.",
        },
        "webhooks": {
            "registration.conflict": {
                "post": {
                    "summary": "Someone else uploaded a copy of one of your photos",
                    "description": "Sent to each of your webhooks when an upload by another "
                    "seller is refused as a copy of your registration. Header "
                    "`Shotstamp-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 with the "
                    "webhook secret over `<t>.<raw body>`; refuse a stale `t`. Retried with "
                    "exponential backoff until a 2xx answer; deliver at least once.",
                    "parameters": [
                        {
                            "name": "Shotstamp-Signature",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "Shotstamp-Event",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "Shotstamp-Delivery",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ConflictEvent")}},
                    },
                    "responses": {"2XX": {"description": "received; anything else is retried"}},
                }
            }
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/registrations": {
                "post": {
                    "summary": "Register a photo",
                    "security": [{"bearer": []}],
                    "parameters": [
                        _WAIT,
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                            "description": "retries with the same key never register twice",
                        },
                    ],
                    "requestBody": _UPLOAD,
                    "responses": {
                        "201": _json(_ref("Registration"), "registered"),
                        "200": _json(
                            _ref("Registration"),
                            "you already registered this photo or a near-duplicate of it",
                        ),
                        "409": _json(_ref("Conflict"), "a copy of another seller's photo"),
                        **_AUTH_ERRORS,
                        **_UPLOAD_ERRORS,
                        "422": _error(
                            "corrupt_image: an image that cannot be decoded (truncated, "
                            "corrupt); idempotency_key_reused: the Idempotency-Key was sent "
                            "before with another photo or other fields"
                        ),
                    },
                }
            },
            "/v1/checks": {
                "post": {
                    "summary": "Look for earlier registrations of a photo without registering",
                    "security": [{"bearer": []}],
                    "requestBody": _UPLOAD,
                    "responses": {
                        "200": _json(_ref("Check"), "fingerprints and matches"),
                        **_AUTH_ERRORS,
                        **_UPLOAD_ERRORS,
                    },
                }
            },
            "/v1/registrations/{id}": {
                "get": {
                    "summary": "One of your registrations (staff: any)",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "responses": {
                        "200": _json(_ref("Registration"), "the registration"),
                        "404": _error("no such registration visible to you"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/registrations/{id}/proof": {
                "get": {
                    "summary": "The inclusion proof bundle of a sealed registration",
                    "security": [{"bearer": []}],
                    "parameters": [
                        _ID,
                        _WAIT,
                        {
                            "name": "consistency_with",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1},
                            "description": "also carry the consistency proof to (or from) "
                            "the tree of this size",
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("Proof"), "the proof"),
                        "202": {
                            **_json(_ref("Pending"), "not sealed yet"),
                            "headers": _RETRY_AFTER,
                        },
                        "400": _error("'wait' is not true or false"),
                        "404": _error("no such registration visible to you"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/webhooks": {
                "post": {
                    "summary": "Register a webhook; its signing secret is shown once",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewWebhook")}},
                    },
                    "responses": {
                        "201": _json(_ref("WebhookCreated"), "created"),
                        "400": _error(
                            "invalid URL or events, duplicate URL, too many webhooks, "
                            "invalid_json, invalid_header"
                        ),
                        "408": _error("body_timeout: the body arrived too slowly"),
                        "413": _error("body too large"),
                        "415": _error("not application/json"),
                        **_AUTH_ERRORS,
                    },
                },
                "get": {
                    "summary": "Your webhooks (without secrets)",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": _json(_ref("WebhookList"), "webhooks"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/v1/webhooks/{id}": {
                "delete": {
                    "summary": "Delete a webhook and its pending deliveries",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "responses": {
                        "204": {"description": "deleted"},
                        "404": _error("no such webhook of yours"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/webhooks/{id}/deliveries": {
                "get": {
                    "summary": "A webhook's most recent deliveries (newest first, up to 100)",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "responses": {
                        "200": _json(_ref("DeliveryList"), "deliveries"),
                        "404": _error("no such webhook of yours"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/checkpoints/latest": {
                "get": {
                    "summary": "The latest signed checkpoint",
                    "responses": {
                        "200": _json(_ref("Checkpoint"), "checkpoint"),
                        "503": _error("no checkpoint published yet"),
                    },
                }
            },
            "/v1/checkpoints/{size}": {
                "get": {
                    "summary": "The checkpoint published at this tree size",
                    "parameters": [
                        {
                            "name": "size",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Checkpoint"), "checkpoint"),
                        "400": _error("not a tree size"),
                        "404": _error("no checkpoint at that size"),
                    },
                }
            },
            "/v1/proofs/consistency": {
                "get": {
                    "summary": "Proof that the tree of 'to' leaves extends the tree of 'from'",
                    "parameters": [
                        {
                            "name": name,
                            "in": "query",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1},
                        }
                        for name in ("from", "to")
                    ],
                    "responses": {
                        "200": _json(_ref("Consistency"), "the proof"),
                        "400": _error("not tree sizes, or from > to, or from = 0"),
                        "404": _error("the log has no tree of size 'to' yet"),
                    },
                }
            },
            "/v1/keys": {
                "get": {
                    "summary": "The log's origin and every signing key, active and retired",
                    "responses": {"200": _json(_ref("Keys"), "keys, newest first")},
                }
            },
            "/checkpoint": {
                "get": {
                    "summary": "The latest signed checkpoint note (c2sp.org/tlog-tiles)",
                    "responses": {
                        "200": {
                            "description": "the note",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "503": _error("no checkpoint published yet"),
                    },
                }
            },
            "/tile/{path}": {
                "get": {
                    "summary": "A hash tile, tile/<L>/<N>[.p/<W>] (c2sp.org/tlog-tiles)",
                    "description": "Entry bundles (tile/entries/...) are not published: "
                    "leaves name sellers and photo hashes.",
                    "parameters": [
                        {
                            "name": "path",
                            "in": "path",
                            "required": True,
                            # The canonical encoding, as tiles.parse_tile_path accepts it
                            # (indices up to 15 digits; no tree needs more).
                            "schema": {"type": "string", "pattern": _TILE_PATH},
                            "description": "<L>/<N>[.p/<W>], N in x-prefixed 3-digit groups",
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "W (or 256) concatenated 32-byte hashes",
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                }
                            },
                        },
                        "400": _error("not a canonical tile path"),
                        "404": _error("no such tile yet, or an entry bundle"),
                    },
                }
            },
            "/v1/config": {
                "get": {
                    "summary": "Limits and the matching rule in use",
                    "responses": {"200": _json(_ref("Config"), "configuration")},
                }
            },
            "/v1/registrations/{id}/thumbnail": {
                "get": {
                    "summary": "A small JPEG of the registered photo (staff only; for the desk)",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "responses": {
                        "200": {
                            "description": "the thumbnail",
                            "content": {"image/jpeg": {"schema": {"type": "string"}}},
                        },
                        "403": _error("not a staff key"),
                        "404": _error("no such registration, or no thumbnail kept of it"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/desk/session": {
                "get": {
                    "summary": "Whose staff key this is (the desk signs in with it)",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": _json(_ref("Session"), "a staff key"),
                        "403": _error("a seller key: the desk needs a staff key"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/desk/evidence": {
                "post": {
                    "summary": "A dispute file for a registration and a suspect image (staff)",
                    "description": "Compares the image with the registration as /v1/checks "
                    "does and answers with one self-contained HTML page: both pictures, the "
                    "match and its geometry, the proof bundle, the log's public keys, every "
                    "anchor with the service's check of it, and how to check it independently; "
                    "the page re-runs the proof check in the reader's browser without network. "
                    "format=pdf: the same page printed by Chromium.",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "format",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["html", "pdf"]},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image", "registration_id"],
                                    "properties": {
                                        "image": {"type": "string", "format": "binary"},
                                        "registration_id": {"type": "string"},
                                        "suspect_name": {
                                            "type": "string",
                                            "maxLength": 500,
                                            "description": "the suspect's file name, shown",
                                        },
                                    },
                                },
                                "encoding": {
                                    "image": {"contentType": "image/*, application/octet-stream"}
                                },
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the dispute file",
                            "content": {
                                "text/html": {"schema": {"type": "string"}},
                                "application/pdf": {
                                    "schema": {"type": "string", "format": "binary"}
                                },
                            },
                        },
                        **_UPLOAD_ERRORS,
                        "403": _error("a seller key: dispute files are for staff"),
                        "404": _error("no such registration"),
                        "409": _error("the registration is not sealed yet"),
                        "422": _error(
                            "an image that cannot be decoded, or one that does not match the "
                            "registration (no_match)"
                        ),
                        "501": _error("PDF asked for, but this service has no Chromium"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/verify": {
                "post": {
                    "summary": "Verify a proof bundle with this service's keys "
                    "(for browsers without Ed25519)",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "image_sha256",
                            "in": "query",
                            "required": False,
                            "schema": _HEX64,
                            "description": "also check that the registered file has this SHA-256",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Proof")}},
                    },
                    "responses": {
                        "200": _json(_ref("Verification"), "verified or not, check by check"),
                        "400": _error("image_sha256 is not 64 lowercase hex digits"),
                        "413": _error("larger than a proof bundle can be"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "Where to start: links to the desk, this document, the keys",
                    "responses": {
                        "200": {
                            "description": "JSON links, or an HTML page when the Accept "
                            "header prefers text/html",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["service", "links", "docs"],
                                        "properties": {
                                            "service": {"type": "string"},
                                            "links": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                            "docs": {"type": "string"},
                                        },
                                    }
                                },
                                "text/html": {},
                            },
                        },
                    },
                }
            },
            "/desk": {
                "get": {
                    "summary": "The dispute desk: a page for staff (data needs a staff key)",
                    "responses": {
                        "200": {"description": "HTML", "content": {"text/html": {}}},
                    },
                }
            },
            "/desk/{asset}": {
                "get": {
                    "summary": "The desk's scripts and styles",
                    "parameters": [
                        {
                            "name": "asset",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "a script or stylesheet"},
                        "404": _error("no such file"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": _json(_ref("Health"), "healthy")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of this replica (text exposition format)",
                    "responses": {
                        "200": {
                            "description": "uploads by outcome, conflicts, fingerprint and "
                            "seal latency histograms, log size, pending queue, index size",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
        },
    }
