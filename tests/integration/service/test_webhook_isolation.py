"""Webhook deliveries are independent: one seller's dead endpoints delay only that seller.

Issue 19, item 7: with ten webhooks on an endpoint that accepts connections
and never answers, another seller's delivery used to wait for the whole batch
to time out (43 s after its 409). Real sockets throughout: a black-hole TCP
listener for one seller, an aiohttp receiver for the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from shotstamp_service.records import WebhookDelivery, WebhookRecord
from tests.kit import imagegen

SELLER_CAP = 3


@pytest.fixture
def service_config(tmp_path, store_target):
    from tests.kit.servicekit import service_settings

    return service_settings(
        tmp_path,
        store_target.url,
        webhook_allow_private=True,  # the receivers listen on 127.0.0.1
        webhook_timeout=8,
        webhook_connect_timeout=2,
        webhook_retry_base=60,  # a hung try is not retried within the test
        webhook_seller_concurrency=SELLER_CAP,
    )


class BlackHole:
    """Accepts connections, reads what is sent, never answers."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.most_open = 0
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> BlackHole:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self._writers.append(writer)
        try:
            while await reader.read(65536):
                pass
        finally:
            self.open -= 1

    async def stop(self) -> None:
        """Hang up on everyone, so the service's tries end now rather than at their timeout."""
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def black_hole() -> AsyncIterator[BlackHole]:
    hole = await BlackHole().start()
    yield hole
    await hole.stop()


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def add_webhook(service, key: str, url: str) -> dict[str, Any]:
    resp = await service.client.post("/v1/webhooks", json={"url": url}, headers=service.auth(key))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_a_black_hole_endpoint_delays_only_its_own_seller(
    service, black_hole, aiohttp_server
):
    hits: list[float] = []

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        hits.append(time.monotonic())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    receiver = await aiohttp_server(app)

    hostile, honest, thief = [await service.key(s) for s in ("hostile", "honest", "thief")]
    for n in range(10):
        await add_webhook(service, hostile, f"http://127.0.0.1:{black_hole.port}/{n}")
    honest_hook = await add_webhook(service, honest, str(receiver.make_url("/hook")))
    assert (await service.upload(hostile, imagegen.jpeg(801))).status == 201
    assert (await service.upload(honest, imagegen.jpeg(802))).status == 201

    # The hostile seller's ten deliveries start; only its cap of them at once.
    assert (await service.upload(thief, imagegen.jpeg(801))).status == 409
    await wait_for(lambda: black_hole.accepted >= SELLER_CAP, 5, "the hostile deliveries")
    await asyncio.sleep(0.5)
    assert black_hole.accepted == black_hole.most_open == SELLER_CAP

    # The honest seller's delivery goes out at once beside them.
    resp = await service.upload(thief, imagegen.jpeg(802))
    assert resp.status == 409
    refused_at = time.monotonic()
    await wait_for(lambda: hits, 6, "the honest seller's delivery")
    assert hits[0] - refused_at < 2.0
    await asyncio.sleep(0.2)  # its outcome is written once the receiver has answered
    records = await service.client.get(
        f"/v1/webhooks/{honest_hook['id']}/deliveries", headers=service.auth(honest)
    )
    (record,) = (await records.json())["deliveries"]
    assert record["status"] == "delivered"

    # The hostile ones still hang, within their cap.
    assert black_hole.open == SELLER_CAP and black_hole.accepted == SELLER_CAP


def _hook(n: int, seller: str) -> WebhookRecord:
    return WebhookRecord(
        id=f"wh{n}", seller=seller, url=f"https://h{n}.example/", secret="s", events=(),
        created_at="2026-01-01T00:00:00Z",
    )  # fmt: skip


async def test_a_claim_takes_at_most_the_cap_of_each_seller_and_skips_busy_ones(store_target):
    store = store_target.make()
    await store.open()
    try:
        for n, seller in enumerate(("a", "a", "b", "c")):
            await store.add_webhook(_hook(n, seller))
        # Seller a has the oldest backlog by far; b and c one delivery each, later.
        deliveries = [
            WebhookDelivery(f"d{k}", f"wh{k % 2}", f"e{k}", "t", b"{}", "t", next_attempt_at=k)
            for k in range(20)
        ]
        deliveries += [
            WebhookDelivery("db", "wh2", "eb", "t", b"{}", "t", next_attempt_at=50),
            WebhookDelivery("dc", "wh3", "ec", "t", b"{}", "t", next_attempt_at=60),
        ]
        await store.enqueue_deliveries(deliveries)

        first = await store.claim_deliveries(100, 200, 10, per_seller=2)
        assert [(d.id, d.seller) for d in first] == [
            ("d0", "a"), ("d1", "a"), ("db", "b"), ("dc", "c")
        ]  # fmt: skip
        assert first[0].url == "https://h0.example/" and first[1].url == "https://h1.example/"
        # a busy: left out entirely; its next ones are not taken.
        assert await store.claim_deliveries(100, 200, 10, exclude_sellers=["a"]) == []
        second = await store.claim_deliveries(100, 200, 10, per_seller=5, exclude_sellers=["b"])
        assert [d.id for d in second] == ["d2", "d3", "d4", "d5", "d6"]
        # Without limits per seller, the oldest first up to the limit, as before.
        third = await store.claim_deliveries(100, 200, 4)
        assert [d.id for d in third] == ["d7", "d8", "d9", "d10"]
    finally:
        await store.close()
