"""Slow and flooding clients (issue 19, items 3 and 4): one seller's trickled or
bloated requests neither hold the upload slots nor stall the event loop.

Each attack goes through the real server on real sockets, with small limits so
it is over in seconds. The attacks are about the HTTP edge, not the store: SQLite only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
import time
import uuid

import pytest

from tests.kit import imagegen
from tests.kit.liveserver import multipart
from tests.kit.rawhttp import RawAnswer, read_answer, request_head

HEADER_TIMEOUT = 1.0
MIN_RATE = 1000.0  # bytes per second, after...
GRACE = 2.5  # ...this many seconds


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@pytest.fixture
def service_config(service_config):
    return dataclasses.replace(
        service_config,
        header_timeout=HEADER_TIMEOUT,
        body_min_rate=MIN_RATE,
        body_grace=GRACE,
        max_inflight_uploads=2,
        max_uploads_per_key=2,
    )


def _port(service) -> int:
    return int(service.client.server.port)


async def _trickle(port: int, head: bytes, every: float, limit: float) -> RawAnswer | None:
    """Send `head`, then one byte every `every` s until the server answers or closes."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)

    async def feed() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(every)
                writer.write(b"x")
                await writer.drain()

    feeder = asyncio.create_task(feed())
    try:
        async with asyncio.timeout(limit):
            return await read_answer(reader, started)
    finally:
        feeder.cancel()
        writer.close()


def _slow_upload_head(key: str) -> bytes:
    """An upload's head announcing a megabyte, and the image part's own headers."""
    boundary = uuid.uuid4().hex
    head = request_head(
        "POST",
        "/v1/registrations",
        {
            "Authorization": f"Bearer {key}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        1_000_000,
    )
    return (
        head
        + (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
    )


async def test_slow_bodies_hold_no_upload_slot_and_are_cut_off(service):
    hostile = await service.key("hostile")
    keys = [await service.key("acme"), await service.key("globex")]
    # Four trickled uploads (twice the slots): the key's cap refuses two at once,
    # the other two are cut off once they fall behind the minimum rate.
    slow = [
        asyncio.create_task(_trickle(_port(service), _slow_upload_head(hostile), 0.25, 15))
        for _ in range(4)
    ]
    await asyncio.sleep(0.3)  # the slow uploads are under way
    started = time.monotonic()
    others = await asyncio.gather(
        *(service.upload(k, imagegen.jpeg(1930 + n)) for n, k in enumerate(keys))
    )
    others_took = time.monotonic() - started
    assert [r.status for r in others] == [201, 201]
    answers = await asyncio.gather(*slow)
    assert all(a is not None for a in answers), answers
    by_code = sorted((a.status, a.json()["error"]) for a in answers if a is not None)
    assert by_code == [(408, "body_timeout")] * 2 + [(429, "too_many_uploads")] * 2
    cut_off = [a for a in answers if a is not None and a.status == 408]
    for answer in cut_off:
        assert answer.headers["connection"].lower() == "close"
        # Behind the rate from the first byte on: cut off soon after the grace.
        assert answer.seconds < GRACE + 2.0, answer.seconds
    # The others did not wait for the slow ones to be cut off.
    assert others_took < min(a.seconds for a in cut_off), (others_took, cut_off)


async def test_a_request_head_sent_byte_by_byte_is_cut_off(service):
    head = b"POST /v1/registrations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    started = time.monotonic()
    answer = await _trickle(_port(service), head, 0.2, HEADER_TIMEOUT + 5)
    took = time.monotonic() - started
    assert answer is None  # closed, never answered
    assert took < HEADER_TIMEOUT + 1.5, took


async def test_an_idle_connection_is_closed_after_the_header_timeout(service):
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(service))
    started = time.monotonic()
    try:
        async with asyncio.timeout(HEADER_TIMEOUT + 5):
            assert await reader.read() == b""
    finally:
        writer.close()
    assert time.monotonic() - started < HEADER_TIMEOUT + 1.5


async def test_a_steady_slow_body_above_the_rate_registers(service):
    """A slow but steady client (above the minimum rate) is not cut off."""
    key = await service.key("acme")
    photo = imagegen.jpeg(1935, (320, 240))
    body, ctype = multipart(photo)
    head = request_head(
        "POST",
        "/v1/registrations",
        {"Authorization": f"Bearer {key}", "Content-Type": ctype},
        len(body),
    )
    step = int(MIN_RATE * 3 * 0.1)  # three times the rate, in pieces every 0.1 s
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(service))
    started = time.monotonic()
    writer.write(head)
    for start in range(0, len(body), step):
        await asyncio.sleep(0.1)
        writer.write(body[start : start + step])
    answer = await read_answer(reader, started)
    writer.close()
    assert answer is not None and answer.status == 201, answer
    assert answer.seconds > GRACE  # it did take longer than the grace


