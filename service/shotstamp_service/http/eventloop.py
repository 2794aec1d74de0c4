"""Which event loop the serving processes run: uvloop's (default) or asyncio's own.

uvloop (libuv under the asyncio API) takes less CPU per request for the same
work: its selector, callbacks, timers and socket transports are compiled
(docs/processes.md, "The event loop", has the figures). asyncio's own loop
stays a setting (`SHOTSTAMP_EVENT_LOOP=asyncio`), for debugging and for
platforms without a uvloop wheel; asking for uvloop where it cannot be
imported serves on asyncio's loop and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shotstamp_service.config import EVENT_LOOPS

__all__ = ["describe", "loop_factory"]

log = logging.getLogger(__name__)

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory:
    """What makes the serving loop for `choice` (one of EVENT_LOOPS)."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"event loop {choice!r} is not one of {EVENT_LOOPS}")
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            log.warning("uvloop cannot be imported (%s); serving on asyncio's event loop", exc)
        else:
            factory: LoopFactory = uvloop.new_event_loop
            return factory
    return asyncio.new_event_loop


def describe(loop: asyncio.AbstractEventLoop) -> str:
    """The loop's class as module.name, e.g. `uvloop.Loop`: what the start-up log line says."""
    kind = type(loop)
    return f"{kind.__module__}.{kind.__qualname__}"
