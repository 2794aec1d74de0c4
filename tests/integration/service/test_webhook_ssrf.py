"""Webhook destinations: a seller cannot make the service call inside its own network.

Issue 19, item 1: Unicode spellings of internal addresses (`①②⑦.0.0.1`,
full-width digits) and IPv4-embedding IPv6 ranges were accepted and delivered
to, and the deliveries log told the seller how the internal address answered.
These tests run with the default settings (private targets not allowed) and a
listener on 127.0.0.1 that answers 403 to anyone who connects: it must see no
connection at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from shotstamp_service.config import Config
from shotstamp_service.http.keys import STORE
from shotstamp_service.webhooks.dispatcher import (
    RefusedDestination,
    _refusal,
    delivery_connector,
    new_webhook,
    public_address,
)
from tests.kit import imagegen


class Listener:
    """A TCP server on 127.0.0.1 that counts connections and answers 403."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> Listener:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    server = await Listener().start()
    yield server
    await server.stop()


# The spellings from the issue, and the literal forms of the ranges it names.
LOOPBACK_SPELLINGS = [
    "http://①②⑦.0.0.1:{port}/x?a=1",
    "http://１２７．０．０．１:{port}/",
    "http://１２７.0.0.1:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
]
INTERNAL_SPELLINGS = [
    "http://①⑥⑨.②⑤④.①⑥⑨.②⑤④:{port}/latest/meta-data/",
    "http://１０.0.0.1:{port}/",
    "http://[::127.0.0.1]:{port}/x",
    "http://[64:ff9b::7f00:1]:{port}/x",
    "http://[2002:7f00:1::]:{port}/x",
    "http://[fec0::1]:{port}/x",
]
OTHER_LITERALS = [
    "http://127.0.0.1:{port}/",
    "http://0.0.0.0:{port}/",
    "http://100.64.0.1/",
    "http://198.18.0.1/",
    "http://192.0.2.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[::]/",
    "http://[64:ff9b:1::a00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
]


def test_private_targets_are_off_by_default():
    assert Config().webhook_allow_private is False
    assert Config.from_env({}).webhook_allow_private is False
    assert Config.from_env({"SHOTSTAMP_WEBHOOK_ALLOW_PRIVATE": "1"}).webhook_allow_private


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "192.88.99.1",
        "198.51.100.7", "240.0.0.1", "255.255.255.255", "224.0.0.251",
        "::", "::1", "::7f00:1", "::ffff:10.0.0.1", "64:ff9b::808:808", "64:ff9b:1::1",
        "2002:808:808::", "2001::1", "2001:db8::1", "fec0::1", "fc00::1", "fe80::1%eth0",
        "ff0e::1", "100::1", "3fff::1",
    ],
)  # fmt: skip
def test_non_public_addresses(address):
    assert not public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses(address):
    assert public_address(address)


async def create(service, key: str, url: str) -> tuple[int, dict[str, Any]]:
    resp = await service.client.post("/v1/webhooks", json={"url": url}, headers=service.auth(key))
    return resp.status, await resp.json()


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS + INTERNAL_SPELLINGS + OTHER_LITERALS)
async def test_registration_refuses_internal_spellings(service, listener, spelling):
    key = await service.key("acme")
    status, body = await create(service, key, spelling.format(port=listener.port))
    assert (status, body["error"]) == (400, "invalid_url"), body
    assert "public address" in body["message"]
    assert listener.connections == 0


async def test_registration_refuses_legacy_numeric_ipv4(service):
    key = await service.key("acme")
    for host in ("127.1", "0x7f.0.0.1", "2130706433", "017700000001"):
        status, body = await create(service, key, f"http://{host}/hook")
        assert (status, body["error"]) == (400, "invalid_url"), host
        assert "four decimal numbers (127.0.0.1)" in body["message"]


async def test_registration_accepts_public_names_and_addresses(service):
    key = await service.key("acme")
    for url in ("https://hooks.example.com/x", "https://bücher.example/h", "http://8.8.8.8/h"):
        status, body = await create(service, key, url)
        assert status == 201, body


