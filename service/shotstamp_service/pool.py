"""The fingerprinting pool: image decoding and hashing off the event loop, on every core."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import TypeVar

from .errors import ApiError
from .fingerprint import DecodeLimits, Fingerprint, fingerprint
from .matching import verify_many
from .thumbnail import fingerprint_and_thumbnail
from .verification import Evidence

__all__ = ["FingerprintPool"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _init_worker(service_alive: Connection) -> None:
    """Workers leave when the pool shuts them down or the service is gone, not on signals.

    An init system stopping the service (systemd's default KillMode, a
    terminal's Ctrl-C) signals the whole process group; a worker that died
    then would fail the uploads the graceful shutdown is trying to finish.
    But a worker must not outlive a service killed outright (SIGKILL, the OOM
    killer): it would hang on its task queue forever, holding memory, and so
    would the forkserver. `service_alive` is the read end of a pipe whose
    write end only the service holds; it reads EOF when the service is gone.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_exit_with_service, args=(service_alive,), name="service-watch", daemon=True
    ).start()


def _exit_with_service(service_alive: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        service_alive.recv()  # nothing is ever sent: this returns at EOF
    os._exit(0)


def _ready() -> None:
    """A no-op task: submitting it makes the executor start a worker."""


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
        self._context = multiprocessing.get_context("forkserver")
        # See _init_worker: the workers watch the read end; only we hold the write end.
        self._alive_r, self._alive_w = self._context.Pipe(duplex=False)
        self._executor = self._make_executor()

    def _make_executor(self) -> Executor:
        if self.workers <= 0:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint")
        # forkserver: workers must not inherit the event loop's threads and sockets.
        self._context.set_forkserver_preload(
            [
                "shotstamp_service.forkserver_init",
                "shotstamp_service.fingerprint",
                "shotstamp_service.thumbnail",
                "shotstamp_service.matching",
            ]
        )
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context,
            initializer=_init_worker,
            initargs=(self._alive_r,),
        )

    async def start(self) -> None:
        """Start the forkserver and the workers now rather than on the first upload.

        A cold pool starts the forkserver, which imports Pillow, numpy and the
        hashers and warms them up (forkserver_init.py): a second or two in
        which the first uploads after every (re)start would otherwise wait.
        The service reports healthy only after this.
        """
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, _ready) for _ in range(max(1, self.workers)))
        )

    async def __call__(self, data: bytes) -> Fingerprint:
        return await self._run(functools.partial(fingerprint, data, self.limits))

    async def analyse(self, data: bytes) -> tuple[Fingerprint, bytes | None]:
        """The fingerprint and, when thumbnails are on, the thumbnail, in one worker call."""
        if self.thumbnail_size is None:
            return await self(data), None
        return await self._run(
            functools.partial(fingerprint_and_thumbnail, data, self.limits, self.thumbnail_size)
        )

    async def verify(
        self, query: bytes, stored: list[tuple[int, bytes, tuple[str, str] | None]]
    ) -> list[tuple[int, Evidence]]:
        """Stage 2 of matching for one upload's candidates, in one worker call.

        Local-feature verification is CPU work (~1 ms a candidate, OpenCV holding
        the GIL for parts of it): on the event loop it would stall every request.
        """
        return await self._run(functools.partial(verify_many, query, stored))

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
        self._alive_w.close()
        self._alive_r.close()
