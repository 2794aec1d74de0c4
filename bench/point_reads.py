"""CPU per upload of its SQLite lookups: on the event loop, or through the reader thread.

An upload looks up its API key, its SHA-256 and (stage 2) a few candidates'
feature blobs. Each lookup used to hop to the store's reader thread; now it
runs on the event loop (`SQLiteStore._read_here`). Both ways are timed in one
process, rounds alternating, as process CPU (all threads) per upload:

    PYTHONPATH=sdk:service .venv/bin/python bench/point_reads.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now
from shotstamp_service.store.sqlite import SQLiteStore


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "db.sqlite")
        await store.open()
        regs = [
            await store.add_registration(
                NewRegistration(
                    id=new_registration_id(),
                    seller="s",
                    sha256=f"{n:064x}",
                    perceptual={"phash": f"{n:016x}"},
                    received_at=format_time(utc_now()),
                    width=1000,
                    height=1000,
                    features=os.urandom(15000),  # an engine blob is ~15 KB
                )
            )
            for n in range(args.registrations)
        ]
        seqs = [r.seq for r in regs]

        async def upload(n: int) -> None:
            await store.get_api_key("ss_bench")
            await store.find_by_sha256(f"{n % len(seqs):064x}")
            await store.get_features(seqs[(n + k * 97) % len(seqs)] for k in range(3))

        here = store._read_here
        figures: dict[str, list[float]] = {"reader thread": [], "event loop": []}
        for _ in range(args.rounds):
            for mode in figures:
                store._read_here = here if mode == "event loop" else store._read  # type: ignore[method-assign]
                started = time.process_time()
                for n in range(args.uploads):
                    await upload(n)
                figures[mode].append((time.process_time() - started) * 1e6 / args.uploads)
        store._read_here = here  # type: ignore[method-assign]
        await store.close()
    print(f"CPU µs per upload's lookups (median of {args.rounds} rounds of {args.uploads}):")
    for mode, values in figures.items():
        print(
            f"  {mode:14s} {statistics.median(values):7.1f}   rounds: "
            + " ".join(f"{v:.0f}" for v in values)
        )
    ratio = statistics.median(figures["event loop"]) / statistics.median(figures["reader thread"])
    print(f"  event loop / reader thread: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uploads", type=int, default=2000)
    parser.add_argument("--registrations", type=int, default=2000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
