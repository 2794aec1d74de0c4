"""The fingerprinting pool: image decoding and hashing off the event loop, on every core."""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from .errors import ApiError
from .fingerprint import DecodeLimits, Fingerprint, fingerprint
from .thumbnail import fingerprint_and_thumbnail

__all__ = ["FingerprintPool"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class FingerprintPool:
    """Runs `fingerprint` in worker processes; `workers=0` runs it in one thread instead.

    `thumbnail_size` (None: no thumbnails) is what `analyse` makes thumbnails at.
    """

    def __init__(
        self, workers: int, limits: DecodeLimits, *, thumbnail_size: int | None = None
    ) -> None:
        self.workers = workers
        self.limits = limits
        self.thumbnail_size = thumbnail_size
        self._executor = self._make_executor()

    def _make_executor(self) -> Executor:
        if self.workers <= 0:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint")
        # forkserver: workers must not inherit the event loop's threads and sockets.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(
            ["shotstamp_service.fingerprint", "shotstamp_service.thumbnail"]
        )
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context)

    async def __call__(self, data: bytes) -> Fingerprint:
        return await self._run(functools.partial(fingerprint, data, self.limits))

    async def analyse(self, data: bytes) -> tuple[Fingerprint, bytes | None]:
        """The fingerprint and, when thumbnails are on, the thumbnail, in one worker call."""
        if self.thumbnail_size is None:
            return await self(data), None
        return await self._run(
            functools.partial(fingerprint_and_thumbnail, data, self.limits, self.thumbnail_size)
        )

    async def _run(self, job: Callable[[], T]) -> T:
        executor = self._executor
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, job)
        except BrokenProcessPool as exc:
            # A worker died (out of memory on a hostile image, killed): replace the
            # pool so the next upload works, and refuse this one.
            if executor is self._executor:
                log.error("a fingerprint worker died; restarting the pool")
                self._executor = self._make_executor()
                executor.shutdown(wait=False, cancel_futures=True)
            raise ApiError(
                422, "image_rejected", "the image could not be processed within limits"
            ) from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
