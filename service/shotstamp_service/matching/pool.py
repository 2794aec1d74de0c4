"""The fingerprinting pool: image decoding and hashing off the event loop, on every core."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import multiprocessing
import os
import pickle
import resource
import signal
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from shotstamp_service.matching.decode import ImageRejected, Rejection
from shotstamp_service.matching.engine import Stage2Item, verify_many
from shotstamp_service.matching.fingerprint import (
    DecodeLimits,
    Fingerprint,
    fingerprint,
)
from shotstamp_service.matching.thumbnail import fingerprint_and_thumbnail
from shotstamp_service.matching.verification import Evidence

__all__ = ["FingerprintPool"]

log = logging.getLogger(__name__)

T = TypeVar("T")


# A frame is an 8-byte big-endian length and that many bytes of pickle. A job's pickle comes
# with its out-of-band buffers (pickle protocol 5): the frame holds their count (4 bytes), each
# one's length (8 bytes, the pickle first), then the pickle and the buffers.
_HEADER = struct.Struct("!Q")
_PARTS = struct.Struct("!I")
# Send buffer of the service's end of each channel: a whole upload (a few hundred KB) fits in
# one send instead of waiting for the worker to drain the default 208 KB (the kernel caps it at
# net.core.wmem_max; below that, the rest follows as before).
_SEND_BUFFER = 4 << 20
# The service reads a reply into a buffer this large first: a fingerprint (~20-40 KB) comes in
# with its header in one read.
_FIRST_READ = 1 << 16
# A worker reads each job into one buffer of this size, kept from job to job: an upload
# (~160 KB) or a stage-2 job (~400 KB) arrives with its header in one read, into memory that
# is neither allocated nor zeroed again. A larger job gets a buffer of its own, let go after.
_INBOX = 1 << 20


def _worker_main(channel: socket.socket, cpu_seconds: int = 0) -> None:
    """A worker: run each job read from `channel`, write back its result, until EOF.

    Each job may use `cpu_seconds` of CPU (0: no limit): the kernel's RLIMIT_CPU, raised
    before every job to what the worker has used so far plus that, ends the worker with
    SIGXCPU when a job runs over, wherever it is (inside libjpeg, numpy, OpenCV). The pool
    answers that job's upload and starts another worker.

    Workers leave when the pool closes their channel or the service is gone,
    not on signals. An init system stopping the service (systemd's default
    KillMode, a terminal's Ctrl-C) signals the whole process group; a worker
    that died then would fail the uploads the graceful shutdown is trying to
    finish. Only the service holds the other end of `channel` (the forkserver
    the worker was forked from never had it), so a service killed outright
    (SIGKILL, the OOM killer) leaves the worker reading EOF: it exits rather
    than holding memory forever.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit = _CpuLimit(cpu_seconds) if cpu_seconds else None
    if cpu_seconds:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump core
    channel.setblocking(True)
    _send_frame(channel, pickle.dumps(("ready", None)))
    inbox = bytearray(_INBOX)
    while True:
        frame = _recv_frame(channel, inbox)
        if frame is None:
            os._exit(0)
        if limit is not None:
            limit.before_job()
        try:
            job = _load_job(frame)
            reply = ("ok", job())
        except Exception as exc:  # handed back to the caller, as an executor would
            reply = ("error", exc)
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result or exception
            payload = pickle.dumps(("error", RuntimeError(f"unpicklable result: {exc!r}")))
        try:
            _send_frame(channel, payload)
        except OSError:
            os._exit(0)


class _CpuLimit:
    """Before each job, RLIMIT_CPU at what the worker has used so far (whole seconds, as the
    kernel counts them) plus `seconds`.

    The limit is set only when that figure moves, about once a second of CPU rather than once
    a job: the same limit at every job's start, two system calls fewer per job.
    """

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.hard = resource.getrlimit(resource.RLIMIT_CPU)[1]  # only this process lowers it
        self.soft: int | None = None

    def before_job(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = math.ceil(usage.ru_utime + usage.ru_stime)
        soft = (used + self.seconds if self.hard == resource.RLIM_INFINITY
                else min(used + self.seconds, self.hard))
        if soft != self.soft:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, self.hard))
            self.soft = soft


