"""Webhooks: tell a seller when someone uploads a copy of one of its photos.

Flow:

1. A conflicting upload is answered 409 at once; `WebhookDispatcher.conflict`
   only schedules the work (a background task) and never awaits it.
2. That task writes one delivery per webhook of each seller whose photo was
   copied into the outbox table (`webhook_deliveries`), durably, and wakes
   the delivery loop. The body is fixed at this point: every retry sends the
   same bytes and the same event id.
3. The delivery loop claims due deliveries with a lease (so a crash, or a
   second replica, retries a delivery only once its lease ends), POSTs each
   signed with the webhook's secret (`Shotstamp-Signature`, see
   `shotstamp.webhooks`), and records the outcome: delivered on a 2xx,
   otherwise retried after an exponential, jittered backoff until
   `webhook_max_attempts`, then marked failed.

Delivery is at least once: a receiver should deduplicate on the event id.
Between the 409 and the outbox write (milliseconds) a crash loses the event;
after it, nothing does.

Destinations: http(s) only, no credentials in the URL, and unless
`webhook_allow_private` no loopback, private or link-local address, checked
when the webhook is created and again, after DNS resolution, at each delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from shotstamp._webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign_webhook
from shotstamp_service import __version__
from shotstamp_service.config import Config
from shotstamp_service.records import (
    WebhookDelivery,
    WebhookRecord,
    format_time,
    new_registration_id,
    utc_now,
)
from shotstamp_service.registry import ResolvedMatch
from shotstamp_service.store import Store

__all__ = [
    "CONFLICT_EVENT",
    "EVENT_TYPES",
    "MAX_WEBHOOKS_PER_SELLER",
    "InvalidWebhookURL",
    "WebhookDispatcher",
    "check_webhook_url",
    "conflict_event",
    "new_webhook",
]

log = logging.getLogger(__name__)

CONFLICT_EVENT = "registration.conflict"
EVENT_TYPES = (CONFLICT_EVENT,)
MAX_WEBHOOKS_PER_SELLER = 10
MAX_URL_LENGTH = 2048
# Deliveries handed out per claim, and at most this many in flight at once.
_BATCH = 32
# How long a claimed delivery is reserved beyond its own timeout.
_LEASE_MARGIN = 30.0
# The loop also wakes this often to pick up retries that became due.
_POLL_INTERVAL = 1.0


class InvalidWebhookURL(ValueError):
    """A webhook URL the service will not call."""


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_webhook_url(url: Any, *, allow_private: bool) -> str:
    """The URL if the service may call it; raises `InvalidWebhookURL` saying why not."""
    if not isinstance(url, str) or not url:
        raise InvalidWebhookURL("'url' must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookURL(f"'url' is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidWebhookURL("'url' contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhookURL(f"webhook URLs must be http or https, not {parts.scheme or '?'!r}")
    if not parts.hostname:
        raise InvalidWebhookURL("the webhook URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookURL(
            "credentials in webhook URLs are not accepted; check deliveries by their signature"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise InvalidWebhookURL(f"the webhook URL has a bad port: {exc}") from exc
    if not allow_private:
        host = parts.hostname
        if host == "localhost" or host.endswith(".localhost"):
            raise InvalidWebhookURL("webhook URLs may not point at localhost")
        try:
            literal = _address_allowed(host)
        except ValueError:
            literal = True  # a name: checked after resolution, at delivery
        if not literal:
            raise InvalidWebhookURL(
                f"webhook URLs may not point at a private, loopback or link-local address ({host})"
            )
    return url


def new_webhook(seller: str, url: str, events: Iterable[str]) -> WebhookRecord:
    return WebhookRecord(
        id=f"wh_{new_registration_id()}",
        seller=seller,
        url=url,
        secret=f"whsec_{secrets.token_urlsafe(32)}",
        events=tuple(events),
        created_at=format_time(utc_now()),
    )


def _match_json(match: ResolvedMatch) -> dict[str, Any]:
    return {
        "registration_id": match.registration.id,
        "received_at": match.registration.received_at,
        "distances": match.distances,
        "verdict": match.verdict,
        "exact": match.exact,
    }


def conflict_event(
    matches: list[ResolvedMatch], *, upload_received_at: str, upload_sha256: str
) -> dict[str, Any]:
    """The `registration.conflict` event for one seller's copied registrations.

    Names the registrations that were copied, how close the copy is and when
    it was uploaded; never who uploaded it.
    """
    ordered = sorted(matches, key=lambda m: m.registration.received_at)
    return {
        "id": f"evt_{new_registration_id()}",
        "type": CONFLICT_EVENT,
        "created_at": format_time(utc_now()),
        "data": {
            "registration_id": ordered[0].registration.id,
            "upload": {"received_at": upload_received_at, "sha256": upload_sha256},
            "matches": [_match_json(m) for m in ordered],
        },
    }


class _PublicResolver(AbstractResolver):
    """Drops private addresses from DNS answers, so a name cannot smuggle one in."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        allowed = [a for a in answers if _address_allowed(a["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to private, loopback or link-local addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class WebhookDispatcher:
    """Writes conflict events to the outbox and delivers the outbox."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._soonest = float("inf")  # the earliest retry scheduled by this process
        self.delivered = 0  # counters, for tests and /healthz-style reporting
        self.failed_attempts = 0

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        resolver: AbstractResolver = aiohttp.DefaultResolver()
        if not self.config.webhook_allow_private:
            resolver = _PublicResolver(resolver)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver, limit=_BATCH),
            headers={"User-Agent": f"shotstamp-webhooks/{__version__}"},
        )
        self._loop_task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def stop(self) -> None:
        """Stop claiming; let deliveries in flight finish (bounded by their timeout)."""
        self._stopping = True
        self._wake.set()
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(self._loop_task, self.config.webhook_timeout + 5)
            except TimeoutError:
                log.warning("webhook deliveries still running at shutdown; they will be retried")
            self._loop_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- events ----------------------------------------------------------------
    def conflict(self, matches: list[ResolvedMatch], image: bytes, received_at: str) -> None:
        """Schedule conflict events for the sellers whose photos `image` copies.

        Returns at once: the upload's 409 answer never waits for this.
        """
        if not matches or self._stopping:
            return
        task = asyncio.create_task(self._enqueue_conflict(matches, image, received_at))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _enqueue_conflict(
        self, matches: list[ResolvedMatch], image: bytes, received_at: str
    ) -> None:
        try:
            by_seller: dict[str, list[ResolvedMatch]] = {}
            for match in matches:
                by_seller.setdefault(match.registration.seller, []).append(match)
            hooks = await self.store.webhooks_for_sellers(by_seller)
            hooks = [h for h in hooks if CONFLICT_EVENT in h.events]
            if not hooks:
                return
            digest = await asyncio.to_thread(_sha256_hex, image)
            now = time.time()
            deliveries = []
            for seller, own in by_seller.items():
                event = conflict_event(own, upload_received_at=received_at, upload_sha256=digest)
                payload = json.dumps(event, separators=(",", ":")).encode()
                for hook in hooks:
                    if hook.seller != seller:
                        continue
                    deliveries.append(
                        WebhookDelivery(
                            id=f"whd_{new_registration_id()}",
                            webhook_id=hook.id,
                            event_id=event["id"],
                            event_type=CONFLICT_EVENT,
                            payload=payload,
                            created_at=event["created_at"],
                            next_attempt_at=now,
                        )
                    )
            await self.store.enqueue_deliveries(deliveries)
            self._wake.set()
        except Exception:
            log.exception("could not queue conflict webhook events")

    # -- delivery ----------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before claiming: an event queued meanwhile wakes the next wait.
            self._wake.clear()
            try:
                claimed = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery loop failed; retrying")
                claimed = 0
            if claimed >= _BATCH or self._stopping:
                continue
            # Sleep until woken, the soonest retry this process scheduled, or the
            # poll (which also finds retries other replicas scheduled).
            pause = min(_POLL_INTERVAL, max(0.0, self._soonest - time.time()))
            self._soonest = float("inf")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def deliver_due(self) -> int:
        """Claim the deliveries due now and attempt each once; returns how many."""
        now = time.time()
        lease = now + self.config.webhook_timeout + _LEASE_MARGIN
        due = await self.store.claim_deliveries(now, lease, _BATCH)
        if due:
            await asyncio.gather(*(self._attempt(d) for d in due))
        return len(due)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failed ones (equal jitter)."""
        cfg = self.config
        ceiling = min(cfg.webhook_retry_max, cfg.webhook_retry_base * 2.0 ** (attempts - 1))
        return ceiling / 2 + random.random() * ceiling / 2

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        status_code: int | None = None
        error: str | None = None
        try:
            status_code = await self._post(delivery)
            if not 200 <= status_code < 300:
                error = f"answered HTTP {status_code}"
        except InvalidWebhookURL as exc:
            error = f"refused destination: {exc}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        attempts = delivery.attempts + 1
        if error is None:
            self.delivered += 1
            await self.store.finish_delivery_attempt(
                delivery.id,
                status="delivered",
                next_attempt_at=time.time(),
                last_status=status_code,
                last_error=None,
                delivered_at=format_time(utc_now()),
            )
            return
        self.failed_attempts += 1
        give_up = attempts >= self.config.webhook_max_attempts
        log.info(
            "webhook delivery %s to %s failed (attempt %d%s): %s",
            delivery.id,
            delivery.url,
            attempts,
            ", giving up" if give_up else "",
            error,
        )
        next_attempt_at = time.time() + (0.0 if give_up else self.backoff(attempts))
        if not give_up:
            self._soonest = min(self._soonest, next_attempt_at)
        await self.store.finish_delivery_attempt(
            delivery.id,
            status="failed" if give_up else "pending",
            next_attempt_at=next_attempt_at,
            last_status=status_code,
            last_error=error,
            delivered_at=None,
        )

    async def _post(self, delivery: WebhookDelivery) -> int:
        session = self._session
        if session is None:
            raise RuntimeError("the webhook dispatcher is not started")
        # Checked again at each try: the rules may have tightened since creation.
        check_webhook_url(delivery.url, allow_private=self.config.webhook_allow_private)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_webhook(delivery.payload, delivery.secret),
            EVENT_HEADER: delivery.event_type,
            DELIVERY_HEADER: delivery.id,
        }
        async with session.post(
            delivery.url,
            data=delivery.payload,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout),
        ) as response:
            # Read a little so the connection can be reused; the body is not used.
            await response.content.read(4096)
            return response.status


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
