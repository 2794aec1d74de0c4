"""Group commit: registrations from concurrent uploads share one transaction.

Both stores use it. `add` queues a registration and waits for the commit of
the batch it lands in; one task drains the queue, up to `max_batch` at a
time, through the store's `write(registrations)`, which writes them in one
transaction and returns each one's outcome (stored, or refused alone); if the
whole transaction fails, everyone in the batch gets that error: nobody is
acknowledged then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shotstamp_service.records import NewRegistration, Registration
from shotstamp_service.store.errors import StoreError

__all__ = ["Batch", "GroupCommit", "WriteBatch"]

Batch = list[tuple[NewRegistration, "asyncio.Future[Registration]"]]
WriteBatch = Callable[[list[NewRegistration]], Awaitable[list[Registration | Exception]]]
"""Write registrations in one transaction; each one's outcome, in order."""


class GroupCommit:
    def __init__(self, write: WriteBatch, *, max_batch: int, name: str) -> None:
        self._write = write
        self._max_batch = max_batch
        self._name = name
        self._queue: Batch = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain_forever(), name=self._name)

    async def stop(self) -> None:
        """Refuse new registrations, commit everything queued, then stop."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task
            self._task = None

    async def add(self, new: NewRegistration) -> Registration:
        if self._closing:
            raise StoreError("store is closing")
        future: asyncio.Future[Registration] = asyncio.get_running_loop().create_future()
        self._queue.append((new, future))
        self._wake.set()
        return await future

    async def _drain_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
                await self._flush(batch)
            if self._closing:
                return

    async def _flush(self, batch: Batch) -> None:
        try:
            results = await self._write([new for new, _ in batch])
        except Exception as exc:  # the whole transaction failed: nobody is acknowledged
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away; the row stays, as committed
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
