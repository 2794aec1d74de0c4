"""Webhooks: tell a seller when someone uploads a copy of one of its photos.

Flow:

1. A conflicting upload is answered 409 at once; `WebhookDispatcher.conflict`
   only schedules the work (a background task) and never awaits it.
2. That task writes one delivery per webhook of each seller whose photo was
   copied into the outbox table (`webhook_deliveries`), durably, and wakes
   the delivery loop. The body is fixed at this point: every retry sends the
   same bytes and the same event id.
3. The delivery loop claims due deliveries with a lease (so a crash, or a
   second replica, retries a delivery only once its lease ends) and starts
   each as a task of its own, which POSTs it signed with the webhook's secret
   (`Shotstamp-Signature`, see `shotstamp.webhooks`) and records the outcome:
   delivered on a 2xx, otherwise retried after an exponential, jittered
   backoff until `webhook_max_attempts`, then marked failed.
4. No delivery waits for another's: at most `webhook_concurrency` run at
   once, at most `webhook_seller_concurrency` of one seller's (a seller at
   its cap is left out of claims), each bounded by `webhook_connect_timeout`
   and `webhook_timeout`. An endpoint that accepts and never answers holds
   only its own seller's slots.

Delivery is at least once: a receiver should deduplicate on the event id.
Between the 409 and the outbox write (milliseconds) a crash loses the event;
after it, nothing does.

Destinations: http(s) only, no credentials in the URL, and unless
`webhook_allow_private` only public addresses (`public_address`). The host is
read by `webhook_host`, the parser aiohttp itself uses (IDNA/NFKC: `①②⑦.0.0.1`
is 127.0.0.1); a literal address is refused when the webhook is created, and
every address a delivery resolves to or connects to is checked again, each
try (see `_public_socket`), so a DNS answer that changes after creation
(rebinding) is caught too. A refused delivery is recorded as refused, with no
status or timing from the address.
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
from yarl import URL

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
from shotstamp_service.store import OutboxStore

__all__ = [
    "CONFLICT_EVENT",
    "EVENT_TYPES",
    "MAX_WEBHOOKS_PER_SELLER",
    "InvalidWebhookURL",
    "RefusedDestination",
    "WebhookDispatcher",
    "check_webhook_url",
    "conflict_event",
    "delivery_connector",
    "new_webhook",
    "public_address",
    "webhook_host",
]

log = logging.getLogger(__name__)

CONFLICT_EVENT = "registration.conflict"
EVENT_TYPES = (CONFLICT_EVENT,)
MAX_WEBHOOKS_PER_SELLER = 10
MAX_URL_LENGTH = 2048
# How long a claimed delivery is reserved beyond twice its timeout (it may
# wait for one of its seller's deliveries in flight before its own try).
_LEASE_MARGIN = 30.0
# The loop also wakes this often to pick up retries that became due.
_POLL_INTERVAL = 1.0


class InvalidWebhookURL(ValueError):
    """A webhook URL the service will not call."""


class RefusedDestination(OSError):
    """A delivery's address is not public: nothing was sent to it.

    An OSError so that aiohttp treats it as a failed connection attempt.
    """


# Not public, though Python's `is_global` may say so (IANA lists some as
# global-reachable) or it embeds an IPv4 address that may be private.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 connects to the local host
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)
# IPv6 is allowed only inside global unicast 2000::/3, which leaves out ::/8
# (unspecified, loopback, IPv4-compatible, IPv4-mapped), 64:ff9b::/96 and
# 64:ff9b:1::/48 (NAT64), 100::/64, fc00::/7 (ULA), fe80::/10, fec0::/10
# (site-local) and ff00::/8 (multicast); then these, inside it:
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4, embeds an IPv4 address
        "3fff::/20",  # documentation
    )
)


def public_address(address: str) -> bool:
    """True if webhooks may connect to this IPv4 or IPv6 address (a literal)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip not in _GLOBAL_UNICAST_V6 or any(ip in net for net in _BLOCKED_V6):
            return False
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in net for net in _BLOCKED_V4):
        return False
    return ip.is_global and not ip.is_multicast


def webhook_host(url: str | URL) -> str:
    """The host a delivery to `url` connects to, as aiohttp reads it.

    yarl (aiohttp's URL parser) applies IDNA with NFKC, so `１２７．０．０．１`
    and `①②⑦.0.0.1` come out as `127.0.0.1`: registration and delivery must
    judge this form, never the spelling the seller sent.
    """
    target = url if isinstance(url, URL) else URL(url)
    host = target.raw_host
    if not host:
        raise InvalidWebhookURL("the webhook URL has no host")
    return host


