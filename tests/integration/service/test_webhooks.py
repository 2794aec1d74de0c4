"""Webhooks: a seller whose photo is copied hears of it, from a durable, signed outbox.

Every test delivers to a real local receiver (an aiohttp server on a socket).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shotstamp import AsyncClient, verify_webhook
from tests.kit import imagegen


@pytest.fixture
def service_config(tmp_path, store_target):
    from tests.kit.servicekit import service_settings

    return service_settings(
        tmp_path,
        store_target.url,
        webhook_allow_private=True,  # the receivers listen on 127.0.0.1
        webhook_retry_base=0.05,
        webhook_max_attempts=4,
        webhook_timeout=5,
    )


@dataclass
class Receiver:
    """Records every delivery; answers `script` statuses in turn, then 200."""

    script: list[int] = field(default_factory=list)
    delay: float = 0.0
    hits: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.hits.append({"at": time.monotonic(), "body": body, "headers": dict(request.headers)})
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.script[len(self.hits) - 1] if len(self.hits) <= len(self.script) else 200
        return web.Response(status=status, text="ok")

    @property
    def delivered(self) -> list[dict[str, Any]]:
        statuses = [*self.script, *[200] * len(self.hits)]
        return [hit for hit, status in zip(self.hits, statuses, strict=False) if status == 200]


@pytest.fixture
async def receiver(aiohttp_server):
    async def make(**options: Any) -> Receiver:
        rec = Receiver(**options)
        app = web.Application()
        app.router.add_post("/hook", rec.handle)
        server = await aiohttp_server(app)
        rec.url = str(server.make_url("/hook"))
        return rec

    return make


def url_of(service) -> str:
    return str(service.client.make_url("")).rstrip("/")


async def eventually(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def deliveries(service, key: str, webhook_id: str) -> list[dict[str, Any]]:
    resp = await service.client.get(
        f"/v1/webhooks/{webhook_id}/deliveries", headers=service.auth(key)
    )
    assert resp.status == 200
    return (await resp.json())["deliveries"]


async def settled(service, key: str, webhook_id: str) -> list[dict[str, Any]]:
    """The deliveries once none is pending: a try's outcome is written after the receiver
    answers, so a test that saw the hit may still read the row before it."""
    deadline = time.monotonic() + 15
    while True:
        records = await deliveries(service, key, webhook_id)
        if all(r["status"] != "pending" for r in records):
            return records
        assert time.monotonic() < deadline, f"deliveries still pending: {records}"
        await asyncio.sleep(0.02)


async def test_a_copy_is_reported_to_the_original_seller_signed(service, receiver):
    acme, thief = await service.key("acme"), await service.key("thief")
    mine, theirs = await receiver(), await receiver()
    original = imagegen.jpeg(601)
    stolen = imagegen.recompressed_copy(original, scale=0.5, quality=50)
    async with (
        AsyncClient(url_of(service), api_key=acme) as a,
        AsyncClient(url_of(service), api_key=thief) as t,
    ):
        hook = await a.create_webhook(mine.url)
        assert hook.secret and hook.secret.startswith("whsec_")
        assert hook.events == ("registration.conflict",)
        await t.create_webhook(theirs.url)
        reg = await a.register(original)
        resp = await service.upload(thief, stolen)
        assert resp.status == 409
        refused_at = time.time()

    await eventually(lambda: len(mine.hits) == 1, what="the delivery")
    (hit,) = mine.hits
    headers = hit["headers"]
    event = verify_webhook(hit["body"], headers["Shotstamp-Signature"], hook.secret)
    assert event.type == "registration.conflict" == headers["Shotstamp-Event"]
    assert headers["Content-Type"] == "application/json"
    data = event.data
    assert data["registration_id"] == reg.id
    (match,) = data["matches"]
    assert match["registration_id"] == reg.id and match["verdict"] == "copy"
    assert 0 <= match["distances"]["phash"] <= 6
    assert data["upload"]["sha256"] == hashlib.sha256(stolen).hexdigest()
    uploaded = data["upload"]["received_at"]
    assert abs(json_time(uploaded) - refused_at) < 5
    # Never the other seller's identity.
    assert b"thief" not in hit["body"]
    # The thief's own webhook hears nothing; a wrong secret does not verify.
    assert theirs.hits == []
    with pytest.raises(Exception, match="no signature matches"):
        verify_webhook(hit["body"], headers["Shotstamp-Signature"], "whsec_wrong")
    (record,) = await settled(service, acme, hook.id)
    assert record["status"] == "delivered" and record["attempts"] == 1
    assert record["event_id"] == event.id and record["id"] == headers["Shotstamp-Delivery"]


def json_time(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


async def test_a_failing_receiver_gets_retries_with_growing_gaps(service, receiver):
    acme, thief = await service.key("acme"), await service.key("thief")
    flaky = await receiver(script=[500, 503])
    async with AsyncClient(url_of(service), api_key=acme) as a:
        hook = await a.create_webhook(flaky.url)
        await a.register(imagegen.jpeg(602))
    assert (await service.upload(thief, imagegen.jpeg(602))).status == 409
    await eventually(lambda: len(flaky.hits) == 3, what="three attempts")
    bodies = {hit["body"] for hit in flaky.hits}
    assert len(bodies) == 1  # the same event, byte for byte, on every try
    for hit in flaky.hits:
        verify_webhook(hit["body"], hit["headers"]["Shotstamp-Signature"], hook.secret)
    first, second, third = (hit["at"] for hit in flaky.hits)
    # retry_base 0.05: the first retry after 0.025-0.05 s, the second after 0.05-0.1 s.
    assert second - first >= 0.02 and third - second >= 0.045
    records = await settled(service, acme, hook.id)
    assert [(r["status"], r["attempts"], r["last_status"]) for r in records] == [
        ("delivered", 3, 200)
    ]


async def test_a_receiver_that_never_answers_2xx_is_given_up_on(service, receiver):
    acme, thief = await service.key("acme"), await service.key("thief")
    dead = await receiver(script=[500] * 10)
    async with AsyncClient(url_of(service), api_key=acme) as a:
        hook = await a.create_webhook(dead.url)
        await a.register(imagegen.jpeg(603))
    assert (await service.upload(thief, imagegen.jpeg(603))).status == 409

    async def status() -> dict[str, Any]:
        records = await deliveries(service, acme, hook.id)
        return records[0] if records else {"status": "not queued yet"}

    deadline = time.monotonic() + 15
    while (record := await status())["status"] in ("pending", "not queued yet"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert record["status"] == "failed" and record["attempts"] == 4
    assert record["last_status"] == 500 and "HTTP 500" in record["last_error"]
    assert len(dead.hits) == 4


async def test_a_slow_receiver_never_slows_the_409(service, receiver):
    acme, thief = await service.key("acme"), await service.key("thief")
    slow = await receiver(delay=4.0)
    async with AsyncClient(url_of(service), api_key=acme) as a:
        await a.create_webhook(slow.url)
        await a.register(imagegen.jpeg(604))
    started = time.monotonic()
    resp = await service.upload(thief, imagegen.jpeg(604))
    answered = time.monotonic() - started
    assert resp.status == 409
    await eventually(lambda: len(slow.hits) == 1, what="the delivery to start")
    assert answered < 2.0  # the receiver takes 4 s; the upload did not wait for it


async def test_deliveries_survive_a_restart(service_config, receiver):
    from shotstamp_service.http.app import create_app

    down = await receiver(script=[503] * 1000)
    up = await receiver()

    async def start():
        server = TestServer(create_app(service_config))
        client = TestClient(server)
        await client.start_server()
        return client

    first = await start()
    from tests.kit.servicekit import Service

    service = Service(client=first, app=first.app)
    acme, thief = await service.key("acme"), await service.key("thief")
    base = str(first.make_url("")).rstrip("/")
    async with AsyncClient(base, api_key=acme) as a:
        hook = await a.create_webhook(down.url)
        await a.register(imagegen.jpeg(605))
    assert (await service.upload(thief, imagegen.jpeg(605))).status == 409
    await eventually(lambda: len(down.hits) >= 1, what="a failed attempt")
    await first.close()  # the service stops with the delivery still pending

    # Point the stored webhook at a receiver that works (as if it came back up).
    if service_config.database_url is None:
        import sqlite3

        conn = sqlite3.connect(service_config.database_path)
        with conn:
            conn.execute("UPDATE webhooks SET url = ? WHERE id = ?", (up.url, hook.id))
            (status, attempts) = conn.execute(
                "SELECT status, attempts FROM webhook_deliveries"
            ).fetchone()
        conn.close()
    else:
        import asyncpg

        pg = await asyncpg.connect(service_config.database_url)
        await pg.execute("UPDATE webhooks SET url = $1 WHERE id = $2", up.url, hook.id)
        status, attempts = await pg.fetchrow("SELECT status, attempts FROM webhook_deliveries")
        await pg.close()
    assert status == "pending" and attempts >= 1

    second = await start()
    try:
        await eventually(lambda: len(up.hits) == 1, what="delivery after the restart")
        event = verify_webhook(
            up.hits[0]["body"], up.hits[0]["headers"]["Shotstamp-Signature"], hook.secret
        )
        assert json.loads(down.hits[0]["body"])["id"] == event.id
    finally:
        await second.close()


async def test_webhook_requests_are_validated(service):
    key = await service.key("acme")
    headers = service.auth(key)

    async def create(body: Any, **kw: Any):
        resp = await service.client.post("/v1/webhooks", json=body, headers=headers, **kw)
        return resp.status, await resp.json()

    for bad, why in [
        ({"url": "ftp://example.com/x"}, "http or https"),
        ({"url": "javascript:alert(1)"}, "http or https"),
        ({"url": "https://"}, "no host"),
        ({"url": "https://user:pw@example.com/"}, "credentials"),
        ({"url": "https://example.com:99999/"}, "bad port"),
        ({"url": "https://example.com/" + "x" * 3000}, "longer than"),
        ({"url": "https://exa mple.com/"}, "whitespace"),
        ({"url": 5}, "non-empty string"),
        ({}, "non-empty string"),
    ]:
        status, body = await create(bad)
        assert (status, body["error"]) == (400, "invalid_url"), bad
        assert why in body["message"], (bad, body)
    status, body = await create({"url": "https://example.com/h", "events": ["nope"]})
    assert (status, body["error"]) == (400, "invalid_events")
    status, body = await create({"url": "https://example.com/h", "colour": "red"})
    assert (status, body["error"]) == (400, "invalid_field")
    status, body = await create([1, 2])
    assert (status, body["error"]) == (400, "invalid_json")
    resp = await service.client.post(
        "/v1/webhooks", data="url=https://example.com", headers=headers
    )
    assert resp.status == 415
    resp = await service.client.post(
        "/v1/webhooks",
        data=b"{" * 20000,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert (
        await service.client.post("/v1/webhooks", json={"url": "https://x.example"})
    ).status == 401

    for n in range(10):
        status, body = await create({"url": f"https://example.com/{n}"})
        assert status == 201 and set(body) == {"id", "url", "events", "created_at", "secret"}
    status, body = await create({"url": "https://example.com/0"})
    assert (status, body["error"]) == (400, "duplicate_webhook")
    status, body = await create({"url": "https://example.com/10"})
    assert (status, body["error"]) == (400, "too_many_webhooks")


async def test_webhooks_belong_to_their_seller(service, receiver):
    acme, rival = await service.key("acme"), await service.key("rival")
    rec = await receiver()
    async with (
        AsyncClient(url_of(service), api_key=acme) as a,
        AsyncClient(url_of(service), api_key=rival) as r,
    ):
        hook = await a.create_webhook(rec.url)
        assert [h.id for h in await a.webhooks()] == [hook.id]
        assert all(h.secret is None for h in await a.webhooks())
        assert await r.webhooks() == []
        from shotstamp import NotFoundError

        with pytest.raises(NotFoundError):
            await r.delete_webhook(hook.id)
        resp = await service.client.get(
            f"/v1/webhooks/{hook.id}/deliveries", headers=service.auth(rival)
        )
        assert resp.status == 404
        await a.delete_webhook(hook.id)
        assert await a.webhooks() == []
        with pytest.raises(NotFoundError):
            await a.delete_webhook(hook.id)
    # A deleted webhook hears nothing more.
    async with AsyncClient(url_of(service), api_key=acme) as a:
        await a.register(imagegen.jpeg(606))
    assert (await service.upload(rival, imagegen.jpeg(606))).status == 409
    await asyncio.sleep(0.5)
    assert rec.hits == []