async def _conflict(service, seed: int) -> str:
    """acme registers a photo and a thief uploads it again: acme's webhooks fire."""
    acme, thief = await service.key("acme"), await service.key("thief")
    assert (await service.upload(acme, imagegen.jpeg(seed))).status == 201
    assert (await service.upload(thief, imagegen.jpeg(seed))).status == 409
    return acme


async def _settled(service, key: str, hook_ids: list[str], timeout: float = 15) -> list[dict]:
    """Each webhook's single delivery once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        records = []
        for hook_id in hook_ids:
            resp = await service.client.get(
                f"/v1/webhooks/{hook_id}/deliveries", headers=service.auth(key)
            )
            assert resp.status == 200
            records.extend((await resp.json())["deliveries"])
        if len(records) == len(hook_ids) and all(r["status"] != "pending" for r in records):
            return records
        assert time.monotonic() < deadline, records
        await asyncio.sleep(0.05)


async def test_stored_internal_spellings_are_refused_at_delivery(service, listener):
    """Webhooks stored before the fix (bypassing today's check) still reach nothing."""
    store = service.app[STORE]
    hooks = [
        new_webhook("acme", spelling.format(port=listener.port), ["registration.conflict"])
        for spelling in LOOPBACK_SPELLINGS + INTERNAL_SPELLINGS
    ]
    for hook in hooks:
        await store.add_webhook(hook)
    acme = await _conflict(service, 701)
    records = await _settled(service, acme, [h.id for h in hooks])
    for record in records:
        # Refused once and given up: no status, no error text from the address.
        assert record["status"] == "failed" and record["attempts"] == 1, record
        assert record["last_status"] is None, record
        assert record["last_error"].startswith("refused destination"), record
        assert "HTTP" not in record["last_error"] and "403" not in record["last_error"]
    assert listener.connections == 0


class _FixedResolver(aiohttp.abc.AbstractResolver):
    """Answers every name with `answers`: a name that rebinds to an internal address."""

    answers = ("127.0.0.1",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[Any]:
        return [
            {"hostname": host, "host": a, "port": port, "family": 0, "proto": 0, "flags": 0}
            for a in self.answers
        ]

    async def close(self) -> None:
        pass


async def test_a_name_that_resolves_inside_is_refused_at_delivery(
    service_config, aiohttp_client, listener, monkeypatch
):
    """Accepted as a name at registration, its address is checked when delivering."""
    monkeypatch.setattr(aiohttp, "DefaultResolver", _FixedResolver)
    from shotstamp_service.http.app import create_app
    from tests.kit.servicekit import Service

    app = create_app(service_config)
    service = Service(client=await aiohttp_client(app), app=app)
    key = await service.key("acme")
    status, body = await create(service, key, f"http://rebind.example:{listener.port}/h")
    assert status == 201, body
    await _conflict(service, 702)
    (record,) = await _settled(service, key, [body["id"]])
    assert record["status"] == "failed" and record["last_status"] is None
    assert record["last_error"].startswith("refused destination")
    assert listener.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",  # a literal: aiohttp skips the resolver for it
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://rebind.example:{port}/",  # a name: the resolver's answer is filtered
    ],
)
async def test_the_connector_refuses_the_address_it_would_connect_to(listener, url):
    connector = delivery_connector(allow_private=False, limit=4, resolver=_FixedResolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientError) as caught:
            await session.post(url.format(port=listener.port), data=b"{}")
    assert isinstance(_refusal(caught.value), RefusedDestination)
    assert listener.connections == 0


async def test_the_connector_reaches_the_listener_when_private_targets_are_allowed(listener):
    connector = delivery_connector(allow_private=True, limit=4)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"http://127.0.0.1:{listener.port}/", data=b"{}") as resp,
    ):
        assert resp.status == 403
    assert listener.connections == 1
