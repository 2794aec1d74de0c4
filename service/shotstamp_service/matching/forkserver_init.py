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
   from it starts ready instead of paying for them on its first upload.

Never import this from the service's own process.
"""

import contextlib
import io
import signal

from PIL import Image

from shotstamp_service.matching.fingerprint import fingerprint

signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _warm_up() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, "PNG")
    with contextlib.suppress(Exception):  # a warm-up must never stop the pool starting
        fingerprint(buffer.getvalue())


_warm_up()
