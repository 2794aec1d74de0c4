"""CPU per registration that a second serving process adds: indexing the other's rows and the guard.

Two `Registry`s, each on its own `SQLiteStore` of one database file (what two serving
processes are), in one process, take the same distinct product shots from `--clients`
clients that alternate between them; the same shots into one registry alone are the
baseline. No HTTP and no decoding (the shots are fingerprinted beforehand; stage 2 runs
on a thread). What is timed is the whole process's CPU (`time.process_time`: the event
loop, the store's writer threads and stage 2), so the difference between the two is the
extra work every registration costs once a second process exists: reading and indexing
the other's rows (`load_index`), the pre-lock look (`_check_foreign`) and the screen under
the lock (`_ForeignScreen.check`). The thread CPU of the index's steps on each thread
is counted too (the totals are noisy on a shared host; the per-step figures are not):

    PYTHONPATH=sdk:service:. .venv/bin/python bench/foreign_cpu.py --uploads 400 --rounds 3

Run it from two checkouts (PYTHONPATH=<build>/sdk:<build>/service:.) to compare builds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.productshots import product_shots
from shotstamp_service import registry as registry_module
from shotstamp_service.http.auth import Principal
from shotstamp_service.matching.engine import Matcher, verify_many
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.registry import Registry
from shotstamp_service.store.sqlite import SQLiteStore

SPENT: Counter[str] = Counter()


_OUTER = threading.local()  # a timed call inside another is counted in the outer one only


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (sync) with its thread CPU added to SPENT["<thread>: name"], outermost calls only."""
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if getattr(_OUTER, "busy", False):
            return fn(*args, **kwargs)
        _OUTER.busy = True
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            where = "loop" if threading.current_thread() is threading.main_thread() else "writer"
            SPENT[f"{where}: {name}"] += time.thread_time() - start
            _OUTER.busy = False
    return timed


def instrument() -> None:
    """Time the index's sync steps on each thread: on the loop (the decision, `load_index`'s
    adds, the pre-lock look's `look_again`) and on the writer (the screen under the lock)."""
    for name in ("add", "search", "candidates", "look", "look_again"):
        setattr(Matcher, name, _timed(f"Matcher.{name}", getattr(Matcher, name)))
    registry_module.Fingerprint.from_store = classmethod(  # type: ignore[method-assign]
        _timed("Fingerprint.from_store", registry_module.Fingerprint.from_store.__func__))
    registry_module.verify_many = _timed(  # type: ignore[attr-defined]
        "verify_many (screen stage 2)", registry_module.verify_many)
    registry_module._ForeignScreen.check = _timed(  # type: ignore[method-assign]
        "_ForeignScreen.check (all of it)", registry_module._ForeignScreen.check)


async def one_round(shots: list[bytes], fps: dict[bytes, Fingerprint], clients: int,
                    processes: int) -> tuple[float, dict[str, int], dict[str, float]]:
    """Process CPU ms per upload, the outcomes and the instrumented parts (ms per upload)."""
    SPENT.clear()
    with tempfile.TemporaryDirectory() as tmp:
        stores = [SQLiteStore(Path(tmp) / "db.sqlite") for _ in range(processes)]

        async def fingerprint_of(data: bytes) -> Fingerprint:
            return fps[data]

        async def verify(query: bytes, items: list) -> list:  # type: ignore[type-arg]
            return await asyncio.to_thread(verify_many, query, items)

        registries = []
        for store in stores:
            await store.open()
            registries.append(Registry(store, Matcher(), fingerprint_of, verify=verify))
        for registry in registries:
            await registry.load_index()
        queue = list(enumerate(shots))
        outcomes: dict[str, int] = {}

        async def client(c: int) -> None:
            registry = registries[c % processes]
            while queue:
                n, data = queue.pop()
                who = Principal(f"seller{n % 8}", "seller", f"k{n % 8}")
                outcome = await registry.register(who, data)
                outcomes[outcome.kind] = outcomes.get(outcome.kind, 0) + 1

        start = time.process_time()
        await asyncio.gather(*(client(c) for c in range(clients)))
        spent = time.process_time() - start
        for store in stores:
            await store.close()
        parts = {name: s / len(shots) * 1000 for name, s in SPENT.items()}
        return spent / len(shots) * 1000, outcomes, parts


async def main_async(args: argparse.Namespace) -> None:
    instrument()
    shots = [p.read_bytes() for p in product_shots(args.uploads)][: args.uploads]
    fps = {data: fingerprint(data) for data in shots}
    totals: dict[int, list[float]] = {1: [], 2: []}
    parts: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for r in range(args.rounds):
        for processes in (1, 2):
            ms, outcomes, part = await one_round(shots, fps, args.clients, processes)
            totals[processes].append(ms)
            parts[processes].append(part)
            print(f"round {r + 1}, {processes} registr{'y' if processes == 1 else 'ies'}: "
                  f"{ms:.2f} ms of CPU per upload {outcomes}", flush=True)
    one, two = statistics.median(totals[1]), statistics.median(totals[2])
    print(f"median: one registry {one:.2f} ms, two {two:.2f} ms, the second process's extra "
          f"{two - one:.2f} ms per upload")
    print("thread CPU ms per upload (median)    one registry  two registries")
    for name in sorted({k for p in parts[2] for k in p}):
        a, b = (statistics.median(p.get(name, 0.0) for p in parts[n]) for n in (1, 2))
        print(f"  {name:<38} {a:6.3f}        {b:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
