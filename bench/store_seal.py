"""Benchmark one seal's store work: `commit_seal` of a batch, CPU and wall time per seal.

    nice -n 19 .venv/bin/python bench/store_seal.py                 # this tree's store
    nice -n 19 .venv/bin/python bench/store_seal.py --compare OLD    # and another checkout's
    nice -n 19 .venv/bin/python bench/store_seal.py --compare OLD --postgres   # and PostgreSQL

OLD is a directory holding another version's `sdk/` and `service/` (for
instance `git archive <rev> | tar -x -C OLD`). With it, each round runs this
script once per tree in a subprocess, alternating, so both see the same load;
it prints per-tree medians and their ratio.

Each run seals `--seals` batches of `--batch` registrations into a fresh
SQLite store (and, with `--postgres`, in a fresh database on a throwaway
PostgreSQL server started as the tests start theirs, or with `--postgres-url`
on the server of that admin URL), registrations inserted
first. Only `commit_seal` is timed: leaf indices, tiles and the checkpoint in
one transaction (tiles and checkpoint are precomputed, so hashing and signing
are not counted). CPU time is the process's (all threads) from getrusage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(kind: str, batch: int, seals: int, url: str | None) -> dict[str, float]:
    from shotstamp import merkle
    from shotstamp_service.log.tree import LogTree
    from shotstamp_service.records import (
        CheckpointRecord,
        NewRegistration,
        format_time,
        new_registration_id,
        utc_now,
    )
    from shotstamp_service.store import SealBatch

    with tempfile.TemporaryDirectory() as tmp:
        if kind == "sqlite":
            from shotstamp_service.store.sqlite import SQLiteStore

            store: object = SQLiteStore(Path(tmp) / "db.sqlite")
        else:
            from shotstamp_service.store.postgres import PostgresStore

            store = PostgresStore(url or "")
        await store.open()  # type: ignore[attr-defined]
        try:
            await store.commit_seal(  # type: ignore[attr-defined]
                SealBatch([], [], CheckpointRecord(0, merkle.root_hash([]), 0, "n", "k"))
            )
            tree = LogTree.empty()
            cpu, wall = [], []
            for n in range(seals):
                regs = await asyncio.gather(
                    *(
                        store.add_registration(  # type: ignore[attr-defined]
                            NewRegistration(
                                id=new_registration_id(),
                                seller="s",
                                sha256=f"{n * batch + k:064x}",
                                perceptual={"phash": f"{k:016x}"},
                                received_at=format_time(utc_now()),
                                width=1,
                                height=1,
                            )
                        )
                        for k in range(batch)
                    )
                )
                regs = sorted(regs, key=lambda r: r.seq)
                grown, tiles = tree.append(merkle.leaf_hash(r.leaf_bytes()) for r in regs)
                sealed = SealBatch(
                    [(r.seq, tree.size + k) for k, r in enumerate(regs)],
                    tiles,
                    CheckpointRecord(grown.size, grown.root(), n, "n", "k"),
                )
                c0, w0 = _cpu(), time.perf_counter()
                await store.commit_seal(sealed)  # type: ignore[attr-defined]
                cpu.append(_cpu() - c0)
                wall.append(time.perf_counter() - w0)
                tree = grown
        finally:
            await store.close()  # type: ignore[attr-defined]
    return {"cpu_ms": statistics.median(cpu) * 1e3, "wall_ms": statistics.median(wall) * 1e3}


async def _database(admin_url: str, name: str, *, drop: bool) -> str:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _child(tree: Path, args: argparse.Namespace, kind: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'sdk'}:{tree / 'service'}"}
    cmd = [sys.executable, __file__, "--child", kind, "--batch", str(args.batch),
           "--seals", str(args.seals)]
    name = f"bench_seal_{os.getpid()}"
    if kind == "postgres":
        cmd += ["--postgres-url", asyncio.run(_database(args.postgres_url, name, drop=False))]
    try:
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    finally:
        if kind == "postgres":
            asyncio.run(_database(args.postgres_url, name, drop=True))
    return dict(json.loads(out.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="registrations per seal")
    parser.add_argument("--seals", type=int, default=20, help="seals timed per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per tree")
    parser.add_argument("--compare", type=Path, help="another checkout to run beside this one")
    parser.add_argument("--postgres", action="store_true", help="also time a throwaway PostgreSQL")
    parser.add_argument("--postgres-url", help="also time PostgreSQL on this server (admin URL)")
    parser.add_argument("--child", choices=["sqlite", "postgres"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_run(args.child, args.batch, args.seals, args.postgres_url))))
        return
    here = Path(__file__).resolve().parents[1]
    server = None
    if args.postgres and not args.postgres_url:
        sys.path.insert(0, str(here))  # for tests.kit
        from tests.kit.pgserver import start_server

        server = start_server()
        args.postgres_url = server.admin_url
    try:
        _compare(args, here)
    finally:
        if server is not None:
            server.stop()


def _compare(args: argparse.Namespace, here: Path) -> None:
    trees = {"this": here} | ({"other": args.compare.resolve()} if args.compare else {})
    kinds = ["sqlite"] + (["postgres"] if args.postgres_url else [])
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for kind in kinds:
            for name, tree in trees.items():
                results.setdefault((kind, name), []).append(_child(tree, args, kind))
    print(f"commit_seal of {args.batch} registrations, median of {args.seals} seals, "
          f"{args.rounds} alternating runs (median of the runs' medians)")
    print(f"{'store':9} {'tree':6} {'CPU ms/seal':>12} {'wall ms/seal':>13}")
    medians: dict[tuple[str, str], tuple[float, float]] = {}
    for (kind, name), runs in results.items():
        cpu = statistics.median(r["cpu_ms"] for r in runs)
        wall = statistics.median(r["wall_ms"] for r in runs)
        medians[(kind, name)] = (cpu, wall)
        print(f"{kind:9} {name:6} {cpu:12.2f} {wall:13.2f}")
    if args.compare:
        for kind in kinds:
            (c1, w1), (c0, w0) = medians[(kind, "this")], medians[(kind, "other")]
            print(f"{kind}: this/other CPU {c1 / c0:.2f}, wall {w1 / w0:.2f}")


if __name__ == "__main__":
    main()
