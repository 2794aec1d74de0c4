"""Bytes per stored registration, by part, through the real service (issue 21, goal 4).

    PYTHONPATH=sdk:service:. python -m bench.stored_bytes [--count 2500] [--postgres]

Uploads `--count` distinct real photos (every corpus photo as a seller registers it, then
80 % crops of each from its left, right, top and bottom edges, JPEG q90, until the count is
reached) to a real `shotstamp-service serve` (one seller, so nothing is refused), waits
until every one is sealed, stops the service and reads the data directory: the SQLite file
(after a WAL checkpoint) divided by the registrations, the pages each table and index takes
(SQLite's `dbstat`), and each registration's stored parts (the feature blob split into its
header, keypoints, descriptors and stage-2 thumbnail; the desk thumbnail; the other columns).
With `--postgres`, the same uploads to a service on a throwaway PostgreSQL server
(tests/kit/pgserver.py), and `pg_total_relation_size` of each table per registration.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from shotstamp_service.matching.features import _HEADERS
from tests.kit import processes
from tests.kit.corpus import corpus_dir, load_photos, original_bytes


def uploads(count: int) -> list[bytes]:
    root = corpus_dir()
    photos = [original_bytes(root / p.file) for p in load_photos()]
    out = [data for data, _ in photos]
    boxes = ((0, 0, 0.8, 1), (0.2, 0, 1, 1), (0, 0, 1, 0.8), (0, 0.2, 1, 1))
    for box in boxes:
        for _, shot in photos:
            if len(out) >= count:
                return out[:count]
            w, h = shot.size
            crop = shot.crop((round(box[0] * w), round(box[1] * h),
                              round(box[2] * w), round(box[3] * h)))
            buffer = io.BytesIO()
            crop.convert("RGB").save(buffer, "JPEG", quality=90)
            out.append(buffer.getvalue())
    return out[:count]


def register_all(service: processes.ServiceProcess, key: str, files: list[bytes]) -> int:
    def one(data: bytes) -> int:
        body, ctype = processes.multipart(data)
        status, _ = processes.http("POST", f"{service.url}/v1/registrations", key=key,
                                   body=body, content_type=ctype, timeout=120)
        return status

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(one, files))
    created = statuses.count(201)
    others = {s: statuses.count(s) for s in set(statuses) if s != 201}
    print(f"uploaded {len(files)}: {created} registered, others {others}", file=sys.stderr)
    return created


def wait_sealed(service: processes.ServiceProcess, key: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, body = processes.http("GET", f"{service.url}/v1/checkpoints/latest", key=key)
        if status == 200 and body["tree_size"] >= count:
            return
        time.sleep(0.5)
    raise SystemExit("registrations were not sealed within 120 s")


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


def run_sqlite(files: list[bytes], env: dict[str, str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="stored-bytes-",
                                     dir=os.environ.get("BENCH_TMP")) as tmp:
        data = Path(tmp) / "data"
        key = _setup_key(data, env)
        service = processes.start_service(data, env=env)
        try:
            created = register_all(service, key, files)
            wait_sealed(service, key, created)
        finally:
            service.stop()
        return sqlite_report(data / "shotstamp.db")


def _setup_key(data: Path, env: dict[str, str]) -> str:
    done = processes.run("shotstamp-service", "--data-dir", str(data), "keys", "create",
                         "--seller", "bench", env={**processes.TEST_ENV, **env})
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return done.stdout.strip()


def run_postgres(files: list[bytes], env: dict[str, str]) -> dict[str, object]:
    import asyncio

    import asyncpg

    from tests.kit.pgserver import start_server

    server = start_server()
    try:
        url = server.create_database_sync("bytes")
        pg_env = {**env, "SHOTSTAMP_DATABASE_URL": url}
        with tempfile.TemporaryDirectory(prefix="stored-bytes-pg-") as tmp:
            data = Path(tmp) / "data"
            key = _setup_key(data, pg_env)
            service = processes.start_service(data, env=pg_env)
            try:
                created = register_all(service, key, files)
                wait_sealed(service, key, created)
            finally:
                service.stop()

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
            finally:
                await conn.close()
            per = {r["relname"]: r["size"] / count for r in tables if r["size"]}
            return {"registrations": count, "tables per registration": dict(sorted(per.items())),
                    "tables total per registration": sum(per.values()),
                    "database bytes per registration": database / count}

        return asyncio.run(sizes())
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2500)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    files = uploads(args.count)
    env = {"SHOTSTAMP_FINGERPRINT_WORKERS": str(args.workers)}
    result = {"sqlite": run_sqlite(files, env)}
    if args.postgres:
        result["postgres"] = run_postgres(files, env)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    Image.MAX_IMAGE_PIXELS = None
    main()
