"""Several serving processes on one port, supervised by gunicorn (`serve --processes N`).

gunicorn's arbiter starts the processes, restarts one that dies, kills one
whose event loop stops checking in for `timeout` seconds, and reloads them
one by one on SIGHUP. Each worker is aiohttp's own gunicorn worker with the
stop of `http/serve.py` (drain what is in flight, then the final seal) in
place of aiohttp's, which drops request bodies still arriving.
docs/processes.md says how the processes share one data directory.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web
from aiohttp.worker import GunicornWebWorker
from gunicorn.app.base import BaseApplication

from shotstamp_service.config import Config
from shotstamp_service.http.serve import HAND_BACK_IN_FLIGHT, IN_FLIGHT, stop_gracefully

__all__ = ["ServiceArbiterApp", "ShotstampWorker", "run_processes"]

# Seconds a worker's event loop may go without checking in before gunicorn kills it.
HEARTBEAT_TIMEOUT = 30


class ShotstampWorker(GunicornWebWorker):
    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._notify_waiter_done()  # stop accepting now, not at the next heartbeat

    async def _run(self) -> None:
        app = self.wsgi
        assert isinstance(app, web.Application)
        app[IN_FLIGHT].hand_back = HAND_BACK_IN_FLIGHT  # several processes share the socket
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, access_log=None)
        await runner.setup()
        for sock in self.sockets:
            # asyncio accepts up to `backlog` queued connections per wake-up, so one worker
            # would take a whole burst of keep-alive connections and serve them alone. With
            # 1, each awake worker takes one at a time and a busy one (its loop not polling)
            # leaves the rest to the others; then the kernel queue gets its length back.
            await web.SockSite(runner, sock, backlog=1).start()
            sock.listen(self.cfg.backlog)
        self.booted = True  # tells the arbiter a start failure is not a clean exit
        pid = os.getpid()
        try:
            while self.alive:
                self.notify()
                if pid == os.getpid() and self.ppid != os.getppid():
                    self.log.info("parent changed, shutting down: %s", self)
                    break
                await self._wait_next_notify()
        finally:
            await stop_gracefully(runner, self.app.config.shutdown_timeout)


class ServiceArbiterApp(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from `Config`; each worker builds its own app after the fork."""

    def __init__(self, config: Config) -> None:
        self.config = config
        super().__init__()

    def load_config(self) -> None:
        settings: dict[str, Any] = {
            "bind": [f"{self.config.host}:{self.config.port}"],
            "workers": self.config.processes,
            "worker_class": f"{__name__}.ShotstampWorker",
            "timeout": HEARTBEAT_TIMEOUT,
            # The drain, then the final seal, before the arbiter resorts to SIGKILL.
            "graceful_timeout": int(self.config.shutdown_timeout) + 15,
            "proc_name": "shotstamp-service",
            # No control socket: it would be one per user, shared by every service.
            "control_socket_disable": True,
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def load(self) -> web.Application:
        from shotstamp_service.http.app import create_app

        return create_app(self.config)


async def prepare(config: Config) -> None:
    """Migrate the store and make the log's first signing key once, before the fork,
    so the processes do not each make one (and errors show before any starts)."""
    from shotstamp_service.http.app import make_signing_keys, make_store

    store = make_store(config)
    await store.open()
    try:
        await make_signing_keys(config, store).open()
    finally:
        await store.close()


def run_processes(config: Config) -> None:
    """Run `config.processes` serving processes until SIGTERM; exits like gunicorn."""
    asyncio.run(prepare(config))
    ServiceArbiterApp(config).run()
