"""CPU per registration of the serving process's matching and storage glue, and of the guard.

`Registry.register` for distinct product shots, `--clients` at a time, on a real
SQLite store in a temporary directory. No HTTP and no decoding: the shots are
fingerprinted once beforehand, and stage 2 runs on a thread beside the event loop,
so what is timed is the event loop thread's CPU (`time.thread_time`), which is
what the serving process's one core spends on the registry, the index and the
store's reads and the in-lock registration guard (`Registry.recheck`, which runs
on the loop). Rounds alternate the guard on and off in one process; the
difference is the guard's cost in a single process:

    PYTHONPATH=sdk:service:. .venv/bin/python bench/registry_cpu.py --uploads 300 --rounds 3

Run it from two checkouts (PYTHONPATH=<build>/sdk:<build>/service:.) to compare builds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.productshots import product_shots
from shotstamp_service.http.auth import Principal
from shotstamp_service.matching.engine import Matcher, verify_many
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.registry import Registry
from shotstamp_service.store.sqlite import SQLiteStore


async def one_round(shots: list[bytes], fps: dict[bytes, Fingerprint], clients: int,
                    guard: bool) -> tuple[float, dict[str, int]]:
    """Event-loop CPU ms per upload, and the outcomes."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "db.sqlite")
        await store.open()

        async def fingerprint_of(data: bytes) -> Fingerprint:
            return fps[data]

        async def verify(query: bytes, items: list) -> list:  # type: ignore[type-arg]
            return await asyncio.to_thread(verify_many, query, items)

        registry = Registry(store, Matcher(), fingerprint_of, verify=verify)
        if not guard:
            store.guard_registrations(None)  # type: ignore[arg-type]
        await registry.load_index()
        queue = list(enumerate(shots))
        outcomes: dict[str, int] = {}

        async def client() -> None:
            while queue:
                n, data = queue.pop()
                who = Principal(f"seller{n % 8}", "seller", f"k{n % 8}")
                outcome = await registry.register(who, data)
                outcomes[outcome.kind] = outcomes.get(outcome.kind, 0) + 1

        start = time.thread_time()
        await asyncio.gather(*(client() for _ in range(clients)))
        spent = time.thread_time() - start
        await store.close()
        return spent / len(shots) * 1000, outcomes


async def main_async(args: argparse.Namespace) -> None:
    shots = [p.read_bytes() for p in product_shots(args.uploads)][: args.uploads]
    fps = {data: fingerprint(data) for data in shots}
    on: list[float] = []
    off: list[float] = []
    for r in range(args.rounds):
        for guard, into in ((True, on), (False, off)):
            ms, outcomes = await one_round(shots, fps, args.clients, guard)
            into.append(ms)
            print(f"round {r + 1} guard {'on ' if guard else 'off'}: {ms:.2f} ms of event-loop "
                  f"CPU per upload {outcomes}", flush=True)
    print(f"median: guard on {statistics.median(on):.2f} ms, off {statistics.median(off):.2f} ms,"
          f" the guard {statistics.median(on) - statistics.median(off):.2f} ms per upload")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
