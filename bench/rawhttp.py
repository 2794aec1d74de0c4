"""A lean HTTP/1.1 client for the load generator (`bench/load.py --client raw`).

The load generator shares the machine's cores with the service, and its CPU per upload
is counted in the total that issue 20 compares with the naive loop. aiohttp's client
does far more per request than a benchmark needs (a `FormData` and a multipart writer
per upload, a request and response object with their headers parsed into multidicts,
cookie jar and redirect handling, a timer per request); wrk-style tools keep only the
wire. This one sends the same requests, a `multipart/form-data` upload with its
`Authorization` header over keep-alive connections, and reads every answer: the status
line, the head up to its `Content-Length`, and the whole body, which the caller checks.

What it does not do, because the service never needs it here: chunked response
bodies (the service's answers carry `Content-Length`; one without is an error),
redirects, cookies, TLS, request pipelining. A response carrying `Connection: close`
closes its connection; the next request opens another.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import cast
from urllib.parse import urlsplit

__all__ = ["RawClient", "ServerDisconnected"]


class ServerDisconnected(ConnectionError):
    """The connection closed before a whole response arrived."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            self._complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ServerDisconnected(str(exc or "connection closed")))

    def _complete(self) -> None:
        """Resolve the waiter once the buffer holds a whole response."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            assert self.waiter is not None
            self.waiter.set_exception(ValueError("a response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        close = b"\r\nconnection: close" in head
        assert self.waiter is not None
        self.waiter.set_result((status, body, close))

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one whole request; (status, body, whether the server closes) of its answer."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        if self.buffer:
            self._complete()
        return await self.waiter


class RawClient:
    """Keep-alive connections to one or more `http://host:port` services.

    `post_image` and `get` take the service's base URL; a connection is reused by the
    next request to the same service once its answer has been read, so N concurrent
    callers hold N connections, as aiohttp's pool does.
    """

    def __init__(self) -> None:
        self._idle: dict[str, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._boundary = uuid.uuid4().hex
        self._preamble = (
            f"--{self._boundary}\r\n"
            'Content-Disposition: form-data; name="image"; filename="shot.jpg"\r\n'
            "Content-Type: "
        ).encode()
        self._epilogue = f"\r\n--{self._boundary}--\r\n".encode()
        self._hosts: dict[str, str] = {}

    def _host(self, base: str) -> str:
        host = self._hosts.get(base)
        if host is None:
            host = self._hosts[base] = urlsplit(base).netloc
        return host

    async def _connection(self, base: str) -> _Connection:
        idle = self._idle.setdefault(base, [])
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        parts = urlsplit(base)
        _, conn = await asyncio.get_running_loop().create_connection(
            _Connection, parts.hostname, parts.port
        )
        self._open.add(conn)
        return conn

    async def _send(self, base: str, request: bytes) -> tuple[int, bytes]:
        conn = await self._connection(base)
        try:
            status, body, close = await conn.exchange(request)
        except BaseException:
            self._drop(conn)
            raise
        if close:
            self._drop(conn)
        else:
            self._idle[base].append(conn)
        return status, body

    def _drop(self, conn: _Connection) -> None:
        self._open.discard(conn)
        if conn.transport is not None:
            conn.transport.close()

    async def post_image(
        self, base: str, path: str, key: str, data: bytes, content_type: str
    ) -> tuple[int, bytes]:
        """POST `data` as the `image` field of a multipart form; (status, body)."""
        length = len(self._preamble) + len(content_type) + 4 + len(data) + len(self._epilogue)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host(base)}\r\n"
            f"Authorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={self._boundary}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()
        # One write of the joined request: one send for the transport, as writelines would join.
        request = b"".join(
            (head, self._preamble, content_type.encode(), b"\r\n\r\n", data, self._epilogue)
        )
        return await self._send(base, request)

    async def get(self, base: str, path: str, key: str | None = None) -> tuple[int, bytes]:
        auth = f"Authorization: Bearer {key}\r\n" if key else ""
        request = f"GET {path} HTTP/1.1\r\nHost: {self._host(base)}\r\n{auth}\r\n".encode()
        return await self._send(base, request)

    async def close(self) -> None:
        for conn in list(self._open):
            self._drop(conn)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' close callbacks run
