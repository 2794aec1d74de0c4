"""The fingerprinting pool: image decoding and hashing off the event loop, on every core."""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .errors import ApiError
from .fingerprint import DecodeLimits, Fingerprint, fingerprint

__all__ = ["FingerprintPool"]

log = logging.getLogger(__name__)


class FingerprintPool:
    """Runs `fingerprint` in worker processes; `workers=0` runs it in one thread instead."""

    def __init__(self, workers: int, limits: DecodeLimits) -> None:
        self.workers = workers
        self.limits = limits
        self._executor = self._make_executor()

    def _make_executor(self) -> Executor:
        if self.workers <= 0:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint")
        # forkserver: workers must not inherit the event loop's threads and sockets.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["shotstamp_service.fingerprint"])
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context)

    async def __call__(self, data: bytes) -> Fingerprint:
        executor = self._executor
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                executor, functools.partial(fingerprint, data, self.limits)
            )
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
