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
   compiles stage 2's numba kernels, or loads them from numba's cache
   (`stage2_kernels.warm`), for the same reason: the forks share the code.

3. It keeps freed memory in the workers' heap (glibc's `mallopt`, inherited by every fork):
   each upload's decode and arrays would otherwise be mapped fresh and page-faulted in,
   ~270 minor faults per corpus photo, none with it (bench/worker_cpu.py).

Never import this from the service's own process.
"""

import contextlib
import ctypes
import io
import signal

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


def _warm_up() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, "PNG")
    with contextlib.suppress(Exception):  # a warm-up must never stop the pool starting
        fingerprint(buffer.getvalue())
    with contextlib.suppress(Exception):
        from shotstamp_service.matching import stage2_kernels

        stage2_kernels.warm()


_warm_up()
