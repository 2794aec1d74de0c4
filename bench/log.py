"""Benchmark the log: append throughput through the sealer, proof latency, storage.

    nice -n 19 .venv/bin/python bench/log.py                  # 1M and 100M leaves
    nice -n 19 .venv/bin/python bench/log.py --sizes 1000000  # 1M only (a few minutes)

For each size it prints:

* append throughput: leaves per second through the real `Sealer` (pending
  registrations read from SQLite, leaf JSON hashed, tiles written, checkpoint
  signed, all in one commit), and the time of one seal of 1,000 / 10,000 /
  50,000 leaves at that size: a seal's cost follows the batch, not the log;
* proof latency: inclusion and consistency proofs from the SQLite store
  (median and p99 of `--samples` random proofs), beside the naive approach
  that recomputes from every leaf hash (`shotstamp.merkle.inclusion_proof` /
  `consistency_proof`), and at 1M beside the first release's layout (one SQLite
  row per complete subtree, `tree_nodes`);
* storage: bytes on disk for the tiles (and for `tree_nodes` at 1M).

How the trees are built:

* up to `--sealer-limit` leaves (default 2M): real registrations inserted in
  bulk, then sealed by the real sealer in batches of 50,000;
* above it: a synthetic tree written straight into the store. Leaf hashes are
  pseudo-random 32-byte strings (numpy PCG64, seed 1) standing in for SHA-256
  outputs; every tile above them is computed from them as the sealer would;
  one checkpoint is signed over the root. The real sealer then loads that
  tree and appends real registrations to it.

The page cache is warm (the trees were just written), as it is for a running
service. Needs about 3.5 GB of disk and 4 GB of memory per 100M leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp import _merkle as merkle
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import LogSigner
from shotstamp_service.log.tiles import TILE_BYTES, TILE_WIDTH
from shotstamp_service.log.tree import LogTree, consistency_proof, inclusion_proof
from shotstamp_service.store.sqlite import SQLiteStore

ORIGIN = "bench.shotstamp.local/log"
SEAL_BATCH = 50_000
BATCHES = (1_000, 10_000, 50_000)


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def table_bytes(path: Path, table: str) -> int:
    """Pages of one table and its indexes (SQLite's dbstat)."""
    conn = sqlite3.connect(path)
    (total,) = conn.execute(
        "SELECT sum(pgsize) FROM dbstat WHERE name = ? OR name LIKE ?",
        (table, f"sqlite_autoindex_{table}_%"),
    ).fetchone()
    conn.close()
    return int(total or 0)


# -- registrations in bulk (not timed: the sealer is what is measured) ------------


def insert_pending(database: Path, start: int, count: int) -> None:
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA synchronous=OFF")
    rng = random.Random(start)
    rows = []
    for n in range(start, start + count):
        rows.append(
            (
                f"01BENCH{n:019d}",
                f"seller-{n % 1000}",
                rng.randbytes(32).hex(),
                json.dumps({"phash": rng.randbytes(8).hex()}),
                "2025-11-26T09:00:00.000000Z",
                800,
                600,
            )
        )
        if len(rows) == 100_000:
            _insert(conn, rows)
            rows = []
    _insert(conn, rows)
    conn.close()


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    with conn:
        conn.executemany(
            "INSERT INTO registrations (id, seller, sha256, perceptual, received_at, width, height)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


async def timed_seals(sealer: Sealer, batch: int, count: int) -> list[float]:
    sealer.max_batch = batch
    times = []
    for _ in range(count):
        start = time.perf_counter()
        checkpoint = await sealer.seal_once()
        times.append(time.perf_counter() - start)
        assert checkpoint is not None
    return times


# -- trees ------------------------------------------------------------------------


async def build_through_sealer(database: Path, signer: LogSigner, size: int) -> dict[str, Any]:
    store = SQLiteStore(database)
    await store.open()
    await store.close()
    insert_pending(database, 0, size)
    store = SQLiteStore(database)
    await store.open()
    sealer = Sealer(store, signer, max_batch=SEAL_BATCH)
    await sealer.load()
    start = time.perf_counter()
    times = await timed_seals(sealer, SEAL_BATCH, -(-size // SEAL_BATCH))
    total = time.perf_counter() - start
    await store.close()
    return {
        "how": f"{size:,} real registrations sealed by the sealer in batches of {SEAL_BATCH:,}",
        "build_s": total,
        "throughput": size / total,
        "median_seal_s": statistics.median(times),
    }


def tile_root(data: bytes) -> bytes:
    level = [data[i : i + 32] for i in range(0, len(data), 32)]
    sha = hashlib.sha256
    while len(level) > 1:
        level = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


async def build_synthetic(database: Path, signer: LogSigner, size: int) -> dict[str, Any]:
    store = SQLiteStore(database)
    await store.open()
    await store.close()
    start = time.perf_counter()
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA synchronous=OFF")
    rng = np.random.default_rng(1)
    insert = "INSERT INTO tiles (level, idx, data) VALUES (?, ?, ?)"

    level, count, above, entries = 0, size, bytearray(), bytearray()
    while count:
        rows: list[tuple[int, int, bytes]] = []
        full, width = divmod(count, TILE_WIDTH)
        for index in range(full):
            if level == 0:
                data = rng.bytes(TILE_BYTES)
            else:
                data = bytes(entries[index * TILE_BYTES : (index + 1) * TILE_BYTES])
            rows.append((level, index, data))
            above += tile_root(data)  # the next level holds the roots of full tiles only
            if len(rows) == 2_000:
                with conn:
                    conn.executemany(insert, rows)
                rows = []
        if width:
            if level == 0:
                data = rng.bytes(width * 32)
            else:
                data = bytes(entries[full * TILE_BYTES : full * TILE_BYTES + width * 32])
            rows.append((level, full, data))
        with conn:
            conn.executemany(insert, rows)
        entries, above = above, bytearray()
        level, count = level + 1, len(entries) // 32
        if level == 1:
            say(f"    level 0 tiles written in {time.perf_counter() - start:.0f} s")
    conn.close()

    store = SQLiteStore(database)
    await store.open()
    root = (await LogTree.load(store, size)).root()
    timestamp = time.time_ns()
    await store._write(
        lambda c: c.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, timestamp_ns, note, key_id)"
            " VALUES (?, ?, ?, ?, ?)",
            (size, root, timestamp, signer.sign_checkpoint(size, root, timestamp), signer.key_id),
        )
    )
    await store.close()
    return {
        "how": f"synthetic: {size:,} pseudo-random leaf hashes, tiles computed and written "
        "straight into the store, one signed checkpoint",
        "build_s": time.perf_counter() - start,
    }


async def seal_costs(database: Path, signer: LogSigner, size: int) -> dict[int, float]:
    """Median time of one seal of each batch size, appended to the tree of `size`."""
    per_batch = {b: max(2, 3 * SEAL_BATCH // b // 10) for b in BATCHES}
    insert_pending(database, size, sum(b * n for b, n in per_batch.items()))
    store = SQLiteStore(database)
    await store.open()
    sealer = Sealer(store, signer)
    await sealer.load()
    costs = {b: statistics.median(await timed_seals(sealer, b, n)) for b, n in per_batch.items()}
    await store.close()
    return costs


# -- proofs ---------------------------------------------------------------------------


class TreeNodes:
    """The first release's layout: one row per complete subtree, read one node per query."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.pool = ThreadPoolExecutor(1)

    async def get_nodes(self, coords: Any) -> dict[tuple[int, int], bytes]:
        wanted = sorted(set(coords))

        def run() -> dict[tuple[int, int], bytes]:
            found = {}
            for level, idx in wanted:
                row = self.conn.execute(
                    "SELECT hash FROM tree_nodes WHERE level = ? AND idx = ?", (level, idx)
                ).fetchone()
                if row is not None:
                    found[(level, idx)] = bytes(row[0])
            return found

        return await asyncio.get_running_loop().run_in_executor(self.pool, run)


def build_tree_nodes(path: Path, leaves: Sequence[bytes]) -> float:
    start = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(
        "CREATE TABLE tree_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL,"
        " hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID"
    )
    _, _, nodes = LogTree.empty()._grow(leaves)
    with conn:
        conn.executemany("INSERT INTO tree_nodes VALUES (?, ?, ?)", nodes)
    conn.close()
    return time.perf_counter() - start


class LeafHashes(Sequence[bytes]):
    """Every leaf hash of the tree, from one buffer (a list of 100M bytes would need 9 GB)."""

    def __init__(self, buffer: bytes | bytearray, size: int) -> None:
        self.buffer, self.size = buffer, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, _ = index.indices(self.size)
            return LeafHashes(self.buffer[start * 32 : stop * 32], stop - start)
        if not 0 <= index < self.size:
            raise IndexError(index)
        return self.buffer[index * 32 : index * 32 + 32]

    def __iter__(self) -> Any:
        for offset in range(0, self.size * 32, 32):
            yield self.buffer[offset : offset + 32]


def read_leaves(database: Path, size: int) -> LeafHashes:
    conn = sqlite3.connect(database)
    buffer = bytearray()
    for (data,) in conn.execute("SELECT data FROM tiles WHERE level = 0 ORDER BY idx"):
        buffer += data
    conn.close()
    return LeafHashes(buffer, size)  # no copy: 3.2 GB at 100M


async def latencies(
    reader: Any, size: int, samples: int, seed: int
) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    inclusion, consistency = [], []
    for _ in range(samples):
        index = rng.randrange(size)
        start = time.perf_counter()
        await inclusion_proof(reader, index, size)
        inclusion.append(time.perf_counter() - start)
        first = rng.randrange(1, size)
        start = time.perf_counter()
        await consistency_proof(reader, first, size)
        consistency.append(time.perf_counter() - start)
    return inclusion, consistency


def naive(leaves: LeafHashes, samples: int, seed: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    inclusion, consistency = [], []
    for _ in range(samples):
        index = rng.randrange(len(leaves))
        start = time.perf_counter()
        merkle.inclusion_proof(leaves, index)
        inclusion.append(time.perf_counter() - start)
        first = rng.randrange(1, len(leaves))
        start = time.perf_counter()
        merkle.consistency_proof(leaves, first)
        consistency.append(time.perf_counter() - start)
    return inclusion, consistency


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


# -- one size ---------------------------------------------------------------------------


async def bench_size(size: int, args: argparse.Namespace, workdir: Path) -> None:
    database = workdir / f"log-{size}.db"
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.generate())
    say(f"\n== {size:,} leaves")
    if size <= args.sealer_limit:
        built = await build_through_sealer(database, signer, size)
    else:
        built = await build_synthetic(database, signer, size)
    say(f"  built: {built['how']}, in {fmt_s(built['build_s'])}")
    tiles_bytes = table_bytes(database, "tiles")
    conn = sqlite3.connect(database)
    (rows,) = conn.execute("SELECT count(*) FROM tiles").fetchone()
    conn.close()
    say(
        f"  storage: {rows:,} tile rows, {tiles_bytes / 1e9:.3f} GB "
        f"({tiles_bytes / size:.1f} bytes per leaf; whole database file "
        f"{disk_bytes(database) / 1e9:.3f} GB)"
    )
    if "throughput" in built:
        say(
            f"  append through the sealer, batches of {SEAL_BATCH:,}: "
            f"{built['throughput']:,.0f} leaves/s (median seal {fmt_s(built['median_seal_s'])})"
        )

    costs = await seal_costs(database, signer, size)
    say(
        "  one seal appended at this size: "
        + ", ".join(f"{b:,} leaves {fmt_s(t)} ({b / t:,.0f} leaves/s)" for b, t in costs.items())
    )

    store = SQLiteStore(database)
    await store.open()
    tiles = await latencies(store, size, args.samples, seed=size)
    await store.close()

    leaves = read_leaves(database, size)
    rows_out = [("tiles (this store)", *tiles)]
    if size <= args.sealer_limit:
        nodes_path = workdir / f"tree-nodes-{size}.db"
        took = build_tree_nodes(nodes_path, leaves)
        nodes_bytes = table_bytes(nodes_path, "tree_nodes")
        say(
            f"  first-release layout: {2 * size - bin(size).count('1'):,} tree_nodes rows, "
            f"{nodes_bytes / 1e9:.3f} GB ({nodes_bytes / size:.1f} bytes per leaf; "
            f"written in {fmt_s(took)})"
        )
        rows_out.append(
            (
                "tree_nodes (first release)",
                *await latencies(TreeNodes(nodes_path), size, args.samples, seed=size),
            )
        )
        nodes_path.unlink()
    samples = args.naive_samples if size <= args.sealer_limit else args.naive_samples_large
    if samples:
        start = time.perf_counter()
        rows_out.append((f"naive recompute (n={samples})", *naive(leaves, samples, seed=size)))
        say(
            f"  naive recompute from all {size:,} leaf hashes: {samples} of each kind "
            f"in {fmt_s(time.perf_counter() - start)}"
        )
    del leaves

    say(f"  proof latency ({args.samples} random proofs in the tree of {size:,}):")
    say(f"    {'':26} {'inclusion median':>17} {'p99':>10} {'consistency median':>19} {'p99':>10}")
    for name, inc, con in rows_out:
        say(
            f"    {name:26} {fmt_s(statistics.median(inc)):>17} {fmt_s(p99(inc)):>10} "
            f"{fmt_s(statistics.median(con)):>19} {fmt_s(p99(con)):>10}"
        )
    database.unlink()
    for extra in workdir.glob(database.name + "-*"):
        extra.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 100_000_000])
    parser.add_argument("--samples", type=int, default=1000, help="proofs timed per kind")
    parser.add_argument("--naive-samples", type=int, default=5, help="naive proofs, small trees")
    parser.add_argument(
        "--naive-samples-large",
        type=int,
        default=1,
        help="naive proofs above --sealer-limit (minutes each at 100M)",
    )
    parser.add_argument(
        "--sealer-limit",
        type=int,
        default=2_000_000,
        help="largest tree built through the sealer; larger ones are synthetic",
    )
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="shotstamp-bench-log-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(
        f"shotstamp bench/log.py: python {platform.python_version()}, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), niceness {os.nice(0)}, "
        f"sqlite {sqlite3.sqlite_version}"
    )
    say(f"  {' '.join(sys.argv)}")
    total = time.perf_counter()
    try:
        for size in args.sizes:
            asyncio.run(bench_size(size, args, workdir))
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"\ntotal {fmt_s(time.perf_counter() - total)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