def _send_frame(channel: socket.socket, payload: bytes) -> None:
    # Joined: a reply is ~7 KB, and a gathering sendmsg's views and partial-send loop cost
    # more than the copy (docs/cpu-budget.md, "The fingerprint workers' column").
    channel.sendall(_HEADER.pack(len(payload)) + payload)


def _recv_frame(channel: socket.socket, inbox: bytearray) -> memoryview | None:
    """The next frame's payload (None at EOF), read with its header, in `inbox` if it fits.

    The service sends a worker its next job only after that job's reply, so reading past the
    header takes no bytes of another frame. The payload is a view of `inbox`, overwritten by
    the next frame: a job's reply is sent before the next frame is read, and nothing of a job
    outlives it.
    """
    view = memoryview(inbox)
    got = 0
    while got < _HEADER.size:
        n = channel.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    end = _HEADER.size + _HEADER.unpack_from(inbox)[0]
    if end > len(inbox):  # a large upload: a buffer of its own, the first bytes copied over
        frame = bytearray(end)
        frame[:got] = view[:got]
        view = memoryview(frame)
    while got < end:
        n = channel.recv_into(view[got:end])
        if n == 0:
            return None
        got += n
    return view[_HEADER.size:end]


def _dump_job(job: Callable[[], Any]) -> list[memoryview | bytes]:
    """A job's frame (less its header) as parts to send together: the parts' lengths, the
    pickle, then the buffers it left out of band (`pickle.PickleBuffer`s in the job: stage 2's
    feature blobs), which are sent from where they are instead of copied into the pickle."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(job, protocol=5, buffer_callback=buffers.append)
    parts: list[memoryview | bytes] = [payload, *(b.raw() for b in buffers)]
    lengths = struct.pack(f"!I{len(parts)}Q", len(parts), *(len(p) for p in parts))
    return [lengths, *parts]


def _load_job(frame: bytearray | memoryview) -> Any:
    """The job `_dump_job` sent; its out-of-band buffers are read-only views of `frame` (as
    bytes would be, without copying them out)."""
    view = memoryview(frame).toreadonly()
    (count,) = _PARTS.unpack_from(view)
    at = _PARTS.size + 8 * count
    parts = []
    for length in struct.unpack_from(f"!{count}Q", view, _PARTS.size):
        parts.append(view[at:at + length])
        at += length
    return pickle.loads(parts[0], buffers=parts[1:])


def _on_bytes(function: Callable[..., T], data: memoryview | pickle.PickleBuffer,
              *args: Any) -> T:
    """`function(bytes(data), *args)` in a worker: the upload arrived out of band as a view of
    the worker's receive buffer, and the decoder reads `bytes` (one copy, as unpickling made)."""
    return function(bytes(data), *args)


class WorkerLost(Exception):
    """The worker process died (or its channel broke) before answering."""


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    channel: socket.socket

    async def exchange(self, parts: list[memoryview | bytes]) -> memoryview:
        """Send one job frame (`parts`, `_dump_job`'s) and read its reply frame, without
        blocking the loop."""
        loop = asyncio.get_running_loop()
        parts = [_HEADER.pack(sum(len(p) for p in parts)), *parts]
        try:
            # Header and job in one gathering send: no copy of the image or the blobs, and one
            # wake-up of the worker where two sends woke it for the head alone (bench/
            # RESULTS.md, "CPU per registration, branch cpu"). What the socket does not take
            # now follows.
            try:
                sent = self.channel.sendmsg(parts)
            except (BlockingIOError, InterruptedError):
                sent = 0
            for part in parts:
                if sent >= len(part):
                    sent -= len(part)
                    continue
                await loop.sock_sendall(self.channel, memoryview(part)[sent:])
                sent = 0
            return await self.read_frame(loop)
        except OSError as exc:
            raise WorkerLost(str(exc)) from exc

    async def read_frame(self, loop: asyncio.AbstractEventLoop) -> memoryview:
        """One frame's payload; its header is read together with the payload's first bytes.

        A worker writes one frame per job it was sent (and one when ready), so reading past
        the header cannot take bytes of a frame not yet asked for.
        """
        buffer = bytearray(_FIRST_READ)
        got = 0
        while got < _HEADER.size:
            got += await self._recv_into(loop, memoryview(buffer)[got:])
        end = _HEADER.size + _HEADER.unpack_from(buffer)[0]
        if end > len(buffer):
            buffer.extend(bytes(end - len(buffer)))
        view = memoryview(buffer)
        while got < end:
            got += await self._recv_into(loop, view[got:end])
        return view[_HEADER.size:end]

    async def _recv_into(self, loop: asyncio.AbstractEventLoop, view: memoryview) -> int:
        n = await loop.sock_recv_into(self.channel, view)
        if n == 0:
            raise WorkerLost("the worker closed its channel")
        return n

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(OSError):
            self.channel.close()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1)


