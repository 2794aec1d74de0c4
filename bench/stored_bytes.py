"""Bytes per stored registration, by part (issue 21, goal 4), on SQLite and PostgreSQL.

    PYTHONPATH=sdk:service:. python -m bench.stored_bytes [--count 2500] [--postgres]

Every corpus photo as a seller registers it goes through what a fingerprint worker runs
(`thumbnail.fingerprint_and_thumbnail`, 256 px staff thumbnails on) and what the registry
hands the store (`Fingerprint.to_store`); `--count` rows are written by the store's own
`add_registration` (the photos cycled, each row with its own id, digest and seller salt,
97 sellers), then a real `shotstamp-service serve` on that store seals them all. The rows go
in through the store rather than over HTTP because one seller's second upload of a photo (or
of a crop of it) is answered with the first registration, and another seller's is refused:
the corpus holds 839 distinct photos. Then the store is read: the SQLite file (after a WAL
checkpoint) divided by the registrations, the pages each table and index takes (`dbstat`),
each registration's parts (the feature blob split into header, keypoints, descriptors and
stage-2 thumbnail; the desk thumbnail; the other columns); on PostgreSQL (a throwaway
server, tests/kit/pgserver.py) `pg_total_relation_size` of each table per registration.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shotstamp_service.matching.features import _HEADERS
from tests.kit import processes
from tests.kit.corpus import corpus_dir, load_photos, original_bytes

SELLERS = 97


def worker_outputs() -> list[tuple[Any, bytes | None]]:
    from shotstamp_service.matching.fingerprint import DecodeLimits
    from shotstamp_service.matching.thumbnail import fingerprint_and_thumbnail

    root = corpus_dir()
    return [fingerprint_and_thumbnail(original_bytes(root / p.file)[0], DecodeLimits(), 256)
            for p in load_photos()]


async def fill(store: Any, outputs: list[tuple[Any, bytes | None]], count: int) -> None:
    from shotstamp_service.records import NewRegistration, format_time, utc_now

    await store.open()
    try:
        for start in range(0, count, 256):
            batch = []
            for k in range(start, min(count, start + 256)):
                fp, thumb = outputs[k % len(outputs)]
                perceptual, features = fp.to_store()
                batch.append(store.add_registration(NewRegistration(
                    id=f"reg-{k:09d}", seller=f"seller-{k % SELLERS}",
                    sha256=hashlib.sha256(b"%d" % k).hexdigest(), perceptual=perceptual,
                    received_at=format_time(utc_now()), width=fp.width, height=fp.height,
                    features=features, thumbnail=thumb, seller_salt=os.urandom(32))))
            await asyncio.gather(*batch)
    finally:
        await store.close()


def seal(data: Path, env: dict[str, str], count: int) -> None:
    """Start the real service on the store: it seals every pending registration."""
    service = processes.start_service(data, env=env)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status, body = service.get("/v1/checkpoints/latest")
            if status == 200 and body["tree_size"] >= count:
                return
            time.sleep(0.5)
        raise SystemExit(f"not sealed within 300 s: {body}")
    finally:
        service.stop()


def blob_parts(blob: bytes) -> dict[str, int]:
    header = _HEADERS[bytes(blob[:4])]
    n = struct.unpack_from("<H", blob, 8)[0]
    return {"blob header": header.size, "keypoint positions, angles, scales": 6 * n,
            "descriptors": 32 * n, "stage-2 thumbnail": len(blob) - header.size - 38 * n,
            "keypoints": n}


def sqlite_report(path: Path) -> dict[str, object]:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    count = conn.execute("SELECT count(*) FROM registrations").fetchone()[0]
    size = path.stat().st_size
    pages = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    parts: dict[str, list[int]] = {}
    for row in conn.execute(
        "SELECT features, thumbnail, length(id) + length(seller) + length(sha256)"
        " + length(perceptual) + length(received_at) + 16 + coalesce(length(seller_salt), 0)"
        " FROM registrations"
    ):
        for name, value in blob_parts(row[0]).items():
            parts.setdefault(name, []).append(value)
        parts.setdefault("desk thumbnail", []).append(len(row[1] or b""))
        parts.setdefault("other columns (id, seller, sha256, perceptual, time, sizes, salt)",
                         []).append(row[2])
    conn.close()
    return {"registrations": count, "file bytes": size, "bytes per registration": size / count,
            "pages per registration": {k: v / count for k, v in sorted(pages.items())},
            "mean part bytes": {k: statistics.mean(v) for k, v in parts.items()}}


def run_sqlite(outputs: list[tuple[Any, bytes | None]], count: int) -> dict[str, object]:
    from shotstamp_service.store.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory(prefix="stored-bytes-",
                                     dir=os.environ.get("BENCH_TMP")) as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        asyncio.run(fill(SQLiteStore(data / "shotstamp.db"), outputs, count))
        seal(data, {}, count)
        return sqlite_report(data / "shotstamp.db")


def run_postgres(outputs: list[tuple[Any, bytes | None]], count: int) -> dict[str, object]:
    import asyncpg

    from shotstamp_service.config import Config
    from shotstamp_service.log.signer import write_new_key
    from shotstamp_service.store.postgres import PostgresStore
    from tests.kit.pgserver import start_server

    server = start_server()
    try:
        url = server.create_database_sync("bytes")
        with tempfile.TemporaryDirectory(prefix="stored-bytes-pg-") as tmp:
            key_dir = Path(tmp) / "keys"
            write_new_key(key_dir, Config().origin)
            asyncio.run(fill(PostgresStore(url), outputs, count))
            seal(Path(tmp) / "data", {"SHOTSTAMP_DATABASE_URL": url,
                                      "SHOTSTAMP_SIGNING_KEY_DIR": str(key_dir)}, count)

        async def sizes() -> dict[str, object]:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("VACUUM ANALYZE")
                count = await conn.fetchval("SELECT count(*) FROM registrations")
                tables = await conn.fetch(
                    "SELECT relname, pg_total_relation_size(c.oid) AS size FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind = 'r'")
                database = await conn.fetchval("SELECT pg_database_size(current_database())")
                empty = await conn.fetchval("SELECT pg_database_size('template1')")
            finally:
                await conn.close()
            per = {r["relname"]: r["size"] / count for r in tables if r["size"] > 8192}
            return {"registrations": count, "tables per registration": dict(sorted(per.items())),
                    "tables total per registration": sum(per.values()),
                    "database bytes per registration, less an empty database":
                        (database - empty) / count}

        return asyncio.run(sizes())
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2500)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    outputs = worker_outputs()
    result = {"sqlite": run_sqlite(outputs, args.count)}
    print(json.dumps(result, indent=1), flush=True)
    if args.postgres:
        print(json.dumps({"postgres": run_postgres(outputs, args.count)}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
