"""Imported only by the fingerprint pool's forkserver, as a preload: prepares it.

1. It ignores SIGTERM. The forkserver is the parent of the fingerprint
   workers and forks every replacement for a worker that died. An init
   system that stops the service signals its whole process group (systemd's
   default KillMode, docker-compose); the workers carry on with the uploads
   the graceful shutdown is finishing, and a worker lost meanwhile must still
   be replaceable. The forkserver still leaves with the service: it exits
   when its last client is gone. (It ignores SIGINT itself; the workers
   ignore both, see pool.py.)
2. It fingerprints one tiny image, so that the hashers' lazy imports (scipy's
   FFT for pHash: most of a second) happen once here, and every worker forked
   from it starts ready instead of paying for them on its first upload. It
   loads stage 2's numba kernels from numba's cache (`stage2_kernels.warm`), for the same
   reason: the forks share the code. A first start (nothing cached yet) compiles them in a
   child forked for that and gone before this process loads them, so the compiler's memory
   never reaches the workers (docs/cpu-budget.md, "Where it compiles"); where numba has no
   writable cache directory it compiles them itself, as it must.

3. It keeps freed memory in the workers' heap (glibc's `mallopt`, inherited by every fork):
   each upload's decode and arrays would otherwise be mapped fresh and page-faulted in,
   ~270 minor faults per corpus photo, none with it (bench/worker_cpu.py).

Never import this from the service's own process.
"""

import contextlib
import ctypes
import io
import os
import signal
from collections.abc import Callable

from numba.core import event as numba_event
from PIL import Image

from shotstamp_service.matching.fingerprint import fingerprint

signal.signal(signal.SIGTERM, signal.SIG_IGN)

# glibc's mallopt parameters: allocations below 16 MB come from the heap, and up to 64 MB of
# free heap is kept rather than returned to the kernel after each upload.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_heap() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its defaults stay
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 16 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)


_keep_heap()


class _WouldCompile(Exception):
    """numba was about to compile: the kernel is not in its cache."""


class _NoCompiling(numba_event.Listener):
    def on_start(self, event: numba_event.Event) -> None:
        raise _WouldCompile

    def on_end(self, event: numba_event.Event) -> None:
        pass


def _warm_stage2() -> None:
    """Load stage 2's kernels from numba's cache; what is not there yet, a child compiles.

    Compiling leaves numba's and LLVM's memory (~100 MB) in the process that compiles, and
    every worker forked from this one would start with it resident. So the kernels are first
    loaded with compiling forbidden (numba's "numba:compile" event raises): a later start
    loads them all and forks nothing. A first start forks a child that compiles them into the
    cache and exits, then loads them from there. Where numba has no writable cache directory
    (logged), or the child failed, this process compiles them, as it must.
    """
    from shotstamp_service.matching import stage2_kernels

    if stage2_kernels.cacheable():
        try:
            with numba_event.install_listener("numba:compile", _NoCompiling()):
                stage2_kernels.warm()
            return
        except _WouldCompile:
            _compile_in_child(stage2_kernels.warm)
    stage2_kernels.warm()  # from the cache the child wrote, or compiled here


def _compile_in_child(warm: Callable[[], None]) -> None:
    """Run `warm` in a forked child and wait for it to exit."""
    try:
        pid = os.fork()
    except OSError:
        return
    if pid:
        with contextlib.suppress(ChildProcessError, InterruptedError):
            os.waitpid(pid, 0)
        return
    status = 1
    try:
        warm()
        status = 0
    finally:
        os._exit(status)  # nothing of the parent's (atexit handlers, buffers) runs twice


def _warm_up() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, "PNG")
    with contextlib.suppress(Exception):  # a warm-up must never stop the pool starting
        fingerprint(buffer.getvalue())
    with contextlib.suppress(Exception):
        _warm_stage2()


_warm_up()
