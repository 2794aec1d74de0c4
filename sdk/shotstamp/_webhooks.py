"""Webhook signatures: how the service signs a delivery and how a receiver checks it.

Every delivery is a `POST` of a JSON event with the header

    Shotstamp-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

where the HMAC key is the webhook's secret (the UTF-8 bytes of the `whsec_…`
string shown once when the webhook was created) and the signed message is

    <t> || "." || <the raw request body>

Signing the timestamp with the body lets a receiver refuse replays: a
captured delivery cannot be re-sent later with a fresh `t`. A header may hold
several `v1=` values (one per secret while a secret is being replaced); one
valid value is enough.

Usage (in a receiver; pass the raw body bytes, not re-serialised JSON):

    event = verify_webhook(await request.read(),
                           request.headers.get("Shotstamp-Signature"), secret)
    if event.type == "registration.conflict":
        ...
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shotstamp._exceptions import WebhookVerificationError

__all__ = ["WebhookEvent", "verify_webhook"]

SIGNATURE_HEADER = "Shotstamp-Signature"
EVENT_HEADER = "Shotstamp-Event"
DELIVERY_HEADER = "Shotstamp-Delivery"
SIGNATURE_SCHEME = "v1"
# Seconds a delivery's timestamp may differ from the receiver's clock.
DEFAULT_TOLERANCE = 300


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _raw(body: bytes | bytearray | memoryview | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def sign_webhook(
    body: bytes | bytearray | memoryview | str, secret: str, *, timestamp: int | None = None
) -> str:
    """The `Shotstamp-Signature` header value for `body` under `secret`.

    `timestamp` (unix seconds) defaults to now. The service signs with this;
    receivers call `verify_webhook`.
    """
    if not secret:
        raise ValueError("the webhook secret must not be empty")
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},{SIGNATURE_SCHEME}={_mac(secret, moment, _raw(body))}"


@dataclass(frozen=True, kw_only=True)
class WebhookEvent:
    """A verified webhook event: `id` (the same on every retry: deduplicate on it),
    `type` (e.g. `registration.conflict`), `created_at` and the event's `data`."""

    id: str
    type: str
    created_at: datetime
    data: Mapping[str, Any]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _fail(reason: str, check: str) -> WebhookVerificationError:
    return WebhookVerificationError(reason, check=check)


def _parse_header(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise _fail(f"no {SIGNATURE_HEADER} header", "webhook-header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise _fail(
                f"{SIGNATURE_HEADER} item {item.strip()!r} is not name=value", "webhook-header"
            )
        if name == "t":
            if timestamp is not None or not value.isdigit():
                raise _fail(f"{SIGNATURE_HEADER} has a bad or repeated t=", "webhook-header")
            timestamp = int(value)
        elif name == SIGNATURE_SCHEME:
            signatures.append(value.lower())
        # Other schemes are ignored so the service can add one without breaking receivers.
    if timestamp is None:
        raise _fail(f"{SIGNATURE_HEADER} has no t= timestamp", "webhook-header")
    if not signatures:
        raise _fail(f"{SIGNATURE_HEADER} has no {SIGNATURE_SCHEME}= signature", "webhook-header")
    return timestamp, signatures


def verify_webhook(
    body: bytes | bytearray | memoryview | str,
    header: str | None,
    secret: str | Iterable[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> WebhookEvent:
    """Check a webhook delivery's signature and return its event.

    **Parameters:**

    * **body** - the raw request body, exactly as received.
    * **header** - the `Shotstamp-Signature` header value (None if absent).
    * **secret** - the webhook's secret, or several while replacing one.
    * **tolerance** - how many seconds the signed timestamp may be from `now`.
    * **now** - the current unix time (for tests); defaults to the clock.

    Raises `WebhookVerificationError` whose `.check` is `webhook-header`,
    `webhook-timestamp`, `webhook-signature` or `webhook-body`.

    Usage:

        event = verify_webhook(raw_body, headers["Shotstamp-Signature"], "whsec_...")
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(secrets):
        raise ValueError("verify_webhook needs the webhook's (non-empty) secret")
    raw = _raw(body)

    # (1) The header parses: one t= and at least one v1=.
    timestamp, signatures = _parse_header(header)

    # (2) The timestamp is recent, so an old delivery cannot be replayed.
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance:
        raise _fail(
            f"signature timestamp {timestamp} is {abs(clock - timestamp):.0f}s from now, "
            f"more than the {tolerance:g}s tolerance",
            "webhook-timestamp",
        )

    # (3) One of the signatures is the HMAC of this body under one of the secrets.
    expected = [_mac(s, timestamp, raw) for s in secrets]
    if not any(hmac.compare_digest(e, given) for e in expected for given in signatures):
        raise _fail("no signature matches the body under the webhook secret", "webhook-signature")

    # (4) The signed body is an event.
    try:
        decoded = json.loads(raw)
        if not isinstance(decoded, dict):
            raise ValueError("not a JSON object")
        created = datetime.fromisoformat(decoded["created_at"]).astimezone(UTC)
        return WebhookEvent(
            id=str(decoded["id"]),
            type=str(decoded["type"]),
            created_at=created,
            data=dict(decoded.get("data") or {}),
            raw=decoded,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(f"signed body is not a webhook event: {exc}", "webhook-body") from exc