class FingerprintPool:
    """Runs `fingerprint` in worker processes; `workers=0` runs it in one thread instead.

    `thumbnail_size` (None: no thumbnails) is what `analyse` makes thumbnails at.
    `cpu_seconds` (0: none) is the CPU each job may use in a worker: a job over it ends
    its worker, fails with 422 `image_too_costly`, and a new worker takes its place.

    Each worker is a forkserver child with a socket pair to this process, and
    jobs go to idle workers straight from the event loop (`sock_sendall`,
    `sock_recv_into`). `concurrent.futures.ProcessPoolExecutor` did the same
    through two extra threads (a queue feeder and a result manager) and a
    wakeup pipe written on every submit: under load, profiling showed a third
    of the service process's time in that machinery, contending with the
    event loop for the GIL (bench/load.py; README, "Throughput").
    """

    def __init__(
        self,
        workers: int,
        limits: DecodeLimits,
        *,
        thumbnail_size: int | None = None,
        cpu_seconds: int = 0,
    ) -> None:
        self.workers = workers
        self.limits = limits
        self.thumbnail_size = thumbnail_size
        self.cpu_seconds = cpu_seconds
        # forkserver: workers must not inherit the event loop's threads and sockets.
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(
            [
                "shotstamp_service.matching.forkserver_init",
                "shotstamp_service.matching.fingerprint",
                "shotstamp_service.matching.thumbnail",
                "shotstamp_service.matching.engine",
            ]
        )
        self._thread: ThreadPoolExecutor | None = None
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: set[_Worker] = set()
        self._closed = False
        self._starting: asyncio.Lock | None = None
        self._replacing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the forkserver and the workers now rather than on the first upload.

        A cold pool starts the forkserver, which imports Pillow, numpy and the
        hashers and warms them up (forkserver_init.py): a second or two in
        which the first uploads after every (re)start would otherwise wait.
        The service reports healthy only after this.
        """
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._thread is not None or self._idle is not None:
                return
            if self.workers <= 0:
                self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint")
                return
            idle: asyncio.Queue[_Worker] = asyncio.Queue()
            for worker in await asyncio.gather(*(self._spawn() for _ in range(self.workers))):
                idle.put_nowait(worker)
            self._idle = idle

    def worker_pids(self) -> set[int]:
        """The live workers' process ids (for operators and tests)."""
        return {w.process.pid for w in self._all if w.process.pid is not None}

    async def _spawn(self) -> _Worker:
        """A new worker, once it has said it is ready."""
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
        process = self._context.Process(
            target=_worker_main,
            args=(theirs, self.cpu_seconds),
            name="shotstamp-fingerprint",
            daemon=True,
        )
        # Process.start talks to the forkserver (and starts it the first time):
        # blocking calls, so not on the event loop.
        await asyncio.to_thread(process.start)
        theirs.close()
        ours.setblocking(False)
        worker = _Worker(process, ours)
        self._all.add(worker)
        try:
            await worker.read_frame(asyncio.get_running_loop())
        except BaseException:
            self._retire(worker)
            raise
        return worker

    def _retire(self, worker: _Worker) -> None:
        self._all.discard(worker)
        with contextlib.suppress(OSError):
            worker.channel.close()
        if worker.process.is_alive():
            worker.process.kill()
        # Reaped later (join) by a thread, so the loop never waits on it.
        threading.Thread(target=worker.process.join, args=(5,), daemon=True).start()

    async def __call__(self, data: bytes) -> Fingerprint:
        if self.workers > 0:
            return await self._run(functools.partial(
                _on_bytes, fingerprint, pickle.PickleBuffer(data), self.limits))
        return await self._run(functools.partial(fingerprint, data, self.limits))

    async def analyse(self, data: bytes) -> tuple[Fingerprint, bytes | None]:
        """The fingerprint and, when thumbnails are on, the thumbnail, in one worker call."""
        if self.thumbnail_size is None:
            return await self(data), None
        if self.workers > 0:
            # The upload travels out of band: sent from where it is, not copied into a pickle.
            return await self._run(functools.partial(
                _on_bytes, fingerprint_and_thumbnail, pickle.PickleBuffer(data), self.limits,
                self.thumbnail_size))
        return await self._run(
            functools.partial(fingerprint_and_thumbnail, data, self.limits, self.thumbnail_size)
        )

    async def verify(
        self, query: bytes, stored: list[Stage2Item]
    ) -> list[tuple[int, Evidence]]:
        """Stage 2 of matching for one upload's candidates, in one worker call.

        Local-feature verification is CPU work (~1 ms a candidate, OpenCV holding
        the GIL for parts of it): on the event loop it would stall every request.
        """
        if self.workers > 0:
            # The blobs (~400 KB for 64 candidates) travel out of band: sent from where they
            # are and read in place by the worker, not copied into and out of the pickle.
            stored = [(item[0], pickle.PickleBuffer(item[1]), *item[2:])
                      for item in stored]
        return await self._run(functools.partial(verify_many, query, stored))

    async def _run(self, job: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError("the fingerprint pool is closed")
        if self._thread is None and self._idle is None:
            await self.start()  # used without `start()`: start on first use
        if self._thread is not None:
            return await asyncio.get_running_loop().run_in_executor(self._thread, job)
        payload = _dump_job(job)
        # Shielded: an upload cancelled mid-job (client gone) must not leave a
        # worker with half a job sent or a reply unread; the exchange finishes
        # and the worker goes back to the idle queue either way.
        status, value = await asyncio.shield(self._exchange(payload))
        if status == "ok":
            return value  # type: ignore[no-any-return]
        raise value

    async def _exchange(self, payload: list[memoryview | bytes]) -> tuple[str, Any]:
        assert self._idle is not None
        worker = await self._idle.get()
        try:
            reply = await worker.exchange(payload)
        except WorkerLost as exc:
            # A worker died (out of memory on a hostile image, killed, over its CPU
            # limit): replace it so the next upload works, and refuse this one.
            await asyncio.to_thread(worker.process.join, 1.0)  # its exit status, if it is gone
            over_cpu = worker.process.exitcode == -signal.SIGXCPU
            log.error(
                "a fingerprint worker %s; starting another",
                f"ran over {self.cpu_seconds} CPU seconds" if over_cpu else f"died ({exc})",
            )
            self._retire(worker)
            self._replace()
            if over_cpu:
                raise ImageRejected(
                    Rejection.TOO_COSTLY,
                    f"the image needs more than {self.cpu_seconds} s of CPU to process",
                ) from exc
            raise ImageRejected(
                Rejection.NOT_PROCESSED, "the image could not be processed within limits"
            ) from exc
        except BaseException:
            self._retire(worker)
            self._replace()
            raise
        self._idle.put_nowait(worker)
        result: tuple[str, Any] = pickle.loads(reply)
        return result

    def _replace(self) -> None:
        """Start a worker in the background for one that was retired.

        In the background, retried until it starts: the upload that lost its
        worker is answered at once, and a forkserver that cannot fork for a
        while (memory pressure) must not shrink the pool for good, which would
        leave later uploads waiting for a worker that never comes.
        """
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self._replace_until_started())
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)

    async def _replace_until_started(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                worker = await self._spawn()
            except Exception as exc:
                log.error("cannot start a fingerprint worker (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._closed or self._idle is None:
                self._retire(worker)
            else:
                self._idle.put_nowait(worker)
            return

    def close(self) -> None:
        self._closed = True
        for task in list(self._replacing):
            task.cancel()
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)
        for worker in list(self._all):
            worker.stop(timeout=5)
        self._all.clear()