# -- 4: a multipart flood ----------------------------------------------------------
def _flood(kind: str) -> tuple[bytes, str]:
    """~11 MB: 200,000 tiny unknown fields, or 5.5 million empty lines, then the image."""
    boundary = uuid.uuid4().hex
    image = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + imagegen.jpeg(1940)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    if kind == "fields":
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'
        body = part.encode() * 200_000 + image
    else:  # a preamble: what comes before the first boundary, skipped line by line
        body = b"\r\n" * 5_500_000 + image
    return body, f"multipart/form-data; boundary={boundary}"


class _LoopWatch:
    """The longest the event loop went without running a 5 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.005)
            last = now

    def __enter__(self) -> _LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.mark.parametrize(
    ("kind", "code", "words"),
    [("fields", "unknown_field", "'f'"), ("preamble", "bad_multipart", "before the first")],
)
async def test_a_multipart_flood_is_refused_at_once_and_the_loop_stays_free(
    service, kind, code, words
):
    key = await service.key("hostile")
    body, ctype = _flood(kind)
    head = request_head(
        "POST",
        "/v1/registrations",
        {"Authorization": f"Bearer {key}", "Content-Type": ctype},
        len(body),
    )
    health: list[float] = []

    async def probe() -> None:
        while True:
            started = time.monotonic()
            assert (await service.client.get("/healthz")).status == 200
            health.append(time.monotonic() - started)
            await asyncio.sleep(0.02)

    reader, writer = await asyncio.open_connection("127.0.0.1", _port(service))
    started = time.monotonic()
    with _LoopWatch() as watch:
        prober = asyncio.create_task(probe())
        try:
            async with asyncio.timeout(20):
                writer.write(head)
                for start in range(0, len(body), 1 << 20):
                    writer.write(body[start : start + (1 << 20)])
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                answer = await read_answer(reader, started)
                await asyncio.sleep(0.3)  # the rest of the body is drained meanwhile
        finally:
            prober.cancel()
            writer.close()
    assert answer is not None and answer.status == 400, answer
    refused = answer.json()
    assert refused["error"] == code and words in refused["message"], refused
    assert answer.seconds < 5.0, answer.seconds
    # Wall-clock bounds on a shared machine: generous, yet the flood took the
    # loop for a minute before (56.6 s; /healthz 6.9 s at the median).
    assert len(health) >= 5 and statistics.median(health) < 0.1, health
    assert watch.worst < 0.5, watch.worst


async def test_more_parts_than_the_cap_are_refused(service):
    key = await service.key("acme")
    body, ctype = multipart(imagegen.jpeg(1941), {"title": b"t", "reference": b"r"})
    boundary = ctype.rpartition("=")[2]
    extra = f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nt\r\n'.encode()
    body = extra * 7 + body  # 7 + 3 = 10 parts, over the default 8
    resp = await service.client.post(
        "/v1/registrations", data=body, headers={**service.auth(key), "Content-Type": ctype}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "too_many_parts"


@pytest.mark.parametrize("path", ["/v1/webhooks", "/v1/verify"])
async def test_a_trickled_json_body_is_cut_off(service, path):
    key = await service.key("hostile")
    head = request_head(
        "POST",
        path,
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        1000,
    )
    answer = await _trickle(_port(service), head + b'{"url": "', 0.25, GRACE + 5)
    assert answer is not None and answer.status == 408, answer
    assert answer.json()["error"] == "body_timeout"
    assert answer.headers["connection"].lower() == "close"
    assert answer.seconds < GRACE + 2.0, answer.seconds
