"""Limits on what one client can hold: its body's pace, its uploads at once, bad headers.

Request heads have their deadline in aiohttp itself (the connection's keep-alive
timer, `Config.header_timeout`, see app.py); bodies get theirs here, since only
the handler reading a body knows it is waiting for one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from types import TracebackType

from aiohttp import StreamReader, web

from shotstamp_service.http.errors import ApiError

__all__ = ["UPLOADS_PER_KEY", "BodyDeadline", "UploadsPerKey", "read_body", "text_header"]


class BodyDeadline:
    """Cancels the body read (TimeoutError) once the client falls below `min_rate`.

    After `grace` seconds the bytes received must keep up with `min_rate` bytes
    per second since the start; the check is scheduled for the moment the bytes
    received so far stop sufficing, so it costs one timer per read, not a poll.
    """

    def __init__(self, stream: StreamReader, min_rate: float, grace: float) -> None:
        self._stream = stream
        self._min_rate = min_rate
        self._grace = grace
        self._timeout = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._base = 0

    def _due(self) -> float:
        received = self._stream.total_bytes - self._base
        return self._start + self._grace + received / self._min_rate

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._due()
        if loop.time() >= due:
            self._handle = None
            self._timeout.reschedule(loop.time())
        else:
            self._handle = loop.call_at(due, self._check)

    async def __aenter__(self) -> BodyDeadline:
        await self._timeout.__aenter__()
        if self._min_rate > 0:
            loop = asyncio.get_running_loop()
            self._start, self._base = loop.time(), self._stream.total_bytes
            self._handle = loop.call_at(self._due(), self._check)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        await self._timeout.__aexit__(kind, exc, tb)


def body_timeout(min_rate: float, grace: float) -> ApiError:
    return ApiError(
        408,
        "body_timeout",
        f"the body arrived slower than {min_rate:g} bytes per second "
        f"(after the first {grace:g} s); send it faster or through a buffering proxy",
    )


async def read_body(request: web.Request, limit: int, min_rate: float, grace: float) -> bytes:
    """The whole body (however many segments it arrives in), at most `limit` bytes."""
    too_large = ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    buffer = bytearray()
    try:
        async with BodyDeadline(request.content, min_rate, grace):
            while chunk := await request.content.readany():
                buffer += chunk
                if len(buffer) > limit:
                    raise too_large
    except TimeoutError as exc:
        raise body_timeout(min_rate, grace) from exc
    return bytes(buffer)


class UploadsPerKey:
    """How many uploads each API key has open; more than `limit` at once get a 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def hold(self, key_id: str) -> AsyncIterator[None]:
        if 0 < self.limit <= self._open[key_id]:
            raise ApiError(
                429,
                "too_many_uploads",
                f"this key already has {self._open[key_id]} uploads in progress, "
                f"the most one key may have at once; retry when one has been answered",
                retry_after=1,
            )
        self._open[key_id] += 1
        try:
            yield
        finally:
            self._open[key_id] -= 1
            if not self._open[key_id]:
                del self._open[key_id]


UPLOADS_PER_KEY = web.AppKey("uploads_per_key", UploadsPerKey)


def text_header(request: web.Request, name: str) -> str | None:
    """A header's value; 400 if it holds bytes outside printable ASCII.

    aiohttp hands other bytes over as lone surrogates (`surrogateescape`),
    which fail later, wherever the value is encoded: in the store, a hash, a
    log line or the response's headers.
    """
    value = request.headers.get(name)
    if value is not None and not (value.isascii() and value.isprintable()):
        raise ApiError(
            400, "invalid_header", f"the {name} header must be printable ASCII characters"
        )
    return value
