"""Group commit: registrations from concurrent uploads share one transaction.

Both stores use it. `add` queues a registration and waits for the commit of
the batch it lands in; one task drains the queue, up to `max_batch` at a
time, through the store's `flush(batch)`, which writes the batch in one
transaction and resolves every future (with its registration, or with the
error that lost the whole batch: nobody is acknowledged then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shotstamp_service.records import NewRegistration, Registration
from shotstamp_service.store.base import StoreError

__all__ = ["Batch", "GroupCommit"]

Batch = list[tuple[NewRegistration, "asyncio.Future[Registration]"]]


class GroupCommit:
    def __init__(
        self, flush: Callable[[Batch], Awaitable[None]], *, max_batch: int, name: str
    ) -> None:
        self._flush = flush
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
