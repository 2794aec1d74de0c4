"""A busy serving process hands keep-alive connections back (http/serve.py, `InFlight`).

With several processes on one socket, keep-alive connections stay with the process that
accepted them; a response that leaves while others are in flight in its process closes its
connection, so the client reconnects to whichever process is waiting in accept.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from shotstamp_service.http.serve import IN_FLIGHT, InFlight, track_in_flight


def _app(hand_back: int | None) -> tuple[web.Application, dict[str, asyncio.Event]]:
    gates: dict[str, asyncio.Event] = {}

    async def held(request: web.Request) -> web.Response:
        await gates.setdefault(request.match_info["name"], asyncio.Event()).wait()
        return web.Response(text="ok")

    app = web.Application(middlewares=[track_in_flight])
    app[IN_FLIGHT] = InFlight(hand_back)
    app.router.add_get("/{name}", held)
    return app, gates


async def _two_at_once(aiohttp_client, hand_back: int | None) -> tuple[bool, bool]:
    """Whether the first response (another request still in flight) and the second (alone)
    closed their connections."""
    app, gates = _app(hand_back)
    client = await aiohttp_client(app)
    first = asyncio.create_task(client.get("/a"))
    second = asyncio.create_task(client.get("/b"))
    while app[IN_FLIGHT].count < 2:
        await asyncio.sleep(0.01)
    gates.setdefault("a", asyncio.Event()).set()
    one = await first
    gates.setdefault("b", asyncio.Event()).set()
    two = await second
    closed = tuple(r.headers.get("Connection", "").lower() == "close" for r in (one, two))
    for response in (one, two):
        assert response.status == 200
        response.release()
    return closed  # type: ignore[return-value]


async def test_a_response_leaving_a_busy_process_closes_its_connection(aiohttp_client):
    assert await _two_at_once(aiohttp_client, hand_back=1) == (True, False)


async def test_below_the_threshold_or_in_a_single_process_connections_stay_open(aiohttp_client):
    assert await _two_at_once(aiohttp_client, hand_back=2) == (False, False)
    assert await _two_at_once(aiohttp_client, hand_back=None) == (False, False)