def _literal_address(host: str) -> str | None:
    """The address `host` names if it is a literal (IPv6, or IPv4 in any form C accepts)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        # inet_aton reads 127.1, 0x7f.0.0.1 and 2130706433 as 127.0.0.1, as resolvers do.
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


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
    try:
        host = webhook_host(url)
    except ValueError as exc:  # yarl: a host IDNA cannot encode
        raise InvalidWebhookURL(f"the webhook URL's host is not valid: {exc}") from exc
    literal = _literal_address(host)
    if literal is not None and ":" not in host and literal != host:
        # aiohttp refuses these at delivery; say so now rather than fail every try.
        raise InvalidWebhookURL(
            f"write the webhook's IPv4 address as four decimal numbers ({literal}), not {host!r}"
        )
    if not allow_private:
        name = host.rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            raise InvalidWebhookURL("webhook URLs may not point at localhost")
        if literal is not None and not public_address(literal):
            raise InvalidWebhookURL(
                "webhook URLs must point at a public address; "
                f"{literal} is private, loopback, link-local or reserved"
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


_REFUSED = "webhooks are delivered only to public addresses"


class _PublicResolver(AbstractResolver):
    """Drops non-public addresses from DNS answers, so a name cannot smuggle one in."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        allowed = [a for a in answers if public_address(a["host"])]
        if not allowed:
            raise RefusedDestination(f"{host}: {_REFUSED}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _public_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's socket factory: the last check, on the very address connected to.

    aiohttp skips the resolver for a literal host, so this is what stops one.
    """
    family, kind, proto, _, address = addr_info
    if not public_address(str(address[0])):
        raise RefusedDestination(_REFUSED)
    return socket.socket(family, kind, proto)


def _refusal(exc: BaseException) -> RefusedDestination | None:
    """The RefusedDestination behind an aiohttp connection error, if that is what it was."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, RefusedDestination):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return None


def delivery_connector(
    *, allow_private: bool, limit: int, resolver: AbstractResolver | None = None
) -> aiohttp.TCPConnector:
    """The connector deliveries use: unless `allow_private`, public addresses only."""
    if allow_private:
        return aiohttp.TCPConnector(resolver=resolver, limit=limit)
    return aiohttp.TCPConnector(
        resolver=_PublicResolver(resolver or aiohttp.DefaultResolver()),
        socket_factory=_public_socket,
        limit=limit,
    )


class WebhookDispatcher:
    """Writes conflict events to the outbox and delivers the outbox."""

    def __init__(self, store: OutboxStore, config: Config) -> None:
        self.store = store
        self.config = config
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._inflight: set[asyncio.Task[None]] = set()  # one task per claimed delivery
        self._seller_load: dict[str, int] = {}  # claimed and not finished, per seller
        self._seller_gates: dict[str, asyncio.Semaphore] = {}
        self._session: aiohttp.ClientSession | None = None
        self._soonest = float("inf")  # the earliest retry scheduled by this process
        self.delivered = 0  # counters, for tests and /healthz-style reporting
        self.failed_attempts = 0

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=delivery_connector(
                allow_private=self.config.webhook_allow_private,
                limit=self.config.webhook_concurrency,
            ),
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
            await self._loop_task
            self._loop_task = None
        if self._inflight:
            _, late = await asyncio.wait(self._inflight, timeout=self.config.webhook_timeout + 5)
            if late:
                log.warning("webhook deliveries still running at shutdown; they will be retried")
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
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
            # Cleared before claiming: an event queued, or a delivery finished,
            # meanwhile wakes the next wait.
            self._wake.clear()
            free = self.config.webhook_concurrency - len(self._inflight)
            started = 0
            if free > 0:
                try:
                    started = len(await self._start_due(free))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook delivery loop failed; retrying")
            if (started and started >= free) or self._stopping:
                continue
            # Sleep until woken, the soonest retry this process scheduled, or the
            # poll (which also finds retries other replicas scheduled).
            pause = min(_POLL_INTERVAL, max(0.0, self._soonest - time.time()))
            self._soonest = float("inf")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def deliver_due(self) -> int:
        """Claim the deliveries due now, attempt each once and wait; returns how many."""
        tasks = await self._start_due(self.config.webhook_concurrency - len(self._inflight))
        if tasks:
            await asyncio.wait(tasks)
        return len(tasks)

    async def _start_due(self, limit: int) -> list[asyncio.Task[None]]:
        """Claim up to `limit` due deliveries and start a task for each; returns them."""
        if limit <= 0:
            return []
        cap = self.config.webhook_seller_concurrency
        now = time.time()
        lease = now + 2 * self.config.webhook_timeout + _LEASE_MARGIN
        busy = [seller for seller, load in self._seller_load.items() if load >= cap]
        due = await self.store.claim_deliveries(
            now, lease, limit, per_seller=cap, exclude_sellers=busy
        )
        tasks = []
        for delivery in due:
            self._seller_load[delivery.seller] = self._seller_load.get(delivery.seller, 0) + 1
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            tasks.append(task)
        return tasks

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        """One try of one delivery, once its seller has fewer than its cap in flight."""
        seller = delivery.seller
        gate = self._seller_gates.setdefault(
            seller, asyncio.Semaphore(self.config.webhook_seller_concurrency)
        )
        try:
            async with gate:
                # A claim may add up to the cap to a seller with some in flight.
                if not self._stopping:  # else its lease runs out and it is tried again
                    await self._attempt(delivery)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", delivery.id)
        finally:
            self._seller_load[seller] -= 1
            if not self._seller_load[seller]:
                del self._seller_load[seller]
                del self._seller_gates[seller]
            self._wake.set()  # a slot is free

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failed ones (equal jitter)."""
        cfg = self.config
        ceiling = min(cfg.webhook_retry_max, cfg.webhook_retry_base * 2.0 ** (attempts - 1))
        return ceiling / 2 + random.random() * ceiling / 2

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        status_code: int | None = None
        error: str | None = None
        refused = False  # a refused destination is not retried
        try:
            status_code = await self._post(delivery)
            if not 200 <= status_code < 300:
                error = f"answered HTTP {status_code}"
        except InvalidWebhookURL as exc:
            error = f"refused destination: {exc}"
            refused = True
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if _refusal(exc) is not None:
                # Nothing was sent; no status, error text or timing from that address.
                error, refused = f"refused destination: {_REFUSED}", True
            else:
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
        give_up = refused or attempts >= self.config.webhook_max_attempts
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
            URL(delivery.url),  # the parsed URL that check_webhook_url judged
            data=delivery.payload,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(
                total=self.config.webhook_timeout,
                connect=min(self.config.webhook_connect_timeout, self.config.webhook_timeout),
            ),
        ) as response:
            # Read a little so the connection can be reused; the body is not used.
            await response.content.read(4096)
            return response.status


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
