"""Running the service, and stopping it gracefully on SIGTERM or SIGINT.

The stop, in order:

1. Stop accepting: close the listening sockets. New connections are refused.
2. Drain: every request already in progress runs to its end, reading the rest
   of its body, fingerprinting, committing, answering (up to `drain_timeout`).
   Responses sent meanwhile carry `Connection: close`.
3. Clean up: close idle keep-alive connections, then the app's cleanup
   contexts in reverse: the sealer seals whatever is pending, the pool and the
   store close.

aiohttp's own `run_app` does not do step 2: from the moment shutdown begins it
ignores data arriving on every connection (aio-libs/aiohttp#2298), so an
upload whose body is still on the wire would hang until the shutdown timeout
and be cut off without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["HAND_BACK_IN_FLIGHT", "InFlight", "serve", "stop_gracefully", "track_in_flight"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# With several processes accepting on one socket: a response that leaves while this process
# has at least this many other requests in flight closes its connection (docs/processes.md).
HAND_BACK_IN_FLIGHT = 2


class InFlight:
    """Counts requests between their first byte of handling and their response.

    `hand_back` (several processes on one socket, else None): a response that leaves while
    at least that many other requests are in flight here carries `Connection: close`, so
    the client's next request reconnects, and the kernel gives the new connection to a
    process whose loop is waiting in accept, not to this busy one. Keep-alive connections
    otherwise stay with whichever process accepted them, however unevenly they fell.
    """

    def __init__(self, hand_back: int | None = None) -> None:
        self.count = 0
        self.draining = False
        self.hand_back = hand_back
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True once nothing is in flight; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


IN_FLIGHT = web.AppKey("in_flight", InFlight)


@web.middleware
async def track_in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    in_flight = request.app[IN_FLIGHT]
    in_flight.enter()
    try:
        response = await handler(request)
        if in_flight.draining:
            response.force_close()  # no further requests on this connection
        elif in_flight.hand_back is not None and in_flight.count > in_flight.hand_back:
            response.force_close()  # busy: the client's next connection goes elsewhere
        return response
    finally:
        in_flight.leave()


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    drain_timeout: float = 30.0,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve `app` until SIGTERM or SIGINT, then stop as the module docstring says."""
    # No aiohttp access log: the app logs each request itself, with its request id.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        announce(f"======== Running on http://{host}:{port} ========")

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    except BaseException:
        with contextlib.suppress(asyncio.CancelledError):
            await runner.cleanup()
        raise
    await stop_gracefully(runner, drain_timeout)


async def stop_gracefully(runner: web.AppRunner, drain_timeout: float) -> None:
    """Steps 1-3 of the module docstring, for `serve` and the multi-process worker."""
    try:
        # (1) Stop accepting.
        started = time.monotonic()
        in_flight = runner.app[IN_FLIGHT]
        in_flight.draining = True
        for each in list(runner.sites):
            await each.stop()
        log.info("stopping: no longer accepting; %d requests in flight", in_flight.count)
        # (2) Let what is in flight finish, bodies still arriving included.
        if not await in_flight.wait_idle(drain_timeout):
            log.warning(
                "stopping: %d requests still in flight after %.0f s; cutting them off",
                in_flight.count,
                drain_timeout,
            )
        log.info("stopping: drained in %.2f s", time.monotonic() - started)
    finally:
        # (3) Idle connections, then the app's cleanup (the final seal).
        with contextlib.suppress(asyncio.CancelledError):
            await runner.cleanup()
    log.info("stopped")
