"""HTTP/1.1 by hand over a real socket: bytes no HTTP client would send, at a chosen pace."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the first byte sent to the end of the answer

    def json(self) -> Any:
        return json.loads(self.body)


def request_head(
    method: str, path: str, headers: dict[str, bytes | str], body_length: int | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in headers.items():
        lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str) else value))
    if body_length is not None:
        lines.append(f"Content-Length: {body_length}".encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def exchange(port: int, *pieces: bytes | float, timeout: float = 20.0) -> RawAnswer | None:
    """Send `pieces` (bytes are written, numbers are pauses in seconds), read the answer.

    None when the server closed the connection without answering.
    """
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(timeout):
            for piece in pieces:
                if isinstance(piece, bytes):
                    writer.write(piece)
                    await writer.drain()
                else:
                    await asyncio.sleep(piece)
            return await read_answer(reader, started)
    finally:
        writer.close()


async def read_answer(reader: asyncio.StreamReader, started: float) -> RawAnswer | None:
    """One answer (head and `Content-Length` body); None if the server closed instead."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    answer = parse_answer(head, 0.0)
    assert answer is not None
    answer.body = await reader.readexactly(int(answer.headers.get("content-length", "0")))
    answer.seconds = time.monotonic() - started
    return answer


def parse_answer(raw: bytes, seconds: float) -> RawAnswer | None:
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), headers, body, seconds)
