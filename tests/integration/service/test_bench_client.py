"""bench/rawhttp.py, the load generator's lean client, against a real aiohttp server.

The load benchmark's CPU figures count on it sending what aiohttp's client sent (a
multipart upload the service's parser accepts, field by field) over keep-alive
connections, reading every answer whole, and on `bench/load.py` checking each one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from aiohttp import web

from bench import load
from bench.rawhttp import RawClient, ServerDisconnected


@pytest.fixture
async def server(aiohttp_server):
    seen: dict[str, list] = {"peers": [], "parts": [], "no_id": []}

    async def register(request: web.Request) -> web.StreamResponse:
        seen["peers"].append(request.transport.get_extra_info("peername"))
        reader = await request.multipart()
        part = await reader.next()
        data = await part.read()
        seen["parts"].append((part.name, part.filename, part.headers["Content-Type"], data,
                              request.headers["Authorization"]))
        assert await reader.next() is None
        if seen["no_id"]:
            return web.json_response({"status": "pending"}, status=201)
        response = web.json_response(
            {"id": hashlib.sha256(data).hexdigest(), "pad": "x" * 200_000}, status=201
        )
        if request.query.get("close"):
            response.force_close()
        return response

    async def drop(request: web.Request) -> web.StreamResponse:
        request.transport.close()
        await asyncio.sleep(0.1)
        return web.Response()

    async def checkpoint(request: web.Request) -> web.StreamResponse:
        return web.json_response({"tree_size": 3, "note": "o\n3\nx\n\nTimestamp: 1000000000"})

    app = web.Application()
    app.router.add_post("/v1/registrations", register)
    app.router.add_post("/drop", drop)
    app.router.add_get("/v1/checkpoints/latest", checkpoint)
    srv = await aiohttp_server(app)
    srv.seen = seen
    return srv


async def test_an_upload_arrives_as_aiohttp_would_send_it_and_its_answer_is_read_whole(server):
    client = RawClient()
    base = str(server.make_url("")).rstrip("/")
    photo = bytes(range(256)) * 800  # 200 KB, larger than one socket read
    try:
        status, body = await client.post_image(base, "/v1/registrations", "ss_k", photo,
                                               "image/jpeg")
    finally:
        await client.close()
    assert status == 201
    answer = json.loads(body)
    assert answer["id"] == hashlib.sha256(photo).hexdigest()
    assert len(answer["pad"]) == 200_000  # the whole body, over several segments
    assert server.seen["parts"] == [("image", "shot.jpg", "image/jpeg", photo, "Bearer ss_k")]


async def test_requests_reuse_a_keep_alive_connection_until_the_server_closes_it(server):
    client = RawClient()
    base = str(server.make_url("")).rstrip("/")
    try:
        for n in range(3):
            status, _ = await client.post_image(base, "/v1/registrations", "k", b"%d" % n, "x/y")
            assert status == 201
        status, _ = await client.post_image(base, "/v1/registrations?close=1", "k", b"c", "x/y")
        assert status == 201
        status, _ = await client.post_image(base, "/v1/registrations", "k", b"after", "x/y")
        assert status == 201
    finally:
        await client.close()
    peers = server.seen["peers"]
    assert peers[0] == peers[1] == peers[2] == peers[3]  # one connection, kept alive
    assert peers[4] != peers[3]  # `Connection: close` honoured: a new one


async def test_a_connection_dropped_before_its_answer_is_an_error(server):
    client = RawClient()
    base = str(server.make_url("")).rstrip("/")
    try:
        with pytest.raises(ServerDisconnected):
            await client.post_image(base, "/drop", "k", b"data", "image/jpeg")
        status, _ = await client.post_image(base, "/v1/registrations", "k", b"again", "x/y")
        assert status == 201  # the broken connection was not reused
    finally:
        await client.close()


@pytest.mark.parametrize("kind", load.CLIENTS)
async def test_the_load_generator_counts_only_answers_carrying_a_registration_id(server, kind):
    base = str(server.make_url("")).rstrip("/")
    client = load.make_client(kind)
    try:
        good = await load.drive(client, [base], ["k"], [b"a", b"b", b"c"], 2, 5, 0.0, [0])
        watcher = load.CheckpointWatcher(client, base)
        task = asyncio.create_task(watcher.run())
        await asyncio.sleep(0.2)
        task.cancel()
    finally:
        await client.close()
    assert good.outcomes == {"201": 3}
    assert sorted(reg_id for reg_id, _ in good.acked) == sorted(
        hashlib.sha256(d).hexdigest() for d in (b"a", b"b", b"c")
    )
    assert watcher.seen == {3: 1.0}

    server.seen["no_id"].append(True)
    client = load.make_client(kind)
    try:
        bad = await load.drive(client, [base], ["k"], [b"d", b"e"], 1, 5, 0.0, [0])
    finally:
        await client.close()
    assert bad.outcomes == {"201-without-id": 2}
    assert bad.acked == []
