"""CPU of the serving process's store work per upload, by thread, on a real SQLite store.

Two parts, in one process, on a temporary data directory:

- `calls`: the store calls one registration makes, alone (no matching): for each of
  `--uploads` realistic rows (a product shot's real fingerprint, feature blob and
  thumbnails), `--clients` at a time, the exact-copy lookup (`find_by_sha256`), the
  commit (`add_registration`, group commit), the index's follow read
  (`iter_fingerprints` past the last seq read) and stage 2's blob reads (`get_features`
  of `--features` earlier registrations), with a sealer sealing every second.
  Reported per upload: process CPU (`time.process_time`), and the thread CPU of the
  event loop and of the store's writer and reader threads (`time.thread_time`, read on
  each thread); `loop reads` is the part of the loop's spent in the store's reads made
  there (`SQLiteStore._read_here`).
- `registry`: `Registry.register` of distinct product shots as `bench/registry_cpu.py`
  drives it (fingerprints made beforehand, stage 2 on a thread of its own, which is
  left out), with the same sealer; the same columns per upload.

Run it from two checkouts, alternating, to compare builds:

    PYTHONPATH=<build>/sdk:<build>/service:. .venv/bin/python bench/store_cpu.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.productshots import product_shots
from shotstamp_service.http.auth import Principal
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import LogSigner
from shotstamp_service.matching.engine import Matcher, verify_many
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now
from shotstamp_service.registry import Registry
from shotstamp_service.store.sqlite import SQLiteStore


async def _thread_cpu(executor: ThreadPoolExecutor) -> float:
    return await asyncio.get_running_loop().run_in_executor(executor, time.thread_time)


async def _cpu(store: SQLiteStore) -> dict[str, float]:
    return {"process": time.process_time(), "loop": time.thread_time(),
            "writer": await _thread_cpu(store._writer), "reader": await _thread_cpu(store._reader)}


def _time_loop_reads(store: SQLiteStore) -> list[float]:
    """Count the thread CPU of the store's reads made on the event loop (`_read_here`)."""
    spent = [0.0]
    loop_thread = threading.get_ident()
    read_here = store._read_here

    def timed(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(conn: Any) -> Any:
            if threading.get_ident() != loop_thread:
                return fn(conn)
            start = time.thread_time()
            try:
                return fn(conn)
            finally:
                spent[0] += time.thread_time() - start
        return run

    store._read_here = lambda fn: read_here(timed(fn))  # type: ignore[method-assign]
    return spent


async def _timed(store: SQLiteStore, work: Callable[[], Awaitable[Any]], count: int,
                 off_loop: Callable[[], float]) -> dict[str, float]:
    """ms of CPU per upload by thread while `work` runs (`off_loop`: CPU to leave out)."""
    loop_reads = _time_loop_reads(store)
    sealer = Sealer(store, LogSigner("bench.example/log", Ed25519PrivateKey.generate()),
                    interval=1.0)
    await sealer.load()
    sealing = asyncio.create_task(sealer.run())
    before, left_out = await _cpu(store), off_loop()
    try:
        await work()
        await sealer.seal_once()
    finally:
        sealing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sealing
    after, left_out = await _cpu(store), off_loop() - left_out
    spent = {k: (after[k] - before[k]) * 1000 / count for k in before}
    spent["process"] -= left_out * 1000 / count
    spent["loop reads"] = loop_reads[0] * 1000 / count
    return spent


def _row(fp: Fingerprint, thumbnail: bytes | None, n: int) -> NewRegistration:
    perceptual, features = fp.to_store()
    return NewRegistration(
        id=new_registration_id(), seller=f"seller{n % 8}", sha256=fp.sha256,
        perceptual=perceptual, received_at=format_time(utc_now()), width=fp.width,
        height=fp.height, title=None, reference=None, idempotency_key=None,
        idempotency_digest=None, features=features, thumbnail=thumbnail,
        seller_salt=os.urandom(32),
    )


async def calls_round(rows: list[NewRegistration], clients: int,
                      features: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "db.sqlite")
        await store.open()
        queue = list(rows)
        through = 0
        picks = random.Random(1)

        async def client() -> None:
            nonlocal through
            while queue:
                new = queue.pop()
                await store.find_by_sha256(new.sha256)
                seq = (await store.add_registration(new)).seq
                async for stored in store.iter_fingerprints(after_seq=through):
                    through = max(through, stored.seq)
                # Stage 2's reads: as many stored candidates' blobs as an upload reads.
                await store.get_features(picks.sample(range(1, seq), min(features, seq - 1)))

        async def work() -> None:
            await asyncio.gather(*(client() for _ in range(clients)))

        spent = await _timed(store, work, len(rows), lambda: 0.0)
        await store.close()
        return spent


async def registry_round(shots: list[bytes], fps: dict[bytes, tuple[Fingerprint, bytes | None]],
                         clients: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "db.sqlite")
        await store.open()
        stage2 = ThreadPoolExecutor(1)

        async def analyse(data: bytes) -> tuple[Fingerprint, bytes | None]:
            return fps[data]

        async def verify(query: bytes, items: list) -> list:  # type: ignore[type-arg]
            return await asyncio.get_running_loop().run_in_executor(
                stage2, verify_many, query, items)

        async def fingerprint_of(data: bytes) -> Fingerprint:
            return fps[data][0]

        registry = Registry(store, Matcher(), fingerprint_of, analyse=analyse, verify=verify)
        await registry.load_index()
        queue = list(enumerate(shots))

        async def client() -> None:
            while queue:
                n, data = queue.pop()
                await registry.register(Principal(f"seller{n % 8}", "seller", f"k{n % 8}"), data)

        async def work() -> None:
            await asyncio.gather(*(client() for _ in range(clients)))

        def off_loop() -> float:  # stage 2's thread: the fingerprint workers' share, not ours
            return stage2.submit(time.thread_time).result()

        spent = await _timed(store, work, len(shots), off_loop)
        stage2.shutdown()
        await store.close()
        return spent


def _report(name: str, runs: list[dict[str, float]]) -> None:
    keys = ("process", "loop", "loop reads", "writer", "reader")
    for n, run in enumerate(runs, 1):
        print(f"  {name} round {n}: " + ", ".join(f"{k} {run[k]:.3f}" for k in keys), flush=True)
    print(f"{name} median ms per upload: "
          + ", ".join(f"{k} {statistics.median(r[k] for r in runs):.3f}" for k in keys),
          flush=True)


async def main_async(args: argparse.Namespace) -> None:
    shots = [p.read_bytes() for p in product_shots(args.uploads)][: args.uploads]
    fps: dict[bytes, tuple[Fingerprint, bytes | None]] = {}
    for data in shots:
        fps[data] = (fingerprint(data), data[:5000])  # a desk thumbnail's size of bytes
    calls: list[dict[str, float]] = []
    whole: list[dict[str, float]] = []
    for _ in range(args.rounds):
        if "calls" in args.parts:
            calls.append(await calls_round([_row(fp, t, n) for n, (fp, t) in
                                            enumerate(fps.values())], args.clients,
                                           args.features))
        if "registry" in args.parts:
            whole.append(await registry_round(shots, fps, args.clients))
    if calls:
        _report("calls", calls)
    if whole:
        _report("registry", whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--features", type=int, default=48,
                        help="feature blobs read per upload in `calls` (48: the mean of a "
                        "`registry` round of product shots)")
    parser.add_argument("--parts", nargs="+", default=["calls", "registry"],
                        choices=["calls", "registry"])
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
